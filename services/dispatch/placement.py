"""Placement: a ticket routed with the rules in force becomes its dispatches — assigned to
departments with their clocks started, or offered to the grab pool — each with its event.

Intake's tickets are placed once per ticket, a fetched batch at a time (``route_tickets``); an
approved return or a failed mediation places the ticket again without the departments or lines
that cannot have it (``reroute``); a transfer, a whistle and a proactive proposal create their
dispatches here too.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.profiles import ClockName, ProfileSet
from services.dispatch.deadlines.rows import start_clocks
from services.dispatch.models import Dispatch, GrabOffer, TicketRecord
from services.dispatch.organisation.chart import Department, OrgChart
from services.dispatch.routing import RoutingDecision, TicketFacts, route_for
from services.dispatch.rules import HandlingLine, HandlingMode, RuleSet
from services.dispatch.staging import Staged, Writer, emit, emit_fields, new_row
from services.dispatch.transitions import SYSTEM, record
from services.dispatch.workflow import Status
from shared.events.base import Event
from shared.events.dispatch import GrabOffered, MediationRequested, TicketAssigned
from shared.events.intake import TicketReceived

log = logging.getLogger(__name__)


def new_dispatch_id(ticket_id: str) -> str:
    """A dispatch id: the ticket id plus a random suffix (unguessable, so a 403 for another
    department's dispatch reveals nothing a caller could enumerate)."""
    return f"D-{ticket_id}-{_suffix()}"


# Dispatch ids' suffixes (``secrets.token_hex(4)`` each), drawn from the OS's random source
# 512 at a time: a batch places hundreds of dispatches, and a read of the source for each was
# ~4 % of placing them. A forked child starts with none (it must not repeat its parent's).
_SUFFIX_BYTES = 4
_suffixes: list[str] = []
os.register_at_fork(after_in_child=_suffixes.clear)


def _suffix() -> str:
    """The next random suffix: ``_SUFFIX_BYTES`` random bytes as lowercase hex."""
    if not _suffixes:
        drawn = secrets.token_hex(_SUFFIX_BYTES * 512)
        width = 2 * _SUFFIX_BYTES
        _suffixes.extend(drawn[at : at + width] for at in range(0, len(drawn), width))
    return _suffixes.pop()


def dispatch_values(
    ticket: TicketRecord,
    *,
    department: str | None,
    line: str,
    profile: str,
    mode: str,
    status: Status,
    now: datetime,
    rule_id: str | None = None,
    rules_version: str | None = None,
    parent: str | None = None,
    supervised: bool = False,
    focused: bool = False,
    whistle_id: str | None = None,
    grab_until: datetime | None = None,
) -> dict[str, Any]:
    """The columns of a new dispatch of a ticket."""
    return dict(
        dispatch_id=new_dispatch_id(ticket.ticket_id),
        ticket_id=ticket.ticket_id,
        department_code=department,
        category_code=ticket.category_code,
        channel=ticket.channel,
        area_code=ticket.area_code,
        title=ticket.title,
        handling_line=line,
        time_limit_profile=profile,
        mode=mode,
        status=status.value,
        rule_id=rule_id,
        rules_version=rules_version,
        parent_dispatch_id=parent,
        whistle_id=whistle_id,
        supervised=supervised,
        focused=focused,
        assigned_at=now,
        grab_until=grab_until,
        updated_at=now,
        deadlines={},
    )


def new_dispatch(ticket: TicketRecord, **values: Any) -> Dispatch:
    """A new dispatch row for a ticket (not yet added to the session); ``dispatch_values``
    names what it takes."""
    return Dispatch(**dispatch_values(ticket, **values))


def assigned_event(
    d: Dispatch, unit: Department, due: dict[ClockName, datetime], *, mode: str
) -> TicketAssigned:
    """The ``TicketAssigned`` of a dispatch that has just reached its department."""
    return TicketAssigned.model_validate(assigned_fields(d, unit, due, mode=mode))


def assigned_fields(
    d: Dispatch, unit: Department, due: dict[ClockName, datetime], *, mode: str
) -> dict[str, Any]:
    """``assigned_event``'s fields, in the model's order (what ``emit_fields`` takes)."""
    return {
        "ticket_id": d.ticket_id,
        "dispatch_id": d.dispatch_id,
        "department_code": unit.code,
        "department_tier": unit.tier.value,
        "area_code": d.area_code,
        "category_code": d.category_code,
        "channel": d.channel,
        "handling_line": d.handling_line,
        "time_limit_profile": d.time_limit_profile,
        "rule_id": d.rule_id,
        "deadlines": {name.value: at for name, at in due.items()},
        "mode": mode,
        "supervised": d.supervised,
        "focused": d.focused,
        "rules_version": d.rules_version,
        "parent_dispatch_id": d.parent_dispatch_id,
    }


def mediation_requested(d: Dispatch, *, by: str, reason: str | None) -> MediationRequested:
    """The ``MediationRequested`` that asks mediation to open a case for a dispatch."""
    return MediationRequested.model_validate(mediation_fields(d, by=by, reason=reason))


def mediation_fields(d: Dispatch, *, by: str, reason: str | None) -> dict[str, Any]:
    """``mediation_requested``'s fields, in the model's order."""
    assert d.department_code is not None
    return {
        "ticket_id": d.ticket_id,
        "dispatch_id": d.dispatch_id,
        "department_code": d.department_code,
        "category_code": d.category_code,
        "area_code": d.area_code,
        "requested_by": by,
        "reason": reason,
    }


def facts_for(ticket: TicketReceived, org: OrgChart, profiles: ProfileSet) -> TicketFacts:
    """What routing looks at, from intake's ticket. An area the city does not know is dropped
    (routing then treats the area as unknown) rather than failing the ticket; the channel's
    profile is the default only if it can time an assigned dispatch (the whistle profile, with
    just a report clock, times summons, not handling)."""
    return TicketFacts.model_validate(facts_values(ticket, org, profiles))


def facts_values(ticket: TicketReceived, org: OrgChart, profiles: ProfileSet) -> dict[str, Any]:
    """``facts_for(...).model_dump(mode="json")`` without the model: the JSON values stored as a
    routed ticket's facts (and routed through ``RoutingMemo.route_values``, which validates
    them when it must route). A batch built and dumped a model of each ticket's whole text."""
    area = ticket.location.grid_code or ticket.location.area_code
    if area is not None and area not in org.tree.by_code:
        log.warning("ticket %s names unknown area %r; routing without it", ticket.ticket_id, area)
        area = None
    profile = profiles.profiles.get(ticket.time_limit_profile)
    usable = profile is not None and ClockName.SIGN_FOR in profile.clocks
    return {
        "ticket_id": ticket.ticket_id,
        "category": ticket.category_code,
        "area_code": area,
        "channel": ticket.channel,
        "enterprise": ticket.is_enterprise,
        "urgency": ticket.urgency,
        "repeat_count": ticket.repeat_count,
        "text": f"{ticket.title}\n{ticket.content}",
        "default_profile": ticket.time_limit_profile if usable else None,
    }


async def _offer(
    session: Writer,
    ctx: DispatchContext,
    ticket: TicketRecord,
    decision: RoutingDecision,
    common: dict[str, Any],
) -> Dispatch:
    """Put a ticket in the grab pool for the decision's departments."""
    now: datetime = common["now"]
    grab_until = now + timedelta(minutes=ctx.settings.grab_window_minutes)
    values = dispatch_values(
        ticket,
        department=None,
        mode="grab",
        status=Status.PENDING_GRAB,
        grab_until=grab_until,
        **common,
    )
    d = new_row(session, Dispatch, **values)
    codes = [ref.code for ref in decision.departments]
    for rank, code in enumerate(codes):
        new_row(session, GrabOffer, dispatch_id=d.dispatch_id, department_code=code, rank=rank)
    record(
        session,
        d,
        "offer",
        SYSTEM,
        before=None,
        after=d.status,
        now=now,
        note=decision.summary,
        data={"departments": codes, "grab_until": grab_until.isoformat()},
    )
    await emit(
        session,
        ctx.outbox,
        GrabOffered(
            ticket_id=d.ticket_id,
            dispatch_id=d.dispatch_id,
            departments=tuple(codes),
            grab_until=grab_until,
            category_code=d.category_code,
            area_code=d.area_code,
            handling_line=d.handling_line,
            rule_id=d.rule_id,
        ),
    )
    return d


async def place(
    session: Writer,
    ctx: DispatchContext,
    *,
    ticket: TicketRecord,
    decision: RoutingDecision,
    org: OrgChart,
    now: datetime,
    mode: str = "assign",
    parent: str | None = None,
) -> list[Dispatch]:
    """Create the dispatches a routing decision calls for, with their clocks and events."""
    common: dict[str, Any] = {
        "line": decision.line.value,
        "profile": decision.profile,
        "now": now,
        "rule_id": decision.rule_id,
        "rules_version": decision.rules_version,
        "parent": parent,
        "focused": decision.focus,
    }
    if decision.handling is HandlingMode.GRAB and not decision.supervised:
        return [await _offer(session, ctx, ticket, decision, common)]
    created: list[Dispatch] = []
    events: list[tuple[type[Event], dict[str, Any]]] = []
    for ref in decision.departments:
        unit = org.department(ref.code)
        values = dispatch_values(
            ticket,
            department=unit.code,
            mode=mode,
            status=Status.ASSIGNED,
            supervised=decision.supervised,
            **common,
        )
        d = new_row(session, Dispatch, **values)
        due = start_clocks(session, ctx, d, now)
        record(
            session,
            d,
            "assign",
            SYSTEM,
            before=None,
            after=d.status,
            now=now,
            note=decision.summary,
            data={"rule_id": decision.rule_id, "mode": mode},
        )
        events.append((TicketAssigned, assigned_fields(d, unit, due, mode=mode)))
        if d.handling_line == HandlingLine.MEDIATION:
            fields = mediation_fields(d, by="routing", reason=decision.summary)
            events.append((MediationRequested, fields))
        created.append(d)
    await emit_fields(session, ctx.outbox, *events)
    return created


async def route_ticket(
    *, session: AsyncSession, ctx: DispatchContext, ticket: TicketReceived
) -> list[Dispatch]:
    """Route a received ticket with the active rules and assign it (once per ticket)."""
    return await route_tickets(session=session, ctx=ctx, tickets=[ticket])


async def route_tickets(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    tickets: Sequence[TicketReceived],
    applied: list[str] | None = None,
) -> list[Dispatch]:
    """Route received tickets with the active rules and assign them, each once: one look-up
    of the tickets already routed, the org chart and rules read once, routing and clocks in
    memory, the rows staged and written with one insert per table, the events with one.
    ``applied`` gets the event id of every ticket routed now (not those refused).

    On PostgreSQL the read and the write go on the driver: unless the session's transaction
    was opened before (or is, by a new organisation or rule set read through the session),
    each commits alone — the write is one statement, or copies in a transaction of their own
    — and the consumer's commit sends nothing. A ticket is still placed once: the read
    refuses one routed before, the tickets' key one routed by another transaction meanwhile
    (that write fails whole, and its fetch is redone)."""
    ids = list({t.ticket_id for t in tickets})
    if not ids:
        return []
    # The tickets already routed, read with the revisions: one statement a fetch.
    org, active, routed = await ctx.org.current_and_routed(session, ids)
    now = ctx.now()
    memo = ctx.org.memo(org, active.rules)
    created: list[Dispatch] = []
    staged = Staged()
    for ticket in tickets:
        if ticket.ticket_id in routed:
            continue  # routed already (a ticket is placed once, whatever its event id)
        routed.add(ticket.ticket_id)
        if applied is not None:
            applied.append(str(ticket.event_id))
        facts = facts_values(ticket, org, ctx.profiles)
        decision = memo.route_values(facts, with_id=False)  # placing reads no ticket id
        stored = new_row(
            staged,
            TicketRecord,
            ticket_id=ticket.ticket_id,
            channel=ticket.channel,
            category_code=ticket.category_code,
            area_code=facts["area_code"],
            title=ticket.title[:200],
            facts=facts,
            excluded=[],
            received_at=ticket.received_at,
            routed_at=now,
        )
        created += await place(staged, ctx, ticket=stored, decision=decision, org=org, now=now)
    await staged.write(session, ctx.outbox)
    return created


async def reroute(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    ticket: TicketRecord,
    org: OrgChart,
    now: datetime,
    parent: str,
    rules: RuleSet | None = None,
) -> list[Dispatch]:
    """Place a ticket again on the facts it was first routed on, without the departments that
    may not get it again (``ticket.excluded``), with the active rules or the given ones
    (proposed work stays proactive work)."""
    if rules is None:
        rules = (await ctx.org.rules(session)).rules
    facts = TicketFacts.model_validate(ticket.facts)
    decision = route_for(facts, rules, org, exclude=ticket.excluded, explain=False)
    return await place(
        session,
        ctx,
        ticket=ticket,
        decision=decision,
        org=org,
        now=now,
        mode="reroute",
        parent=parent,
    )


def excluding(ticket: TicketRecord, codes: Collection[str]) -> None:
    """Never place the ticket with these departments again."""
    ticket.excluded = sorted({*ticket.excluded, *codes})
