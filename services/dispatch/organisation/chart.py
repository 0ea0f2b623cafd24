"""The org chart, the organisation's domain model: departments on five tiers, their
jurisdictions and responsibility lists — no database here (``store.py`` is its database side).

Loaded from ``data/departments.yaml``. Templates (``per: town``) expand into one unit per area of
that tier, so every town, village and grid has its own units and "lowest capable tier first"
(小事不出村、大事不出镇) can be answered by walking up from the ticket's area.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from services.dispatch.data import DATA_PACKAGE
from shared import geo, taxonomy
from shared.datafiles import (
    DataFileError,
    Problem,
    entry_label,
    packaged_text,
    parse_yaml,
    problems_from_validation,
)
from shared.geo import AreaTree, Tier

_CODE = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$")
_KINDS_BY_TIER = {
    Tier.CITY: {"city"},
    Tier.DISTRICT: {"district", "county"},
    Tier.TOWN: {"street", "town", "township"},
    Tier.VILLAGE: {"community", "village"},
    Tier.GRID: {"base", "special"},
}


class DepartmentFlag(StrEnum):
    """What a department is, beyond the categories it handles."""

    CENTRE = "centre"
    SUPERVISED_POOL = "supervised_pool"
    MEDIATION_CENTRE = "mediation_centre"
    JUDICIAL = "judicial"
    TASK_FORCE = "task_force"
    AID = "aid"


class OrgChartError(DataFileError):
    """The departments file was refused; nothing of it was loaded."""

    kind = "org chart"


class UnknownDepartment(KeyError):
    """A department code the org chart does not have."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"unknown department code {self.code!r}"


@dataclass(frozen=True, slots=True)
class Department:
    """One unit: a tier, an area whose subtree it covers, the leaf categories it handles."""

    code: str
    name_zh: str
    name_en: str
    tier: Tier
    jurisdiction: str
    responsibilities: frozenset[str]  # leaf codes, top-level codes already expanded
    declared: tuple[str, ...]  # the responsibility list as written, for display and export
    flags: frozenset[DepartmentFlag]
    template: str | None = None  # the ``per:`` entry this unit was expanded from

    def handles(self, category: str) -> bool:
        """True for a leaf in the list, or a top-level category whose every leaf is in it."""
        if len(category) == 2:
            leaves = {c.code for c in taxonomy.children(category)}
            return bool(leaves) and leaves <= self.responsibilities
        return category in self.responsibilities

    def has(self, flag: DepartmentFlag) -> bool:
        """True when the department carries the flag."""
        return flag in self.flags


def expand_responsibilities(codes: Iterable[str]) -> frozenset[str]:
    """Leaf codes for a responsibility list; a top-level code stands for all its leaves."""
    leaves: set[str] = set()
    for code in codes:
        category = taxonomy.get(code)
        if category.is_leaf:
            leaves.add(code)
        else:
            leaves.update(c.code for c in taxonomy.children(code))
    return frozenset(leaves)


