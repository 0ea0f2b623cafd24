"""The org chart: loading the demo city's departments, capability lookups, refusals."""

from __future__ import annotations

from collections import Counter

import pytest

from services.dispatch.organisation.chart import (
    DepartmentFlag,
    OrgChartError,
    UnknownDepartment,
    capable_departments,
    default_org,
    load_org,
)
from shared import taxonomy
from shared.geo import Tier

ORG = default_org()
GRID = "339902001001002"  # a grid of 石兴社区, 北海街道, 越城区
VILLAGE, TOWN, DISTRICT = GRID[:12], GRID[:9], GRID[:6]


def codes(departments: list) -> list[str]:  # type: ignore[type-arg]
    return [d.code for d in departments]


def test_the_demo_org_chart_loads_with_units_on_every_tier() -> None:
    tiers = Counter(d.tier for d in ORG.departments.values())
    assert tiers[Tier.CITY] >= 20
    assert tiers[Tier.DISTRICT] == 4 * len([t for t in ORG.templates if t.startswith("DIST-")])
    assert tiers[Tier.TOWN] > 0 and tiers[Tier.VILLAGE] > 0 and tiers[Tier.GRID] > 0
    entries = len([d for d in ORG.departments.values() if d.template is None]) + len(ORG.templates)
    assert 35 <= entries <= 55
    assert ORG.version == "2025.11"


def test_template_units_take_their_area_name_and_jurisdiction() -> None:
    unit = ORG.department(f"TOWN-SFS-{TOWN}")
    assert unit.name_zh == "北海街道司法所"
    assert unit.name_en == "Beihai Subdistrict Judicial Office"
    assert unit.jurisdiction == TOWN
    assert unit.template == "TOWN-SFS"
    assert ORG.departments
    assert all("{" not in d.name_zh + d.name_en for d in ORG.departments.values())


def test_template_kinds_restrict_expansion() -> None:
    # 北海街道 is a street: no agriculture office; 东浦镇 is a town: it has one.
    assert f"TOWN-NB-{TOWN}" not in ORG.departments
    assert "TOWN-NB-339902101" in ORG.departments
    communities = [d for d in ORG.templates["VIL-JW"]]
    assert communities
    assert all(ORG.tree.area(d.jurisdiction).kind == "community" for d in communities)


def test_every_leaf_category_has_a_city_wide_department() -> None:
    uncovered = [c.code for c in taxonomy.leaves() if not ORG.capable_departments(c.code, None)]
    assert uncovered == []


def test_exactly_one_supervised_pool() -> None:
    assert ORG.supervised_pool.code == "CITY-12345"
    assert ORG.supervised_pool.has(DepartmentFlag.SUPERVISED_POOL)


def test_capable_departments_lowest_tier_first() -> None:
    assert codes(ORG.capable_departments("0204", GRID)) == [
        f"GRID-WG-{GRID}",
        f"VIL-JW-{VILLAGE}",
        f"TOWN-ZZ-{TOWN}",
        f"DIST-ZF-{DISTRICT}",
        "CITY-ZF",
    ]


def test_capable_departments_start_from_the_area_given() -> None:
    assert codes(ORG.capable_departments("0204", TOWN))[0] == f"TOWN-ZZ-{TOWN}"
    assert codes(ORG.capable_departments("0204", None)) == ["CITY-ZF"]
    assert codes(capable_departments("0201", GRID)) == [f"DIST-HB-{DISTRICT}", "CITY-HB"]


def test_capable_departments_asked_again_answer_alike_whatever_the_caller_did() -> None:
    # The chart keeps each answer; what one caller excludes or changes in its list is its own.
    first = ORG.capable_departments("0204", GRID)
    first.clear()
    assert codes(ORG.capable_departments("0204", GRID, exclude={f"GRID-WG-{GRID}"}))[0] != (
        f"GRID-WG-{GRID}"
    )
    assert codes(ORG.capable_departments("0204", GRID))[0] == f"GRID-WG-{GRID}"
    with pytest.raises(KeyError):
        ORG.capable_departments("9999", GRID)


def test_capable_departments_never_cross_into_another_jurisdiction() -> None:
    other_district_grid = next(
        c for c in ORG.tree.by_code if c.startswith("339903") and len(c) == 15
    )
    found = ORG.capable_departments("0204", other_district_grid)
    assert found
    assert all(ORG.tree.is_within(other_district_grid, d.jurisdiction) for d in found)
    assert f"DIST-ZF-{DISTRICT}" not in codes(found)


def test_excluded_departments_are_skipped() -> None:
    found = ORG.capable_departments("0204", GRID, exclude={f"GRID-WG-{GRID}"})
    assert codes(found)[0] == f"VIL-JW-{VILLAGE}"


def test_a_top_level_category_needs_every_leaf_covered() -> None:
    # The village room takes three kinds of dispute, the town committee all six.
    assert codes(ORG.capable_departments("13", GRID))[0] == f"TOWN-TW-{TOWN}"
    assert codes(ORG.capable_departments("1301", GRID))[0] == f"VIL-TW-{VILLAGE}"
    assert codes(ORG.capable_departments("04", GRID)) == [f"DIST-SJ-{DISTRICT}", "CITY-SJ"]


def test_unknown_codes_are_errors_not_empty_answers() -> None:
    with pytest.raises(KeyError, match="9999"):
        ORG.capable_departments("9999", GRID)
    with pytest.raises(KeyError, match="339999"):
        ORG.capable_departments("0204", "339999")
    with pytest.raises(UnknownDepartment, match="NOPE"):
        ORG.department("NOPE")


