"""The organisation in the database: loading the demo city, rebuilding the org chart from the
tables, and admin changes that are validated against the active routing rules and emitted as
events.

The packaged YAML (``data/departments.yaml``) and city (``shared/data/city``) are only the seed:
once loaded, the tables are the truth and the in-memory ``OrgChart`` is rebuilt from them
whenever ``dispatch_meta['org.revision']`` moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.clocks import ProfileSet
from services.dispatch.data import DATA_PACKAGE
from services.dispatch.models import (
    AreaRow,
    Department,
    DepartmentChange,
    Dispatch,
    MetaEntry,
    RuleSetRow,
)
from services.dispatch.orgchart import Department as Unit
from services.dispatch.orgchart import (
    DepartmentFlag,
    OrgChart,
    OrgChartError,
    default_org,
    expand_responsibilities,
)
from services.dispatch.routing import RulesError, RuleSet, load_rules
from services.dispatch.schemas import DepartmentCreate, DepartmentUpdate
from services.dispatch.workflow import OPEN
from shared.datafiles import packaged_text
from shared.errors import Conflict, Invalid, NotFound
from shared.events.dispatch import DepartmentChanged, OrganisationLoaded, RoutingRulesActivated
from shared.geo import Area, AreaTree, Tier
from shared.outbox import Outbox

if TYPE_CHECKING:
    from services.dispatch.context import DispatchContext

log = logging.getLogger(__name__)

# SQLModel columns typed as plain attributes: mypy cannot see their SQL operators.
A: Any = AreaRow
M: Any = Department
D: Any = Dispatch
R: Any = RuleSetRow

ORG_VERSION = "org.version"
ORG_REVISION = "org.revision"


@dataclass(frozen=True)
class LoadResult:
    version: str
    areas: int
    departments: int
    rules_version: str


# --------------------------------------------------------------------------------------------
# Loading


def area_rows(tree: AreaTree) -> list[dict[str, Any]]:
    """Rows for the areas table, parents before children."""
    order = {t: i for i, t in enumerate(Tier)}
    return [
        {
            "code": a.code,
            "parent_code": a.parent,
            "tier": a.tier.value,
            "kind": a.kind,
            "name_zh": a.name_zh,
            "name_en": a.name_en,
            "address_prefix": a.address_prefix,
            "grade": a.grade,
            "polygon": [list(p) for p in a.polygon],
        }
        for a in sorted(tree.by_code.values(), key=lambda a: (order[a.tier], a.code))
    ]


def department_rows(org: OrgChart, now: datetime) -> list[dict[str, Any]]:
    """Rows for the departments table: every unit, templates expanded."""
    return [
        {
            "code": d.code,
            "name_zh": d.name_zh,
            "name_en": d.name_en,
            "tier": d.tier.value,
            "area_code": d.jurisdiction,
            "responsibilities": list(d.declared),
            "flags": sorted(f.value for f in d.flags),
            "active": True,
            "template": d.template,
            "revision": 0,
            "updated_at": now,
        }
        for d in org.departments.values()
    ]


async def is_loaded(session: AsyncSession) -> bool:
    """True once an organisation has been loaded into this database."""
    return await session.get(MetaEntry, ORG_VERSION) is not None


async def load(
    session: AsyncSession,
    *,
    outbox: Outbox,
    profiles: ProfileSet,
    now: datetime,
    org: OrgChart | None = None,
    rules_text: str | None = None,
    actor: str = "system:load",
) -> LoadResult | None:
    """Load the city, the org chart and the routing rules into an empty database, in the caller's
    transaction; None when an organisation is already there (or another process is loading it)."""
    if await is_loaded(session):
        return None
    org = org or default_org()
    rules = load_rules(rules_text, org=org, profiles=profiles)  # refuse before writing anything
    try:
        # Claim the load first: a concurrent starter fails here, not half-way through.
        async with session.begin_nested():
            session.add(MetaEntry(name=ORG_VERSION, value=org.version, updated_at=now))
            await session.flush()
    except IntegrityError:
        log.info("another process is loading the organisation")
        return None
    session.add(MetaEntry(name=ORG_REVISION, value="0", updated_at=now))
    areas = area_rows(org.tree)
    departments = department_rows(org, now)
    await session.execute(AreaRow.__table__.insert(), areas)  # type: ignore[attr-defined]
    # An earlier build's seed may linger in a dev database: the chart replaces it.
    await session.execute(Department.__table__.delete())  # type: ignore[attr-defined]
    await session.execute(Department.__table__.insert(), departments)  # type: ignore[attr-defined]
    text = rules_text if rules_text is not None else _packaged_rules_text()
    rule_set = RuleSetRow(
        version=rules.version, digest=rules.digest, text=text, activated_by=actor, activated_at=now
    )
    session.add(rule_set)
    await session.flush()
    assert rule_set.id is not None
    await outbox.add(
        session,
        OrganisationLoaded(version=org.version, areas=len(areas), departments=len(departments)),
        RoutingRulesActivated(
            rule_set_id=rule_set.id, version=rules.version, digest=rules.digest, activated_by=actor
        ),
    )
    log.info(
        "loaded organisation %s: %d areas, %d departments, rules %s",
        org.version,
        len(areas),
        len(departments),
        rules.version,
    )
    return LoadResult(org.version, len(areas), len(departments), rules.version)


def _packaged_rules_text() -> str:
    return packaged_text(DATA_PACKAGE, "rules.yaml")


# --------------------------------------------------------------------------------------------
# Reading back


async def current_revision(session: AsyncSession) -> int:
    """The org chart's revision: bumped by every admin change."""
    row = await session.get(MetaEntry, ORG_REVISION)
    if row is None:
        raise LookupError("no organisation is loaded; run `fengqiao dispatch load-org`")
    return int(row.value)


