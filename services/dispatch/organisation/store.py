"""The org chart's database side: loading the demo city into an empty database, rebuilding the
chart from the tables, and reading the organisation back.

The packaged YAML (``data/departments.yaml``) and city (``shared/data/city``) are only the seed:
once loaded, the tables are the truth and the in-memory ``OrgChart`` (``chart.py``) is rebuilt
from them whenever ``dispatch_meta['org.revision']`` moves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.data import DATA_PACKAGE
from services.dispatch.deadlines.profiles import ProfileSet
from services.dispatch.models import AreaRow, DepartmentChange, DepartmentRow, MetaEntry, RuleSetRow
from services.dispatch.organisation.chart import (
    Department,
    DepartmentFlag,
    OrgChart,
    default_org,
    expand_responsibilities,
)
from services.dispatch.rules import load_rules
from shared.datafiles import packaged_text
from shared.errors import NotFound
from shared.events.dispatch import OrganisationLoaded, RoutingRulesActivated
from shared.geo import Area, AreaTree, Tier
from shared.outbox import Outbox

log = logging.getLogger(__name__)


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
    await session.execute(DepartmentRow.__table__.delete())  # type: ignore[attr-defined]
    await session.execute(DepartmentRow.__table__.insert(), departments)  # type: ignore[attr-defined]
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


def department_from_row(row: DepartmentRow) -> Department:
    """The org-chart department for a table row."""
    return Department(
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
    rows = (
        (await session.execute(select(DepartmentRow).where(col(DepartmentRow.active))))
        .scalars()
        .all()
    )
    version = await org_version(session)
    return OrgChart((department_from_row(r) for r in rows), tree, version=version)


async def summary(session: AsyncSession) -> dict[str, Any]:
    """Counts by tier, for ``GET /organisation``."""
    areas = (
        await session.execute(select(col(AreaRow.tier), func.count()).group_by(col(AreaRow.tier)))
    ).all()
    departments = (
        await session.execute(
            select(col(DepartmentRow.tier), func.count())
            .where(col(DepartmentRow.active))
            .group_by(col(DepartmentRow.tier))
        )
    ).all()
    inactive = (
        await session.execute(select(func.count()).where(col(DepartmentRow.active).is_(False)))
    ).scalar_one()
    version = await session.get(MetaEntry, ORG_VERSION)
    return {
        "version": version.value if version else "",
        "revision": await current_revision(session),
        "areas_by_tier": {tier: int(n) for tier, n in areas},
        "departments_by_tier": {tier: int(n) for tier, n in departments},
        "inactive_departments": int(inactive),
    }


async def areas(
    *, session: AsyncSession, parent: str | None, tier: Tier | None, limit: int, offset: int
) -> list[AreaRow]:
    """Areas of the city, filtered by parent and tier, by code."""
    query = select(AreaRow)
    if parent is not None:
        query = query.where(col(AreaRow.parent_code) == parent)
    if tier is not None:
        query = query.where(col(AreaRow.tier) == tier.value)
    rows = await session.execute(query.order_by(col(AreaRow.code)).limit(limit).offset(offset))
    return list(rows.scalars())


async def departments(
    *,
    session: AsyncSession,
    tier: Tier | None,
    flag: DepartmentFlag | None,
    active: bool | None,
    within: str | None,
    q: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Departments filtered and paged, with the total before paging."""
    query = select(DepartmentRow)
    if tier is not None:
        query = query.where(col(DepartmentRow.tier) == tier.value)
    if active is not None:
        query = query.where(col(DepartmentRow.active).is_(active))
    if within is not None:
        query = query.where(col(DepartmentRow.area_code) == within)
    if q:  # a literal substring: "%" and "_" in the search are characters, not wildcards
        query = query.where(
            or_(
                col(DepartmentRow.code).contains(q, autoescape=True),
                col(DepartmentRow.name_zh).contains(q, autoescape=True),
                col(DepartmentRow.name_en).contains(q, autoescape=True),
            )
        )
    rows = list((await session.execute(query.order_by(col(DepartmentRow.code)))).scalars())
    if flag is not None:  # JSON membership differs per dialect: filter here
        rows = [r for r in rows if flag.value in r.flags]
    return {
        "items": rows[offset : offset + limit],
        "total": len(rows),
        "limit": limit,
        "offset": offset,
    }


async def department(*, session: AsyncSession, code: str) -> DepartmentRow:
    """One department's row; NotFound otherwise."""
    row = await session.get(DepartmentRow, code)
    if row is None:
        raise NotFound(f"no department {code!r}")
    return row


async def department_history(*, session: AsyncSession, code: str) -> list[dict[str, Any]]:
    """The admin changes to one department, oldest first."""
    rows = await session.execute(
        select(DepartmentChange)
        .where(col(DepartmentChange.code) == code)
        .order_by(col(DepartmentChange.id))
    )
    return [r.model_dump(mode="json") for r in rows.scalars()]