class OrgChart:
    """Departments indexed by jurisdiction, with the area tree they are defined over."""

    def __init__(
        self, departments: Iterable[Department], tree: AreaTree, *, version: str = ""
    ) -> None:
        self.version = version
        self.tree = tree
        self.departments: dict[str, Department] = {}
        self.templates: dict[str, list[Department]] = {}
        self._by_jurisdiction: dict[str, list[Department]] = {}
        for d in departments:
            if d.code in self.departments:
                raise OrgChartError([Problem(f"department {d.code!r}", "code", "duplicate code")])
            self.departments[d.code] = d
            self._by_jurisdiction.setdefault(d.jurisdiction, []).append(d)
            if d.template is not None:
                self.templates.setdefault(d.template, []).append(d)
        pools = [d for d in self.departments.values() if d.has(DepartmentFlag.SUPERVISED_POOL)]
        if len(pools) != 1:
            raise OrgChartError(
                [
                    Problem(
                        None, "flags", f"exactly one supervised_pool expected, found {len(pools)}"
                    )
                ]
            )
        self.supervised_pool = pools[0]
        # Who handles a category where, asked for nearly every ticket routed: the chart never
        # changes once built (a new revision is a new chart), so each answer is kept.
        self._capable: dict[tuple[str, str | None], tuple[Department, ...]] = {}

    def department(self, code: str) -> Department:
        """The department with this code; UnknownDepartment otherwise."""
        try:
            return self.departments[code]
        except KeyError:
            raise UnknownDepartment(code) from None

    def _chain(self, area_code: str | None) -> list[str]:
        # The ticket's own area first, then every area above it: the order of "lowest tier first".
        if area_code is None:
            return [self.tree.root.code]
        return [area_code, *(a.code for a in self.tree.ancestors(area_code))]

    def covers(self, department_code: str, area_code: str) -> bool:
        """True when the area lies in the department's jurisdiction."""
        return self.tree.is_within(area_code, self.department(department_code).jurisdiction)

    def capable_departments(
        self, category: str, area_code: str | None = None, *, exclude: Collection[str] = ()
    ) -> list[Department]:
        """Departments that handle the category and cover the area, lowest tier first.

        ``area_code`` None means the area is unknown, so only city-wide departments qualify.
        ``exclude`` drops departments, e.g. one whose return (退单) was approved.
        """
        capable = self._capable.get((category, area_code))
        if capable is None:
            if len(self._capable) >= 100_000:  # every leaf in every grid: bounded, but large
                self._capable.clear()
            taxonomy.get(category)  # an unknown category is a caller error, not "nobody handles it"
            capable = self._capable[(category, area_code)] = tuple(
                d
                for code in self._chain(area_code)
                for d in self._by_jurisdiction.get(code, ())
                if d.handles(category)
            )
        return [d for d in capable if d.code not in exclude]

    def with_flag(
        self, flag: DepartmentFlag, area_code: str | None = None, *, exclude: Collection[str] = ()
    ) -> list[Department]:
        """Departments with the flag that cover the area, nearest (lowest tier) first."""
        return [
            d
            for code in self._chain(area_code)
            for d in self._by_jurisdiction.get(code, ())
            if d.has(flag) and d.code not in exclude
        ]

    def resolve(self, code: str, area_code: str | None) -> Department | None:
        """A unit code as itself; a template code as its unit covering the area (None if none)."""
        if code in self.departments:
            return self.departments[code]
        if code not in self.templates:
            raise UnknownDepartment(code)
        chain = set(self._chain(area_code))
        return next((d for d in self.templates[code] if d.jurisdiction in chain), None)

    def centres_over(self, department_code: str) -> list[Department]:
        """Centres overseeing a department's jurisdiction, nearest first, excluding itself."""
        dept = self.department(department_code)
        return [
            d
            for d in self.with_flag(DepartmentFlag.CENTRE, dept.jurisdiction)
            if d.code != dept.code
        ]


