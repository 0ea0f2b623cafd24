"""Operators' changes to the organisation and the routing rules: each validated against the
chart and the active rules (refused whole, 422, naming every problem), recorded in the
department history, and emitted as an event in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.context import DispatchContext
from services.dispatch.models import (
    DepartmentChange,
    DepartmentRow,
    Dispatch,
    MetaEntry,
    RuleSetRow,
)
from services.dispatch.organisation.chart import (
    Department,
    DepartmentFlag,
    OrgChart,
    OrgChartError,
)
from services.dispatch.organisation.store import ORG_REVISION, department_from_row
from services.dispatch.rules import RulesError, RuleSet, load_rules
from services.dispatch.schemas import DepartmentCreate, DepartmentUpdate
from services.dispatch.workflow import OPEN
from shared.errors import Conflict, Invalid, NotFound
from shared.events.dispatch import DepartmentChanged, RoutingRulesActivated
from shared.geo import AreaTree


def _snapshot(row: DepartmentRow) -> dict[str, Any]:
    return {
        "code": row.code,
        "name_zh": row.name_zh,
        "name_en": row.name_en,
        "tier": row.tier,
        "jurisdiction": row.area_code,
        "responsibilities": list(row.responsibilities),
        "flags": list(row.flags),
        "active": row.active,
    }


async def _validate(
    session: AsyncSession, ctx: DispatchContext, units: list[Department], tree: AreaTree
) -> OrgChart:
    """The candidate org chart, refused (422) if it is not a valid chart or if the active
    routing rules do not validate against it."""
    try:
        candidate = OrgChart(units, tree)
    except OrgChartError as exc:
        raise Invalid(f"the organisation would be invalid: {exc}", problems=exc.problems) from None
    active = await ctx.org.rules(session)
    try:
        recheck: RuleSet = load_rules(active.text, org=candidate, profiles=ctx.profiles)
    except RulesError as exc:
        raise Invalid(
            f"the change would break the active routing rules (version "
            f"{active.rules.version}): {exc}",
            problems=exc.problems,
        ) from None
    assert recheck.digest == active.rules.digest
    return candidate


async def _commit_change(
    session: AsyncSession,
    ctx: DispatchContext,
    *,
    row: DepartmentRow,
    change: str,
    before: dict[str, Any] | None,
    actor: str,
) -> DepartmentRow:
    now = ctx.now()
    meta = await session.get(MetaEntry, ORG_REVISION, with_for_update=True)
    assert meta is not None
    revision = int(meta.value) + 1
    meta.value = str(revision)
    meta.updated_at = now
    row.revision += 1
    row.updated_at = now
    session.add(row)
    session.add(
        DepartmentChange(
            code=row.code,
            change=change,
            before=before,
            after=_snapshot(row),
            actor=actor,
            changed_at=now,
        )
    )
    await session.flush()
    await ctx.outbox.add(
        session,
        DepartmentChanged(
            code=row.code,
            change=change,  # type: ignore[arg-type]
            name_zh=row.name_zh,
            name_en=row.name_en,
            tier=row.tier,
            jurisdiction=row.area_code,
            responsibilities=tuple(row.responsibilities),
            flags=tuple(row.flags),
            active=row.active,
            org_revision=revision,
        ),
    )
    return row


async def create_department(
    *, session: AsyncSession, ctx: DispatchContext, data: DepartmentCreate, actor: str
) -> DepartmentRow:
    """Add a unit; refused if the code exists, the jurisdiction does not fit its tier, or the
    active rules would not validate against the new chart."""
    if await session.get(DepartmentRow, data.code) is not None:
        raise Conflict(f"department {data.code!r} already exists")
    org = await ctx.org.chart(session)
    area = org.tree.by_code.get(data.jurisdiction)
    if area is None:
        raise Invalid(f"jurisdiction: unknown area code {data.jurisdiction!r}")
    if area.tier is not data.tier:
        raise Invalid(f"jurisdiction: {data.jurisdiction} is a {area.tier}, not a {data.tier}")
    if not data.responsibilities and not data.flags:
        raise Invalid("responsibilities: no responsibilities and no flags: nothing could reach it")
    row = DepartmentRow(
        code=data.code,
        name_zh=data.name_zh,
        name_en=data.name_en,
        tier=data.tier.value,
        area_code=data.jurisdiction,
        responsibilities=list(data.responsibilities),
        flags=sorted(f.value for f in data.flags),
        active=True,
        revision=0,
    )
    await _validate(session, ctx, [*org.departments.values(), department_from_row(row)], org.tree)
    try:
        # The check above cannot see a concurrent create that has not committed yet: the
        # primary key decides, and the loser gets the same answer as the check gives.
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise Conflict(f"department {data.code!r} already exists") from None
    return await _commit_change(session, ctx, row=row, change="created", before=None, actor=actor)


async def update_department(
    *, session: AsyncSession, ctx: DispatchContext, code: str, data: DepartmentUpdate, actor: str
) -> DepartmentRow:
    """Change a unit's names, responsibility list or flags."""
    row = await _row(session, code)
    before = _snapshot(row)
    fields = data.model_dump(exclude_unset=True)
    if not fields:
        raise Invalid("nothing to change: give name_zh, name_en, responsibilities or flags")
    for name, value in fields.items():
        if value is None:
            raise Invalid(f"{name}: must not be null")
        if name == "flags":
            value = sorted(f.value if isinstance(f, DepartmentFlag) else f for f in value)
        setattr(row, name, list(value) if isinstance(value, list) else value)
    if not row.responsibilities and not row.flags:
        raise Invalid("responsibilities: no responsibilities and no flags: nothing could reach it")
    if row.active:
        org = await ctx.org.chart(session)
        others = [d for d in org.departments.values() if d.code != code]
        await _validate(session, ctx, [*others, department_from_row(row)], org.tree)
    return await _commit_change(session, ctx, row=row, change="updated", before=before, actor=actor)


