"""Dispatch's HTTP routes: thin — validate, call ``service``/``queries``/``organisation`` in one
transaction, wake the relay, map errors (``app.py`` registers the error handlers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch import organisation, queries, service
from services.dispatch.context import DispatchContext
from services.dispatch.models import AreaRow, Department, DepartmentChange, Dispatch
from services.dispatch.orgchart import DepartmentFlag
from services.dispatch.routing import (
    HandlingLine,
    RoutingDecision,
    TicketFacts,
    load_rules,
    route,
)
from services.dispatch.schemas import (
    AreaPublic,
    CompleteBody,
    ContactBody,
    DepartmentCreate,
    DepartmentPage,
    DepartmentPublic,
    DepartmentUpdate,
    DispatchDetail,
    DispatchPublic,
    DryRunRequest,
    EscalationPublic,
    ExtensionBody,
    ExtensionPublic,
    InboxPage,
    NoteBody,
    OrganisationPublic,
    ReasonBody,
    RequiredNoteBody,
    RulesPublic,
    TransferBody,
    WhistleBoard,
    WhistleBody,
)
from services.dispatch.workflow import Status
from shared.auth import CurrentPrincipal, Principal, require_roles
from shared.errors import Invalid, NotFound
from shared.geo import Tier
from shared.runtime import RuntimeDep, context_of

router = APIRouter()

# Offsets beyond any real listing; larger ones would overflow the databases' integer parameters.
MAX_OFFSET = 1_000_000
T = TypeVar("T")


ContextDep = Annotated[DispatchContext, Depends(context_of(DispatchContext))]
Operator = Annotated[Principal, Depends(require_roles())]

# Identifiers and search words from the path or the query string reach SQL: bounded by the
# columns they are compared with and free of control characters (PostgreSQL refuses a NUL in a
# text parameter), so a value that cannot name anything is a 422 naming the parameter.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
DispatchId = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]
TicketId = Annotated[str, Path(max_length=32, pattern=_PRINTABLE)]
WhistleId = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]
DepartmentCode = Annotated[str, Path(max_length=64, pattern=_PRINTABLE)]
# How a dispatch came to its department (``dispatches.mode``).
Mode = Literal["assign", "grab", "supervised", "reroute", "transfer", "whistle"]


def _query_text(max_length: int, description: str | None = None) -> Any:
    return Query(max_length=max_length, pattern=_PRINTABLE, description=description)


async def _write(runtime: Any, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, then wake the relay for the events it wrote."""
    async with runtime.sessions() as session, session.begin():
        result = await work(session)
    runtime.notify()
    return result


