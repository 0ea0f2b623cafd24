"""Mediation sessions: scheduled at a room, a village room or over a video link, then recorded
with attendance, notes and an outcome.

No double-booking: a session claims every quarter hour it spans, for its mediator and for its
room, in ``slot_claims`` whose unique key (resource, slot) the database enforces. Two requests
racing for the same slot on different connections cannot both commit: the second one's insert
fails on the key, and the answer is a 409 naming the session that holds the slot. Sessions are
therefore booked in whole quarter hours.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.context import MediationContext
from services.mediation.lifecycle import Action, IllegalTransition, Status
from services.mediation.models import MediationSession, Mediator, SlotClaim
from services.mediation.parties import case_parties
from services.mediation.schemas import SessionIn, SessionRecord
from services.mediation.service import (
    actor_of,
    load_case,
    mediator_ids,
    transition,
)
from shared.auth import Principal, Role
from shared.errors import Conflict, Invalid, NotFound
from shared.events.mediation import SessionHeld
from shared.workcalendar import to_shanghai

SLOT = timedelta(minutes=15)
MAX_LENGTH = timedelta(hours=8)


def _slots(starts_at: datetime, ends_at: datetime) -> list[datetime]:
    slots, at = [], starts_at
    while at < ends_at:
        slots.append(at)
        at += SLOT
    return slots


def _check_times(body: SessionIn) -> None:
    if body.ends_at <= body.starts_at:
        raise Invalid("a session must end after it starts", field="ends_at")
    if body.ends_at - body.starts_at > MAX_LENGTH:
        raise Invalid("a session lasts at most 8 hours", field="ends_at")
    for name, moment in (("starts_at", body.starts_at), ("ends_at", body.ends_at)):
        if moment.second or moment.microsecond or moment.minute % 15:
            raise Invalid(
                f"{name} must fall on a quarter hour (sessions are booked in 15 minutes)",
                field=name,
            )


async def schedule(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case_id: str,
    body: SessionIn,
) -> MediationSession:
    """Schedule a session of an open case; 409 naming the other session when the mediator or
    the room is already booked, 409 naming the state when the case is not being mediated."""
    case = await load_case(session=session, principal=principal, case_id=case_id)
    _check_times(body)
    mediator_id = body.mediator_id or (
        principal.subject if principal.role is Role.MEDIATOR else None
    )
    if mediator_id is None:
        raise Invalid("name the mediator who holds the session", field="mediator_id")
    await _check_available(ctx, session, mediator_id, body.starts_at, body.ends_at)
    on_case = await mediator_ids(session, case_id)
    if mediator_id not in on_case:
        raise Invalid(f"mediator {mediator_id} is not on case {case_id}", field="mediator_id")
    if body.venue == "video":
        if body.video_link is None:
            raise Invalid("a video session needs its video_link", field="video_link")
    elif body.room_code is None:
        raise Invalid(f"a {body.venue} session needs its room_code", field="room_code")
    parties = {p.party_id for p in await case_parties(session=session, case_id=case_id)}
    unknown = [p for p in body.participants if p not in parties]
    if unknown:
        raise Invalid(f"not parties of case {case_id}: {', '.join(unknown)}", field="participants")
    if Status(case.status) not in (Status.ACCEPTED, Status.IN_MEDIATION):
        raise IllegalTransition(
            Status(case.status),
            Action.START,
            f"cannot schedule a session for a case that is {case.status}",
        )
    row = MediationSession(
        session_id=f"S-{uuid.uuid4().hex[:12].upper()}",
        case_id=case_id,
        mediator_id=mediator_id,
        venue=body.venue,
        room_code=body.room_code if body.venue != "video" else None,
        video_link=body.video_link if body.venue == "video" else None,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        participants=[{"party_id": p, "attended": None} for p in body.participants],
    )
    session.add(row)
    await session.flush()
    await _claim(ctx, session, row)
    await transition(
        session=session, ctx=ctx, case=case, action=Action.START, actor=actor_of(principal)
    )
    return row


_WEEKDAYS = ("", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def fits(availability: list[dict[str, Any]], starts_at: datetime, ends_at: datetime) -> bool:
    """True when [starts_at, ends_at) lies inside one weekly slot (Shanghai wall-clock time);
    a mediator who gave no availability is taken to be available."""
    if not availability:
        return True
    start, end = to_shanghai(starts_at), to_shanghai(ends_at)
    end_text = end.strftime("%H:%M")
    if end.date() != start.date():
        if end.date() - start.date() != timedelta(days=1) or end_text != "00:00":
            return False
        end_text = "24:00"
    begin = start.strftime("%H:%M")
    return any(
        slot["weekday"] == start.isoweekday() and slot["start"] <= begin and end_text <= slot["end"]
        for slot in availability
    )


async def _check_available(
    ctx: MediationContext,
    session: AsyncSession,
    mediator_id: str,
    starts_at: datetime,
    ends_at: datetime,
) -> None:
    mediator = await session.get(Mediator, mediator_id)
    if mediator is None or fits(mediator.availability, starts_at, ends_at):
        return
    ctx.refused("unavailable")
    local = to_shanghai(starts_at)
    offered = ", ".join(
        f"{_WEEKDAYS[s['weekday']]} {s['start']}–{s['end']}" for s in mediator.availability
    )
    raise Conflict(
        f"mediator {mediator_id} is not available {_WEEKDAYS[local.isoweekday()]} "
        f"{local:%H:%M}–{to_shanghai(ends_at):%H:%M} (weekly availability: {offered})"
    )


def _resources(row: MediationSession) -> list[str]:
    resources = [f"mediator:{row.mediator_id}"]
    if row.room_code is not None:
        resources.append(f"room:{row.room_code}")
    return resources


async def _claim(ctx: MediationContext, session: AsyncSession, row: MediationSession) -> None:
    """Claim the session's slots; 409 naming the session holding one of them."""
    slots = _slots(row.starts_at, row.ends_at)
    resources = _resources(row)
    try:
        async with session.begin_nested():
            session.add_all(
                SlotClaim(resource=r, slot_at=s, session_id=row.session_id)
                for r in resources
                for s in slots
            )
            await session.flush()
    except IntegrityError:
        ctx.refused("double_booking")
        holder = (
            await session.execute(
                select(
                    col(SlotClaim.resource),
                    col(SlotClaim.session_id),
                    col(MediationSession.starts_at),
                    col(MediationSession.ends_at),
                )
                .join(
                    MediationSession, col(MediationSession.session_id) == col(SlotClaim.session_id)
                )
                .where(col(SlotClaim.resource).in_(resources), col(SlotClaim.slot_at).in_(slots))
                .order_by(col(SlotClaim.slot_at))
                .limit(1)
            )
        ).first()
        if holder is None:  # the holder was cancelled meanwhile: let the client retry
            raise Conflict("the slot was taken and released meanwhile; try again") from None
        resource, other, starts, ends = holder
        what = resource.replace(":", " ", 1)
        raise Conflict(
            f"{what} is already booked from {starts.isoformat()} to {ends.isoformat()} "
            f"by session {other}"
        ) from None