async def org_version(session: AsyncSession) -> str:
    """The loaded chart's version and revision, e.g. ``2025.11+r3``."""
    version = await session.get(MetaEntry, ORG_VERSION)
    revision = await current_revision(session)
    return f"{version.value if version else '?'}+r{revision}"


async def build_tree(session: AsyncSession) -> AreaTree:
    """The area tree as the areas table holds it."""
    rows = (await session.execute(select(AreaRow))).scalars().all()
    if not rows:
        raise LookupError("the areas table is empty; run `fengqiao dispatch load-org`")
    areas = {
        r.code: Area(
            code=r.code,
            tier=Tier(r.tier),
            kind=r.kind,
            name_zh=r.name_zh,
            name_en=r.name_en,
            parent=r.parent_code,
            address_prefix=r.address_prefix,
            grade=r.grade,
            polygon=tuple((float(x), float(y)) for x, y in r.polygon),
        )
        for r in rows
    }
    return AreaTree(areas)


def unit_from_row(row: Department) -> Unit:
    """The org-chart department for a table row."""
    return Unit(
        code=row.code,
        name_zh=row.name_zh,
        name_en=row.name_en,
        tier=Tier(row.tier),
        jurisdiction=row.area_code,
        responsibilities=expand_responsibilities(row.responsibilities),
        declared=tuple(row.responsibilities),
        flags=frozenset(DepartmentFlag(f) for f in row.flags),
        template=row.template,
    )


async def build_org(session: AsyncSession, *, tree: AreaTree | None = None) -> OrgChart:
    """The org chart of the active departments, over the stored area tree."""
    tree = tree or await build_tree(session)
    rows = (await session.execute(select(Department).where(M.active))).scalars().all()
    version = await org_version(session)
    return OrgChart((unit_from_row(r) for r in rows), tree, version=version)