async def set_active(
    *, session: AsyncSession, ctx: DispatchContext, code: str, active: bool, actor: str
) -> DepartmentRow:
    """Deactivate (refused while it holds open dispatches or the rules need it) or reactivate."""
    row = await _row(session, code)
    if row.active == active:
        return row
    before = _snapshot(row)
    org = await ctx.org.chart(session)
    others = [d for d in org.departments.values() if d.code != code]
    if not active:
        open_count = (
            await session.execute(
                select(func.count())
                .select_from(Dispatch)
                .where(
                    col(Dispatch.department_code) == code,
                    col(Dispatch.status).in_([s.value for s in OPEN]),
                )
            )
        ).scalar_one()
        if open_count:
            raise Conflict(
                f"department {code!r} holds {open_count} open dispatch(es); "
                "transfer or complete them before deactivating it"
            )
        await _validate(session, ctx, others, org.tree)
    else:
        row.active = True
        await _validate(session, ctx, [*others, department_from_row(row)], org.tree)
    row.active = active
    return await _commit_change(
        session,
        ctx,
        row=row,
        change="reactivated" if active else "deactivated",
        before=before,
        actor=actor,
    )


async def _row(session: AsyncSession, code: str) -> DepartmentRow:
    row = await session.get(DepartmentRow, code, with_for_update=True)
    if row is None:
        raise NotFound(f"no department {code!r}")
    return row


async def activate_rules(
    *, session: AsyncSession, ctx: DispatchContext, text: str, actor: str
) -> tuple[RuleSetRow, bool]:
    """Validate a rules file against the current org and profiles and make it the active
    version; refused as a whole (RulesError) when anything in it is wrong. Returns the row and
    whether it is new (False: the same content was already active)."""
    org = await ctx.org.chart(session)
    rules = load_rules(text, org=org, profiles=ctx.profiles)
    active = await ctx.org.rules(session)
    if rules.digest == active.rules.digest:
        row = await session.get(RuleSetRow, active.id)
        assert row is not None
        return row, False
    clash = (
        await session.execute(
            select(col(RuleSetRow.digest)).where(
                col(RuleSetRow.version) == rules.version, col(RuleSetRow.digest) != rules.digest
            )
        )
    ).first()
    if clash is not None:
        raise Invalid(
            f"version {rules.version!r} was already activated with different content; "
            "give the new file a new version"
        )
    now = ctx.now()
    row = RuleSetRow(
        version=rules.version, digest=rules.digest, text=text, activated_by=actor, activated_at=now
    )
    session.add(row)
    await session.flush()
    assert row.id is not None
    await ctx.outbox.add(
        session,
        RoutingRulesActivated(
            rule_set_id=row.id, version=rules.version, digest=rules.digest, activated_by=actor
        ),
    )
    return row, True
