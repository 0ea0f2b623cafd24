"""Mediation's read side: the SELECTs behind the routes, on the readers' engine."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.models import Case


async def list_cases(*, session: AsyncSession, limit: int, offset: int) -> list[Case]:
    """Cases, newest first, a page at a time."""
    query = (
        select(Case)
        .order_by(col(Case.opened_at).desc(), col(Case.case_id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list((await session.execute(query)).scalars())
