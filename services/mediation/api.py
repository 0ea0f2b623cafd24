"""Mediation's HTTP routes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlmodel import col

from services.mediation.models import Case, CasePublic
from shared.runtime import RuntimeDep

router = APIRouter(tags=["cases"])


@router.get("/cases", response_model=list[CasePublic])
async def list_cases(runtime: RuntimeDep) -> list[Case]:
    """Every mediation case, newest first."""
    async with runtime.sessions() as session:
        return list(
            (await session.execute(select(Case).order_by(col(Case.opened_at).desc()))).scalars()
        )