async def _load_session(
    session: AsyncSession, principal: Principal, session_id: str
) -> MediationSession:
    row = await session.get(MediationSession, session_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no session {session_id}")
    await load_case(session=session, principal=principal, case_id=row.case_id)
    return row


async def record(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    session_id: str,
    body: SessionRecord,
) -> MediationSession:
    """Record what happened at a scheduled session: who attended, notes, the outcome."""
    row = await _load_session(session, principal, session_id)
    if row.status != "scheduled":
        raise Conflict(
            f"session {session_id} is {row.status}; only a scheduled one is recorded",
            current=row.status,
        )
    case = await load_case(session=session, principal=principal, case_id=row.case_id)
    if Status(case.status) not in (Status.ACCEPTED, Status.IN_MEDIATION):
        raise IllegalTransition(
            Status(case.status),
            Action.START,
            f"cannot record a session of a case that is {case.status}",
        )
    invited = {p["party_id"] for p in row.participants}
    strangers = [p for p in body.attended if p not in invited]
    if strangers:
        raise Invalid(
            f"not invited to session {session_id}: {', '.join(strangers)}", field="attended"
        )
    row.participants = [
        {"party_id": p["party_id"], "attended": p["party_id"] in body.attended}
        for p in row.participants
    ]
    row.notes = body.notes
    row.outcome = body.outcome
    row.status = "held"
    await ctx.outbox.add(
        session,
        SessionHeld(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            session_id=row.session_id,
            venue="video"
            if row.venue == "video"
            else "village_room"
            if row.venue == "village_room"
            else "room",
            started_at=row.starts_at,
            ended_at=row.ends_at,
            outcome=body.outcome,
            occurred_at=ctx.now(),
        ),
    )
    return row


async def cancel(
    *, session: AsyncSession, principal: Principal, session_id: str
) -> MediationSession:
    """Cancel a scheduled session and free its slots."""
    row = await _load_session(session, principal, session_id)
    if row.status != "scheduled":
        raise Conflict(
            f"session {session_id} is {row.status}; only a scheduled one is cancelled",
            current=row.status,
        )
    row.status = "cancelled"
    await session.execute(delete(SlotClaim).where(col(SlotClaim.session_id) == session_id))
    return row
