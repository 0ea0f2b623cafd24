"""Dispatch's HTTP routes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select

from services.dispatch.models import Department, DepartmentPublic, Dispatch, DispatchPublic
from shared.runtime import RuntimeDep

router = APIRouter()


@router.get("/departments", response_model=list[DepartmentPublic], tags=["organisation"])
async def list_departments(runtime: RuntimeDep) -> list[Department]:
    """Every department with its tier, jurisdiction and responsibility list."""
    async with runtime.sessions() as session:
        return list((await session.execute(select(Department).order_by(Department.code))).scalars())


@router.get("/tickets/{ticket_id}/dispatches", response_model=list[DispatchPublic], tags=["dispatches"])
async def ticket_dispatches(ticket_id: str, runtime: RuntimeDep) -> list[Dispatch]:
    """The dispatches of one ticket; 404 when dispatch has not seen the ticket."""
    async with runtime.sessions() as session:
        rows = list(
            (await session.execute(select(Dispatch).where(Dispatch.ticket_id == ticket_id))).scalars()
        )
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dispatch for ticket {ticket_id!r}")
    return rows