def test_with_flag_finds_the_nearest_first() -> None:
    judicial = ORG.with_flag(DepartmentFlag.JUDICIAL, GRID)
    assert codes(judicial) == [f"TOWN-SFS-{TOWN}", f"DIST-SF-{DISTRICT}", "CITY-SF"]
    assert codes(ORG.with_flag(DepartmentFlag.TASK_FORCE, VILLAGE))[0] == f"DIST-ZB-{DISTRICT}"


def test_resolve_turns_a_template_into_the_unit_covering_the_area() -> None:
    assert ORG.resolve("TOWN-TW", GRID).code == f"TOWN-TW-{TOWN}"  # type: ignore[union-attr]
    assert ORG.resolve("CITY-ZJ", GRID).code == "CITY-ZJ"  # type: ignore[union-attr]
    assert ORG.resolve("TOWN-TW", DISTRICT) is None  # a district is above any one town
    with pytest.raises(UnknownDepartment):
        ORG.resolve("NOPE", GRID)


def test_centres_over_a_grid_worker_climb_every_tier() -> None:
    assert codes(ORG.centres_over(f"GRID-WG-{GRID}")) == [
        f"VIL-JW-{VILLAGE}",
        f"TOWN-ZZ-{TOWN}",
        f"DIST-ZZ-{DISTRICT}",
        "CITY-12345",
    ]


def test_covers() -> None:
    assert ORG.covers(f"TOWN-ZZ-{TOWN}", GRID)
    assert not ORG.covers(f"TOWN-ZZ-{TOWN}", "339903")


# ---- refusals -----------------------------------------------------------------------------

POOL = """
  - code: POOL
    name_zh: 督办池
    name_en: Pool
    tier: city
    jurisdiction: "339900"
    responsibilities: []
    flags: [centre, supervised_pool]
"""


def _load(entries: str) -> None:
    load_org(f'version: "t"\ndepartments:{POOL}{entries}')


def test_a_minimal_valid_file_loads() -> None:
    org = load_org(f'version: "t"\ndepartments:{POOL}')
    assert list(org.departments) == ["POOL"]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            """
  - code: CITY-X
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: ["0204", "9999"]
""",
            "department 'CITY-X' field responsibilities: unknown category code '9999'",
        ),
        (
            """
  - code: CITY-X
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339999"
    responsibilities: ["0204"]
""",
            "department 'CITY-X' field jurisdiction: unknown area code '339999'",
        ),
        (
            """
  - code: TOWN-X
    name_zh: x
    name_en: x
    tier: town
    jurisdiction: "339902"
    responsibilities: ["0204"]
""",
            "department 'TOWN-X' field jurisdiction: 339902 is a district, not a town",
        ),
        (
            """
  - code: TOWN-X
    name_zh: x
    name_en: x
    tier: town
    jurisdiction: "339902001"
    per: town
    responsibilities: ["0204"]
""",
            "department 'TOWN-X': give either jurisdiction (one unit) or per (a template)",
        ),
        (
            """
  - code: TOWN-X
    per: town
    kinds: [community]
    name_zh: x
    name_en: x
    responsibilities: ["0204"]
""",
            "department 'TOWN-X': kinds ['community'] are not town kinds",
        ),
        (
            """
  - code: CITY-X
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: []
""",
            "department 'CITY-X': no responsibilities and no flags",
        ),
        (
            """
  - code: CITY-X
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: ["0204"]
    flags: [mayor]
""",
            "department 'CITY-X' field flags[0]: Input should be",
        ),
        (
            """
  - code: city-x
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: ["0204"]
""",
            "department 'city-x' field code: 'city-x' is not an upper-case code",
        ),
        (
            """
  - code: CITY-X
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: ["0204"]
    budget: 1
""",
            "department 'CITY-X' field budget: Extra inputs are not permitted",
        ),
        (
            """
  - code: POOL
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: ["0204"]
""",
            "department 'POOL' field code: duplicate code",
        ),
        (
            """
  - code: POOL-TWO
    name_zh: x
    name_en: x
    tier: city
    jurisdiction: "339900"
    responsibilities: []
    flags: [supervised_pool]
""",
            "exactly one supervised_pool expected, found 2",
        ),
    ],
)
def test_bad_files_are_refused_naming_the_department_and_field(entries: str, expected: str) -> None:
    with pytest.raises(OrgChartError) as caught:
        _load(entries)
    assert expected in str(caught.value)


def test_a_file_that_does_not_parse_names_the_line() -> None:
    with pytest.raises(OrgChartError, match="the file does not parse at line 4 column 1"):
        load_org('version: "t"\ndepartments:\n  - code: [unclosed\n')


def test_every_problem_is_reported_not_just_the_first() -> None:
    bad = """
  - code: CITY-A
    name_zh: a
    name_en: a
    tier: city
    jurisdiction: "339999"
    responsibilities: ["0204"]
  - code: CITY-B
    name_zh: b
    name_en: b
    tier: city
    jurisdiction: "339998"
    responsibilities: ["0204"]
"""
    with pytest.raises(OrgChartError) as caught:
        _load(bad)
    assert [p.entry for p in caught.value.problems] == [
        "department 'CITY-A'",
        "department 'CITY-B'",
    ]
    assert "(and 1 more)" in str(caught.value)
