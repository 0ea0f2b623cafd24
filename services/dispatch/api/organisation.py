"""Routes: the organisation — areas, departments, their history, and operators' changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from services.dispatch.access import REFERENCE_DATA
from services.dispatch.api.common import (
    MAX_OFFSET,
    DepartmentCode,
    OperatorDep,
    ServiceDep,
    query_text,
)
from services.dispatch.models import AreaRow, DepartmentRow
from services.dispatch.organisation import admin, store
from services.dispatch.organisation.chart import DepartmentFlag
from services.dispatch.schemas import (
    AreaPublic,
    DepartmentCreate,
    DepartmentPage,
    DepartmentPublic,
    DepartmentUpdate,
    OrganisationPublic,
)
from shared.geo import Tier

router = APIRouter(tags=["organisation"])


@router.get("/organisation", response_model=OrganisationPublic, openapi_extra=REFERENCE_DATA)
async def get_organisation(service: ServiceDep) -> dict[str, Any]:
    """The loaded org chart's version, revision and counts by tier."""
    return await service.read(store.summary)


@router.get("/areas", response_model=list[AreaPublic], openapi_extra=REFERENCE_DATA)
async def list_areas(
    service: ServiceDep,
    parent: Annotated[str | None, query_text(32, "children of this area")] = None,
    tier: Annotated[Tier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[AreaRow]:
    """Areas of the city (city → district → town → village → grid), filtered."""
    return await service.read(
        lambda s: store.areas(session=s, parent=parent, tier=tier, limit=limit, offset=offset)
    )


@router.get("/departments", response_model=DepartmentPage, openapi_extra=REFERENCE_DATA)
async def list_departments(
    service: ServiceDep,
    tier: Annotated[Tier | None, Query()] = None,
    flag: Annotated[DepartmentFlag | None, Query()] = None,
    active: Annotated[bool | None, Query()] = None,
    within: Annotated[str | None, query_text(32, "jurisdiction equal to this area")] = None,
    q: Annotated[str | None, query_text(200, "code or name contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Departments with their tier, jurisdiction and responsibility list, filtered and paged."""
    return await service.read(
        lambda s: store.departments(
            session=s,
            tier=tier,
            flag=flag,
            active=active,
            within=within,
            q=q,
            limit=limit,
            offset=offset,
        )
    )


@router.get("/departments/{code}", response_model=DepartmentPublic, openapi_extra=REFERENCE_DATA)
async def get_department(code: DepartmentCode, service: ServiceDep) -> DepartmentRow:
    """One department."""
    return await service.read(lambda s: store.department(session=s, code=code))


@router.get("/departments/{code}/history", openapi_extra=REFERENCE_DATA)
async def department_history(code: DepartmentCode, service: ServiceDep) -> list[dict[str, Any]]:
    """The admin changes to one department, oldest first."""
    return await service.read(lambda s: store.department_history(session=s, code=code))


@router.post("/departments", response_model=DepartmentPublic, status_code=status.HTTP_201_CREATED)
async def create_department(body: DepartmentCreate, caller: OperatorDep) -> DepartmentRow:
    """Add a department; 422 when it would break the org chart or the active routing rules."""
    return await caller.write(
        lambda s: admin.create_department(session=s, ctx=caller.ctx, data=body, actor=caller.actor)
    )


@router.patch("/departments/{code}", response_model=DepartmentPublic)
async def update_department(
    code: DepartmentCode, body: DepartmentUpdate, caller: OperatorDep
) -> DepartmentRow:
    """Change a department's names, responsibility list or flags (re-validating the rules)."""
    return await caller.write(
        lambda s: admin.update_department(
            session=s, ctx=caller.ctx, code=code, data=body, actor=caller.actor
        )
    )


@router.post("/departments/{code}/deactivate", response_model=DepartmentPublic)
async def deactivate_department(code: DepartmentCode, caller: OperatorDep) -> DepartmentRow:
    """Take a department out of routing; 409 while it holds open dispatches, 422 when the active
    rules name it."""
    return await caller.write(
        lambda s: admin.set_active(
            session=s, ctx=caller.ctx, code=code, active=False, actor=caller.actor
        )
    )


@router.post("/departments/{code}/reactivate", response_model=DepartmentPublic)
async def reactivate_department(code: DepartmentCode, caller: OperatorDep) -> DepartmentRow:
    """Bring a deactivated department back into routing."""
    return await caller.write(
        lambda s: admin.set_active(
            session=s, ctx=caller.ctx, code=code, active=True, actor=caller.actor
        )
    )
