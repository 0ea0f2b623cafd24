"""The mediator pool (矛盾纠纷人才库): who mediates what, where and when; conflicts of interest;
and the ranked suggestions a centre assigns from.

A mediator has a conflict of interest in a case when they declared a relation to one of its
parties, or when one of its parties stands on the other side (applicant against respondent) in
another open case the mediator handles: they would be mediating for and against the same person.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.lifecycle import OPEN
from services.mediation.models import Case, CaseMediator, Mediator, MediatorRelation, Party
from services.mediation.schemas import MediatorIn, RelationIn, Suggestion, WeeklySlot
from shared.errors import Conflict, Invalid, NotFound
from shared.pii import normalize_id_number, normalize_phone

_OPEN = [s.value for s in OPEN]
_OTHER_SIDE = {"applicant": "respondent", "respondent": "applicant"}


def identity_key(*, kind: str, name: str, phone: str | None, id_number: str | None) -> str:
    """What matches the same party across cases: an organisation's name; a person's phone, else
    ID number, else name. A digest, so the key column holds no contact data of its own."""
    digits = normalize_phone(phone)
    ident = normalize_id_number(id_number)
    if kind == "organisation":
        basis = f"name:{kind}:{''.join(name.split()).casefold()}"
    elif digits and len(digits) >= 7:
        basis = f"phone:{digits}"
    elif ident and len(ident) == 18:
        basis = f"id:{ident}"
    else:
        basis = f"name:{kind}:{''.join(name.split()).casefold()}"
    return hashlib.sha256(basis.encode()).hexdigest()


async def get_mediator(*, session: AsyncSession, mediator_id: str) -> Mediator | None:
    """One mediator of the pool, or None."""
    return await session.get(Mediator, mediator_id)


def _checked_availability(slots: Sequence[WeeklySlot]) -> list[dict[str, object]]:
    for index, slot in enumerate(slots):
        if slot.end <= slot.start:
            raise Invalid(
                f"availability[{index}]: ends at {slot.end}, not after its start {slot.start}",
                field=f"availability.{index}.end",
            )
    return [slot.model_dump() for slot in slots]


async def add_mediator(*, session: AsyncSession, body: MediatorIn) -> Mediator:
    """Add a mediator to the pool; 409 when the id is taken."""
    if await session.get(Mediator, body.mediator_id) is not None:
        raise Conflict(f"mediator {body.mediator_id} is already in the pool")
    mediator = Mediator(
        mediator_id=body.mediator_id,
        name=body.name,
        kind=body.kind,
        level=body.level,
        specialities=list(dict.fromkeys(body.specialities)),
        centres=list(dict.fromkeys(body.centres)),
        availability=_checked_availability(body.availability),
        max_open_cases=body.max_open_cases,
    )
    session.add(mediator)
    await session.flush()
    return mediator


async def set_availability(
    *, session: AsyncSession, mediator_id: str, slots: Sequence[WeeklySlot]
) -> Mediator:
    """Replace a mediator's weekly availability."""
    mediator = await session.get(Mediator, mediator_id, with_for_update=True)
    if mediator is None:
        raise NotFound(f"no mediator {mediator_id}")
    mediator.availability = _checked_availability(slots)
    return mediator


async def declare_relation(
    *, session: AsyncSession, mediator_id: str, body: RelationIn, now: datetime
) -> MediatorRelation:
    """Record a relation the mediator declared (a relative, an employer, a client …)."""
    if await session.get(Mediator, mediator_id) is None:
        raise NotFound(f"no mediator {mediator_id}")
    row = MediatorRelation(
        mediator_id=mediator_id,
        identity_key=identity_key(
            kind=body.kind, name=body.name, phone=body.phone, id_number=body.id_number
        ),
        relation=body.relation,
        declared_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def conflict_of_interest(
    *, session: AsyncSession, mediator_id: str, case_id: str, parties: Sequence[Party]
) -> str | None:
    """What conflicts the mediator out of the case with these parties, or None."""
    if not parties:
        return None
    keys = {p.identity_key: p for p in parties}
    declared = (
        (
            await session.execute(
                select(MediatorRelation).where(
                    col(MediatorRelation.mediator_id) == mediator_id,
                    col(MediatorRelation.identity_key).in_(keys),
                )
            )
        )
        .scalars()
        .first()
    )
    if declared is not None:
        party = keys[declared.identity_key]
        return (
            f"conflict of interest: mediator {mediator_id} declared a relation "
            f"({declared.relation}) to {party.role} {party.name_masked}"
        )
    elsewhere = await session.execute(
        select(col(Party.identity_key), col(Party.role), col(Party.case_id))
        .join(Case, col(Case.case_id) == col(Party.case_id))
        .join(CaseMediator, col(CaseMediator.case_id) == col(Party.case_id))
        .where(
            col(CaseMediator.mediator_id) == mediator_id,
            col(Party.identity_key).in_(keys),
            col(Party.case_id) != case_id,
            col(Case.status).in_(_OPEN),
        )
        .order_by(col(Party.case_id))
    )
    for key, role, other_case in elsewhere:
        party = keys[key]
        if _OTHER_SIDE.get(party.role) == role:
            return (
                f"conflict of interest: {party.role} {party.name_masked} is the {role} in "
                f"case {other_case}, which mediator {mediator_id} handles"
            )
    return None


async def open_loads(*, session: AsyncSession) -> dict[str, int]:
    """Open cases per mediator."""
    rows = await session.execute(
        select(col(CaseMediator.mediator_id), func.count())
        .join(Case, col(Case.case_id) == col(CaseMediator.case_id))
        .where(col(Case.status).in_(_OPEN))
        .group_by(col(CaseMediator.mediator_id))
    )
    return {mediator_id: count for mediator_id, count in rows}


async def suggestions(*, session: AsyncSession, case: Case, limit: int) -> list[Suggestion]:
    """Active mediators ranked for the case: speciality match first, then the case's level,
    then the lightest load; a mediator with a conflict of interest comes last, naming it."""
    mediators = (
        (await session.execute(select(Mediator).where(col(Mediator.active).is_(True))))
        .scalars()
        .all()
    )
    loads = await open_loads(session=session)
    on_case = set(
        (
            await session.execute(
                select(col(CaseMediator.mediator_id)).where(
                    col(CaseMediator.case_id) == case.case_id
                )
            )
        ).scalars()
    )
    parties = list(
        (await session.execute(select(Party).where(col(Party.case_id) == case.case_id))).scalars()
    )
    ranked: list[Suggestion] = []
    for m in mediators:
        if m.mediator_id in on_case:
            continue
        speciality = case.dispute_type in m.specialities
        level = m.level == case.level
        load = loads.get(m.mediator_id, 0)
        score = 4 * speciality + 2 * level + (load < m.max_open_cases)
        conflict = await conflict_of_interest(
            session=session, mediator_id=m.mediator_id, case_id=case.case_id, parties=parties
        )
        ranked.append(
            Suggestion(
                mediator_id=m.mediator_id,
                name=m.name,
                kind=m.kind,
                level=m.level,
                speciality_match=speciality,
                level_match=level,
                open_cases=load,
                score=0 if conflict else score,
                conflict=conflict,
            )
        )
    ranked.sort(key=lambda s: (s.conflict is not None, -s.score, s.open_cases, s.mediator_id))
    return ranked[:limit]
