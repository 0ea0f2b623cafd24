"""Mediation's domain operations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.context import MediationContext
from services.mediation.models import Case
from shared.events.dispatch import MediationRequested, TicketAssigned
from shared.events.mediation import CaseOpened


async def open_case_for_dispatch(
    *, session: AsyncSession, ctx: MediationContext, event: TicketAssigned
) -> Case | None:
    """Open a case when dispatch sends a ticket down the mediation line (once per ticket)."""
    if event.handling_line != "mediation":
        return None
    return await _open_case(
        session=session, ctx=ctx, ticket_id=event.ticket_id, category_code=event.category_code
    )


async def open_case_for_request(
    *, session: AsyncSession, ctx: MediationContext, event: MediationRequested
) -> Case:
    """Open a case when dispatch asks for mediation (routing or the handling department)."""
    return await _open_case(
        session=session, ctx=ctx, ticket_id=event.ticket_id, category_code=event.category_code
    )


async def _open_case(
    *, session: AsyncSession, ctx: MediationContext, ticket_id: str, category_code: str | None
) -> Case:
    """The ticket's case, opened (with ``CaseOpened``) if it has none yet: one case per ticket."""
    existing = (
        (await session.execute(select(Case).where(col(Case.ticket_id) == ticket_id)))
        .scalars()
        .first()
    )
    if existing is not None:
        return existing
    case = Case(
        case_id=f"M-{ticket_id}",
        ticket_id=ticket_id,
        category_code=category_code,
        opened_at=ctx.now(),
    )
    session.add(case)
    await session.flush()
    await ctx.outbox.add(
        session,
        CaseOpened(case_id=case.case_id, ticket_id=ticket_id, category_code=category_code),
    )
    return case