# --------------------------------------------------------------------------------------------
# Loading


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    name_zh: str
    name_en: str
    tier: Tier | None = None
    jurisdiction: str | None = None
    per: Tier | None = None
    kinds: list[str] | None = None
    responsibilities: list[str]
    flags: list[DepartmentFlag] = []

    @field_validator("code")
    @classmethod
    def _code_shape(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError(f"{v!r} is not an upper-case code like CITY-ZJ")
        return v

    @field_validator("responsibilities")
    @classmethod
    def _known_categories(cls, v: list[str]) -> list[str]:
        for code in v:
            if not taxonomy.is_known(code):
                raise ValueError(f"unknown category code {code!r}")
        if len(set(v)) != len(v):
            raise ValueError("a category is listed twice")
        return v

    @model_validator(mode="after")
    def _unit_or_template(self) -> _Entry:
        if (self.jurisdiction is None) == (self.per is None):
            raise ValueError("give either jurisdiction (one unit) or per (a template), not both")
        if self.jurisdiction is not None and self.tier is None:
            raise ValueError("a unit with a jurisdiction needs a tier")
        if self.per is not None and self.tier not in (None, self.per):
            raise ValueError(f"tier {self.tier} contradicts per {self.per}")
        if self.kinds is not None:
            allowed = _KINDS_BY_TIER[self.per or self.tier or Tier.CITY]
            unknown = sorted(set(self.kinds) - allowed)
            if unknown:
                raise ValueError(f"kinds {unknown} are not {self.per} kinds {sorted(allowed)}")
        if not self.responsibilities and not self.flags:
            raise ValueError("no responsibilities and no flags: nothing could ever reach it")
        return self


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    departments: list[_Entry]


def _expand(entry: _Entry, tree: AreaTree) -> list[Department]:
    leaves = expand_responsibilities(entry.responsibilities)
    common: dict[str, Any] = {
        "responsibilities": leaves,
        "declared": tuple(entry.responsibilities),
        "flags": frozenset(entry.flags),
    }
    if entry.jurisdiction is not None:
        assert entry.tier is not None
        return [
            Department(
                code=entry.code,
                name_zh=entry.name_zh,
                name_en=entry.name_en,
                tier=entry.tier,
                jurisdiction=entry.jurisdiction,
                **common,
            )
        ]
    areas = [
        a
        for a in tree.by_code.values()
        if a.tier is entry.per and (entry.kinds is None or a.kind in entry.kinds)
    ]
    return [
        Department(
            code=f"{entry.code}-{a.code}",
            name_zh=entry.name_zh.replace("{area}", a.name_zh),
            name_en=entry.name_en.replace("{area}", a.name_en),
            tier=a.tier,
            jurisdiction=a.code,
            template=entry.code,
            **common,
        )
        for a in sorted(areas, key=lambda a: a.code)
    ]


def org_from_document(raw: dict[str, Any], tree: AreaTree) -> OrgChart:
    """Validate a parsed departments document against the taxonomy and the area tree."""
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        raise OrgChartError(
            problems_from_validation(exc, raw, section="departments", noun="department", key="code")
        ) from None
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, entry in enumerate(doc.departments):
        label = entry_label(raw, "departments", index, "department", "code")
        if entry.code in seen:
            problems.append(Problem(label, "code", "duplicate code"))
        seen.add(entry.code)
        if entry.jurisdiction is not None:
            if entry.jurisdiction not in tree.by_code:
                problems.append(
                    Problem(label, "jurisdiction", f"unknown area code {entry.jurisdiction!r}")
                )
            elif tree.by_code[entry.jurisdiction].tier is not entry.tier:
                actual = tree.by_code[entry.jurisdiction].tier
                problems.append(
                    Problem(
                        label,
                        "jurisdiction",
                        f"{entry.jurisdiction} is a {actual}, not a {entry.tier}",
                    )
                )
    if problems:
        raise OrgChartError(problems)
    departments = [d for entry in doc.departments for d in _expand(entry, tree)]
    return OrgChart(departments, tree, version=doc.version)


def load_org(text: str | None = None, *, tree: AreaTree | None = None) -> OrgChart:
    """Load an org chart from YAML text (default: the packaged demo city's departments)."""
    raw = parse_yaml(
        packaged_text(DATA_PACKAGE, "departments.yaml") if text is None else text, OrgChartError
    )
    return org_from_document(raw, tree or geo.city())


@cache
def default_org() -> OrgChart:
    """The packaged org chart over the demo city, loaded once per process."""
    return load_org()


def capable_departments(
    category: str, area_code: str | None = None, *, exclude: Collection[str] = ()
) -> list[Department]:
    """Capable departments in the packaged org chart, lowest tier first."""
    return default_org().capable_departments(category, area_code, exclude=exclude)