async def summary(session: AsyncSession) -> dict[str, Any]:
    """Counts by tier, for ``GET /organisation``."""
    areas = (await session.execute(select(A.tier, func.count()).group_by(A.tier))).all()
    departments = (
        await session.execute(select(M.tier, func.count()).where(M.active).group_by(M.tier))
    ).all()
    inactive = (await session.execute(select(func.count()).where(M.active.is_(False)))).scalar_one()
    version = await session.get(MetaEntry, ORG_VERSION)
    return {
        "version": version.value if version else "",
        "revision": await current_revision(session),
        "areas_by_tier": {tier: int(n) for tier, n in areas},
        "departments_by_tier": {tier: int(n) for tier, n in departments},
        "inactive_departments": int(inactive),
    }


# --------------------------------------------------------------------------------------------
# Admin changes


def _snapshot(row: Department) -> dict[str, Any]:
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
    session: AsyncSession, ctx: DispatchContext, units: list[Unit], tree: AreaTree
) -> OrgChart:
    """The candidate org chart, refused (422) if it is not a valid chart or if the active
    routing rules do not validate against it."""
    try:
        candidate = OrgChart(units, tree)
    except OrgChartError as exc:
        raise Invalid(f"the organisation would be invalid: {exc}", problems=exc.problems) from None
    active = await ctx.active_rules(session)
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
    row: Department,
    change: str,
    before: dict[str, Any] | None,
    actor: str,
) -> Department:
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
) -> Department:
    """Add a unit; refused if the code exists, the jurisdiction does not fit its tier, or the
    active rules would not validate against the new chart."""
    if await session.get(Department, data.code) is not None:
        raise Conflict(f"department {data.code!r} already exists")
    org = await ctx.organisation(session)
    area = org.tree.by_code.get(data.jurisdiction)
    if area is None:
        raise Invalid(f"jurisdiction: unknown area code {data.jurisdiction!r}")
    if area.tier is not data.tier:
        raise Invalid(f"jurisdiction: {data.jurisdiction} is a {area.tier}, not a {data.tier}")
    if not data.responsibilities and not data.flags:
        raise Invalid("responsibilities: no responsibilities and no flags: nothing could reach it")
    row = Department(
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
    await _validate(session, ctx, [*org.departments.values(), unit_from_row(row)], org.tree)
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
) -> Department:
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
        org = await ctx.organisation(session)
        others = [d for d in org.departments.values() if d.code != code]
        await _validate(session, ctx, [*others, unit_from_row(row)], org.tree)
    return await _commit_change(session, ctx, row=row, change="updated", before=before, actor=actor)


async def set_active(
    *, session: AsyncSession, ctx: DispatchContext, code: str, active: bool, actor: str
) -> Department:
    """Deactivate (refused while it holds open dispatches or the rules need it) or reactivate."""
    row = await _row(session, code)
    if row.active == active:
        return row
    before = _snapshot(row)
    org = await ctx.organisation(session)
    others = [d for d in org.departments.values() if d.code != code]
    if not active:
        open_count = (
            await session.execute(
                select(func.count())
                .select_from(Dispatch)
                .where(D.department_code == code, D.status.in_([s.value for s in OPEN]))
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
        await _validate(session, ctx, [*others, unit_from_row(row)], org.tree)
    row.active = active
    return await _commit_change(
        session,
        ctx,
        row=row,
        change="reactivated" if active else "deactivated",
        before=before,
        actor=actor,
    )


async def _row(session: AsyncSession, code: str) -> Department:
    row = await session.get(Department, code, with_for_update=True)
    if row is None:
        raise NotFound(f"no department {code!r}")
    return row


async def activate_rules(
    *, session: AsyncSession, ctx: DispatchContext, text: str, actor: str
) -> tuple[RuleSetRow, bool]:
    """Validate a rules file against the current org and profiles and make it the active
    version; refused as a whole (RulesError) when anything in it is wrong. Returns the row and
    whether it is new (False: the same content was already active)."""
    org = await ctx.organisation(session)
    rules = load_rules(text, org=org, profiles=ctx.profiles)
    active = await ctx.active_rules(session)
    if rules.digest == active.rules.digest:
        row = await session.get(RuleSetRow, active.id)
        assert row is not None
        return row, False
    clash = (
        await session.execute(
            select(R.digest).where(R.version == rules.version, R.digest != rules.digest)
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