async def _read(runtime: Any, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with runtime.sessions() as session:
        return await work(session)


def _actor(principal: Principal) -> str:
    dept = f"@{principal.department_code}" if principal.department_code else ""
    return f"{principal.role.value}:{principal.subject}{dept}"


# --------------------------------------------------------------------------------------------
# Organisation


@router.get("/organisation", response_model=OrganisationPublic, tags=["organisation"])
async def get_organisation(runtime: RuntimeDep) -> dict[str, Any]:
    """The loaded org chart's version, revision and counts by tier."""
    return await _read(runtime, organisation.summary)


@router.get("/areas", response_model=list[AreaPublic], tags=["organisation"])
async def list_areas(
    runtime: RuntimeDep,
    parent: Annotated[str | None, _query_text(32, "children of this area")] = None,
    tier: Annotated[Tier | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[AreaRow]:
    """Areas of the city (city → district → town → village → grid), filtered."""
    A: Any = AreaRow
    query = select(AreaRow)
    if parent is not None:
        query = query.where(A.parent_code == parent)
    if tier is not None:
        query = query.where(A.tier == tier.value)

    async def work(session: AsyncSession) -> list[AreaRow]:
        rows = await session.execute(query.order_by(A.code).limit(limit).offset(offset))
        return list(rows.scalars())

    return await _read(runtime, work)


@router.get("/departments", response_model=DepartmentPage, tags=["organisation"])
async def list_departments(
    runtime: RuntimeDep,
    tier: Annotated[Tier | None, Query()] = None,
    flag: Annotated[DepartmentFlag | None, Query()] = None,
    active: Annotated[bool | None, Query()] = None,
    within: Annotated[str | None, _query_text(32, "jurisdiction equal to this area")] = None,
    q: Annotated[str | None, _query_text(200, "code or name contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    """Departments with their tier, jurisdiction and responsibility list, filtered and paged."""
    M: Any = Department
    query = select(Department)
    if tier is not None:
        query = query.where(M.tier == tier.value)
    if active is not None:
        query = query.where(M.active.is_(active))
    if within is not None:
        query = query.where(M.area_code == within)
    if q:  # a literal substring: "%" and "_" in the search are characters, not wildcards
        query = query.where(
            or_(
                M.code.contains(q, autoescape=True),
                M.name_zh.contains(q, autoescape=True),
                M.name_en.contains(q, autoescape=True),
            )
        )

    async def work(session: AsyncSession) -> dict[str, Any]:
        rows = list((await session.execute(query.order_by(M.code))).scalars())
        if flag is not None:  # JSON membership differs per dialect: filter here
            rows = [r for r in rows if flag.value in r.flags]
        return {
            "items": rows[offset : offset + limit],
            "total": len(rows),
            "limit": limit,
            "offset": offset,
        }

    return await _read(runtime, work)


@router.get("/departments/{code}", response_model=DepartmentPublic, tags=["organisation"])
async def get_department(code: DepartmentCode, runtime: RuntimeDep) -> Department:
    """One department."""

    async def work(session: AsyncSession) -> Department:
        row = await session.get(Department, code)
        if row is None:
            raise NotFound(f"no department {code!r}")
        return row

    return await _read(runtime, work)


@router.get("/departments/{code}/history", tags=["organisation"])
async def department_history(code: DepartmentCode, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """The admin changes to one department, oldest first."""
    M: Any = DepartmentChange

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        rows = await session.execute(select(DepartmentChange).where(M.code == code).order_by(M.id))
        return [r.model_dump(mode="json") for r in rows.scalars()]

    return await _read(runtime, work)


@router.post(
    "/departments",
    response_model=DepartmentPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["organisation"],
)
async def create_department(
    body: DepartmentCreate, runtime: RuntimeDep, ctx: ContextDep, principal: Operator
) -> Department:
    """Add a department; 422 when it would break the org chart or the active routing rules."""
    return await _write(
        runtime,
        lambda s: organisation.create_department(
            session=s, ctx=ctx, data=body, actor=_actor(principal)
        ),
    )


@router.patch("/departments/{code}", response_model=DepartmentPublic, tags=["organisation"])
async def update_department(
    code: DepartmentCode,
    body: DepartmentUpdate,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: Operator,
) -> Department:
    """Change a department's names, responsibility list or flags (re-validating the rules)."""
    return await _write(
        runtime,
        lambda s: organisation.update_department(
            session=s, ctx=ctx, code=code, data=body, actor=_actor(principal)
        ),
    )


@router.post(
    "/departments/{code}/deactivate", response_model=DepartmentPublic, tags=["organisation"]
)
async def deactivate_department(
    code: DepartmentCode, runtime: RuntimeDep, ctx: ContextDep, principal: Operator
) -> Department:
    """Take a department out of routing; 409 while it holds open dispatches, 422 when the active
    rules name it."""
    return await _write(
        runtime,
        lambda s: organisation.set_active(
            session=s, ctx=ctx, code=code, active=False, actor=_actor(principal)
        ),
    )


@router.post(
    "/departments/{code}/reactivate", response_model=DepartmentPublic, tags=["organisation"]
)
async def reactivate_department(
    code: DepartmentCode, runtime: RuntimeDep, ctx: ContextDep, principal: Operator
) -> Department:
    """Bring a deactivated department back into routing."""
    return await _write(
        runtime,
        lambda s: organisation.set_active(
            session=s, ctx=ctx, code=code, active=True, actor=_actor(principal)
        ),
    )


# --------------------------------------------------------------------------------------------
# Routing


@router.get("/routing/rules", response_model=RulesPublic, tags=["routing"])
async def get_rules(
    runtime: RuntimeDep,
    ctx: ContextDep,
    text: Annotated[bool, Query(description="include the YAML source")] = False,
) -> RulesPublic:
    """The active routing rules: version, digest, who activated them and when, in order."""
    active = await _read(runtime, ctx.active_rules)
    return RulesPublic(
        rule_set_id=active.id,
        version=active.rules.version,
        digest=active.rules.digest,
        activated_at=active.activated_at,
        activated_by=active.activated_by,
        rules=[r.model_dump(mode="json") for r in active.rules.rules],
        text=active.text if text else None,
    )


@router.put("/routing/rules", response_model=RulesPublic, tags=["routing"])
async def put_rules(
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: Operator,
    response: Response,
    body: Annotated[
        str,
        Body(
            media_type="application/yaml",
            description="the whole rules file (YAML); refused as a whole (422) with every reason",
        ),
    ],
) -> RulesPublic:
    """Activate a new rules file (201), or confirm the active one (200, same content)."""
    row, created = await _write(
        runtime,
        lambda s: organisation.activate_rules(
            session=s, ctx=ctx, text=body, actor=_actor(principal)
        ),
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    rules = load_rules(row.text, org=await _read(runtime, ctx.organisation), profiles=ctx.profiles)
    assert row.id is not None
    return RulesPublic(
        rule_set_id=row.id,
        version=row.version,
        digest=row.digest,
        activated_at=row.activated_at,
        activated_by=row.activated_by,
        rules=[r.model_dump(mode="json") for r in rules.rules],
    )


@router.post("/routing/dry-run", response_model=RoutingDecision, tags=["routing"])
async def dry_run(body: DryRunRequest, runtime: RuntimeDep, ctx: ContextDep) -> RoutingDecision:
    """Which rule fires for a ticket and why — every rule tried, each condition checked — with
    the active rules or a candidate rules file; nothing is stored."""

    async def work(session: AsyncSession) -> RoutingDecision:
        org = await ctx.organisation(session)
        if body.rules_text is not None:
            rules = load_rules(body.rules_text, org=org, profiles=ctx.profiles)
        else:
            rules = (await ctx.active_rules(session)).rules
        facts = TicketFacts.model_validate(body.model_dump(exclude={"exclude", "rules_text"}))
        try:
            return route(facts, rules, org, exclude=body.exclude)
        except KeyError as exc:  # an unknown category, area or profile: name it
            message = str(exc) if type(exc) is not KeyError else str(exc.args[0])
            raise Invalid(message) from None

    return await _read(runtime, work)


@router.get("/profiles", tags=["routing"])
async def list_profiles(ctx: ContextDep) -> list[dict[str, Any]]:
    """The time-limit profiles and their clocks."""
    return [
        {
            "code": p.code,
            "name_zh": p.name_zh,
            "name_en": p.name_en,
            "description": p.description,
            "clocks": {
                name.value: {
                    "duration": str(spec.duration),
                    "office_hours": spec.office_hours.name,
                    "due": spec.due.value,
                }
                for name, spec in p.clocks.items()
            },
        }
        for p in ctx.profiles.profiles.values()
    ]


@router.get("/calendar", tags=["routing"])
async def get_calendar(ctx: ContextDep) -> dict[str, Any]:
    """The working calendar: official data years, operators' overrides, where the fallback
    starts."""
    return ctx.calendar.describe()


# --------------------------------------------------------------------------------------------
# Dispatches: reads


@router.get("/inbox", response_model=InboxPage, tags=["dispatches"])
async def get_inbox(
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    department: Annotated[str | None, _query_text(64)] = None,
    status_: Annotated[list[Status] | None, Query(alias="status")] = None,
    overdue: Annotated[bool | None, Query(description="a running clock past its deadline")] = None,
    line: Annotated[HandlingLine | None, Query()] = None,
    mode: Annotated[Mode | None, Query()] = None,
    ticket_id: Annotated[str | None, _query_text(32)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> InboxPage:
    """A department's dispatches, most urgent first; filter by status (repeatable), overdue,
    line, mode and ticket; paginate with limit/offset."""
    return await _read(
        runtime,
        lambda s: queries.inbox(
            session=s,
            ctx=ctx,
            principal=principal,
            department=department,
            statuses=[x.value for x in status_ or ()],
            overdue=overdue,
            line=line.value if line is not None else None,
            mode=mode,
            ticket_id=ticket_id,
            limit=limit,
            offset=offset,
        ),
    )


@router.get("/grab-pool", response_model=list[DispatchPublic], tags=["dispatches"])
async def get_grab_pool(
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    department: Annotated[str | None, _query_text(64)] = None,
) -> list[Dispatch]:
    """Pooled tickets the department may grab (抢着办), soonest-expiring first."""
    return await _read(
        runtime,
        lambda s: queries.grab_pool(session=s, ctx=ctx, principal=principal, department=department),
    )


@router.get("/dispatches/{dispatch_id}", response_model=DispatchDetail, tags=["dispatches"])
async def get_dispatch(
    dispatch_id: DispatchId, runtime: RuntimeDep, ctx: ContextDep, principal: CurrentPrincipal
) -> DispatchDetail:
    """One dispatch with its clocks, allowed actions and audit trail; 403 if it is another
    department's, 404 if there is no such dispatch."""
    return await _read(
        runtime,
        lambda s: queries.detail(session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal),
    )


@router.get(
    "/tickets/{ticket_id}/dispatches", response_model=list[DispatchPublic], tags=["dispatches"]
)
async def ticket_dispatches(
    ticket_id: TicketId, runtime: RuntimeDep, ctx: ContextDep, principal: CurrentPrincipal
) -> list[Dispatch]:
    """The dispatches of one ticket the caller may read; 404 when dispatch has not seen it."""
    return await _read(
        runtime,
        lambda s: queries.ticket_dispatches(
            session=s, ctx=ctx, ticket_id=ticket_id, principal=principal
        ),
    )


@router.get("/escalations", response_model=list[EscalationPublic], tags=["dispatches"])
async def list_escalations(
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    target: Annotated[str | None, _query_text(64, "escalated to this centre")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Any]:
    """Escalations of missed clocks, newest first."""
    return await _read(
        runtime,
        lambda s: queries.escalations(
            session=s, ctx=ctx, principal=principal, target=target, limit=limit, offset=offset
        ),
    )


# --------------------------------------------------------------------------------------------
# Dispatches: the workflow


class ActionResult(BaseModel):
    """The dispatch acted on, any dispatches the action created, and any extension request."""

    dispatch: DispatchPublic
    created: list[DispatchPublic] = []
    extension: ExtensionPublic | None = None


def _result(
    d: Dispatch, created: list[Dispatch] | None = None, extension: Any = None
) -> ActionResult:
    return ActionResult(
        dispatch=DispatchPublic.model_validate(d),
        created=[DispatchPublic.model_validate(c) for c in created or ()],
        extension=ExtensionPublic.model_validate(extension) if extension is not None else None,
    )


_WORKFLOW: dict[str, Any] = {"response_model": ActionResult, "tags": ["workflow"]}


@router.post("/dispatches/{dispatch_id}/sign-for", **_WORKFLOW)
async def sign_for(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """签收: the department acknowledges its dispatch."""
    d = await _write(
        runtime,
        lambda s: service.sign_for(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            note=body.note if body else None,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/grab", **_WORKFLOW)
async def grab(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """抢着办: an eligible department grabs a pooled ticket (the first one wins)."""
    d = await _write(
        runtime,
        lambda s: service.grab(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            note=body.note if body else None,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/return", **_WORKFLOW)
async def request_return(
    dispatch_id: DispatchId,
    body: ReasonBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """退单: ask the centre to take the dispatch back, with the reason."""
    d = await _write(
        runtime,
        lambda s: service.request_return(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, reason=body.reason
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/return/approve", **_WORKFLOW)
async def approve_return(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """Centre: approve a return; the ticket is re-routed without that department."""
    d, created = await _write(
        runtime,
        lambda s: service.decide_return(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            approve=True,
            note=body.note if body else None,
        ),
    )
    return _result(d, created)


@router.post("/dispatches/{dispatch_id}/return/deny", **_WORKFLOW)
async def deny_return(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """Centre: deny a return; the department carries on where it was."""
    d, _ = await _write(
        runtime,
        lambda s: service.decide_return(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            approve=False,
            note=body.note if body else None,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/transfer", **_WORKFLOW)
async def transfer(
    dispatch_id: DispatchId,
    body: TransferBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """转办: hand the dispatch to another department; a new dispatch takes over."""
    d, new = await _write(
        runtime,
        lambda s: service.transfer(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            to_department=body.to_department,
            reason=body.reason,
        ),
    )
    return _result(d, [new])


@router.post("/dispatches/{dispatch_id}/extension", **_WORKFLOW)
async def request_extension(
    dispatch_id: DispatchId,
    body: ExtensionBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """Ask the centre for more time on one clock (resolution by default)."""
    d, request = await _write(
        runtime,
        lambda s: service.request_extension(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, body=body
        ),
    )
    return _result(d, extension=request)


@router.post("/dispatches/{dispatch_id}/extension/approve", **_WORKFLOW)
async def approve_extension(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """Centre: approve the pending extension; the clock moves, the request is the audit."""
    d, request = await _write(
        runtime,
        lambda s: service.decide_extension(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            approve=True,
            note=body.note if body else None,
        ),
    )
    return _result(d, extension=request)


@router.post("/dispatches/{dispatch_id}/extension/deny", **_WORKFLOW)
async def deny_extension(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """Centre: deny the pending extension; the clock stays."""
    d, request = await _write(
        runtime,
        lambda s: service.decide_extension(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            approve=False,
            note=body.note if body else None,
        ),
    )
    return _result(d, extension=request)


@router.post("/dispatches/{dispatch_id}/progress", **_WORKFLOW)
async def note_progress(
    dispatch_id: DispatchId,
    body: RequiredNoteBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """A progress note (feeds the feedback clock)."""
    d = await _write(
        runtime,
        lambda s: service.note_progress(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, note=body.note
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/contact", **_WORKFLOW)
async def contact(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: ContactBody | None = None,
) -> ActionResult:
    """The citizen (or enterprise) has been contacted."""
    body = body or ContactBody()
    d = await _write(
        runtime,
        lambda s: service.contact(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            method=body.method,
            note=body.note,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/complete", **_WORKFLOW)
async def complete(
    dispatch_id: DispatchId,
    body: CompleteBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """办结: complete the dispatch with its result."""
    d = await _write(
        runtime,
        lambda s: service.complete(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            result=body.result,
            resolved=body.resolved,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/supervise", **_WORKFLOW)
async def supervise(
    dispatch_id: DispatchId,
    body: RequiredNoteBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """Centre: 督办 — press the department, on the record."""
    d = await _write(
        runtime,
        lambda s: service.supervise(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, note=body.note
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/focus", **_WORKFLOW)
async def focus(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """Centre: 重点办 — mark for focused leadership handling."""
    d = await _write(
        runtime,
        lambda s: service.focus(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            note=body.note if body else None,
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/withdraw", **_WORKFLOW)
async def withdraw(
    dispatch_id: DispatchId,
    body: ReasonBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """Centre: close without handling (a duplicate, or the citizen withdrew)."""
    d = await _write(
        runtime,
        lambda s: service.withdraw(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, reason=body.reason
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/mediation", **_WORKFLOW)
async def request_mediation(
    dispatch_id: DispatchId,
    body: ReasonBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> ActionResult:
    """Refer the dispute to mediation; a mediated agreement will complete the dispatch."""
    d = await _write(
        runtime,
        lambda s: service.request_mediation(
            session=s, ctx=ctx, dispatch_id=dispatch_id, principal=principal, reason=body.reason
        ),
    )
    return _result(d)


@router.post("/dispatches/{dispatch_id}/report", **_WORKFLOW)
async def report(
    dispatch_id: DispatchId,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
    body: NoteBody | None = None,
) -> ActionResult:
    """报到: a summoned department reports to the whistle."""
    d = await _write(
        runtime,
        lambda s: service.report(
            session=s,
            ctx=ctx,
            dispatch_id=dispatch_id,
            principal=principal,
            note=body.note if body else None,
        ),
    )
    return _result(d)


# --------------------------------------------------------------------------------------------
# Whistle


@router.post(
    "/tickets/{ticket_id}/whistle",
    response_model=WhistleBoard,
    status_code=status.HTTP_201_CREATED,
    tags=["whistle"],
)
async def blow_whistle(
    ticket_id: TicketId,
    body: WhistleBody,
    runtime: RuntimeDep,
    ctx: ContextDep,
    principal: CurrentPrincipal,
) -> WhistleBoard:
    """吹哨: summon departments to report on a ticket, each within its deadline (30 minutes by
    default, or ``report_within_minutes``); answers with the board."""
    whistle, _ = await _write(
        runtime,
        lambda s: service.blow_whistle(
            session=s,
            ctx=ctx,
            ticket_id=ticket_id,
            principal=principal,
            reason=body.reason,
            summons=body.summons,
            source_dispatch_id=body.source_dispatch_id,
        ),
    )
    return await _read(
        runtime,
        lambda s: queries.whistle_board(
            session=s, ctx=ctx, whistle_id=whistle.whistle_id, principal=principal
        ),
    )


@router.get("/whistles/{whistle_id}", response_model=WhistleBoard, tags=["whistle"])
async def whistle_board(
    whistle_id: WhistleId, runtime: RuntimeDep, ctx: ContextDep, principal: CurrentPrincipal
) -> WhistleBoard:
    """The board: who was summoned, who reported on time, who reported late, who is late."""
    return await _read(
        runtime,
        lambda s: queries.whistle_board(
            session=s, ctx=ctx, whistle_id=whistle_id, principal=principal
        ),
    )


@router.get("/tickets/{ticket_id}/whistles", response_model=list[WhistleBoard], tags=["whistle"])
async def ticket_whistles(
    ticket_id: TicketId, runtime: RuntimeDep, ctx: ContextDep, principal: CurrentPrincipal
) -> list[WhistleBoard]:
    """Every whistle blown on a ticket, with its board."""

    async def work(session: AsyncSession) -> list[WhistleBoard]:
        whistles = await queries.whistles_of_ticket(session=session, ticket_id=ticket_id)
        return [
            await queries.whistle_board(
                session=session, ctx=ctx, whistle_id=w.whistle_id, principal=principal
            )
            for w in whistles
        ]

    return await _read(runtime, work)
