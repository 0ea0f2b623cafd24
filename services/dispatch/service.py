"""Dispatch's domain operations: route a received ticket to the department that owns it."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.models import Department, Dispatch
from services.dispatch.seed import SUPERVISED_POOL
from shared.events.base import utcnow
from shared.events.dispatch import TicketAssigned
from shared.events.intake import TicketReceived
from shared.outbox import Outbox

_TIER_ORDER = {"grid": 0, "village": 1, "town": 2, "district": 3, "city": 4}


def _responsible(department: Department, category_code: str) -> bool:
    return any(category_code.startswith(code) for code in department.responsibilities)


async def choose_department(*, session: AsyncSession, category_code: str) -> Department:
    """The lowest-tier active department responsible for the category, else the supervised pool."""
    departments = (await session.execute(select(Department).where(Department.active))).scalars().all()
    capable = [d for d in departments if _responsible(d, category_code)]
    if capable:
        return min(capable, key=lambda d: (_TIER_ORDER.get(d.tier, 9), d.code))
    pool = next((d for d in departments if d.code == SUPERVISED_POOL), None)
    if pool is None:
        raise LookupError("no department is responsible and the supervised pool is missing")
    return pool


async def dispatch_ticket(*, session: AsyncSession, outbox: Outbox, ticket: TicketReceived) -> Dispatch:
    """Assign a received ticket and record ``TicketAssigned`` in the same transaction."""
    existing = (
        await session.execute(select(Dispatch).where(Dispatch.ticket_id == ticket.ticket_id))
    ).scalars().first()
    if existing is not None:
        return existing
    department = await choose_department(session=session, category_code=ticket.category_code)
    line = "supervised_pool" if department.code == SUPERVISED_POOL else "normal"
    dispatch = Dispatch(
        dispatch_id=f"D-{ticket.ticket_id}-{uuid.uuid4().hex[:6]}",
        ticket_id=ticket.ticket_id,
        department_code=department.code,
        category_code=ticket.category_code,
        channel=ticket.channel,
        handling_line=line,
        time_limit_profile=ticket.time_limit_profile,
        assigned_at=utcnow(),
    )
    session.add(dispatch)
    await session.flush()
    await outbox.add(
        session,
        TicketAssigned(
            ticket_id=ticket.ticket_id,
            dispatch_id=dispatch.dispatch_id,
            department_code=department.code,
            department_tier=department.tier,
            area_code=department.area_code,
            category_code=ticket.category_code,
            channel=ticket.channel,
            handling_line=line,
            time_limit_profile=ticket.time_limit_profile,
        ),
    )
    return dispatch
