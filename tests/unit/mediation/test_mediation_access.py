"""Who sees a case: unit codes give a centre its level and area; areas nest by code prefix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.mediation.access import UnitScope, may_see, unit_scope
from services.mediation.models import Case
from services.mediation.service import area_at_level
from shared.auth import Principal, Role


@pytest.mark.parametrize(
    ("code", "scope"),
    [
        ("VIL-TW-339921101201", UnitScope("village", "339921101201")),
        ("TOWN-TW-339921101", UnitScope("town", "339921101")),
        ("DIST-ZZ-339902", UnitScope("district", "339902")),
        ("CITY-MTZX", UnitScope("city", None)),
        ("GRID-WG-339921101201001", UnitScope("village", "339921101201001")),
        ("SOMEWHERE", None),
        ("TOWN-TW-12345", None),  # no area has five digits
    ],
)
def test_a_unit_code_names_its_level_and_area(code: str, scope: UnitScope | None) -> None:
    assert unit_scope(code) == scope


def test_the_centre_over_an_area_at_each_level() -> None:
    grid = "339921101201001"
    assert area_at_level(grid, "village") == "339921101201"
    assert area_at_level(grid, "town") == "339921101"
    assert area_at_level(grid, "district") == "339921"
    assert area_at_level(grid, "city") is None
    assert area_at_level(None, "town") is None


def _case(level: str, centre_area: str | None) -> Case:
    return Case(
        case_id="MW-1",
        level=level,
        centre_area_code=centre_area,
        opened_at=datetime(2026, 12, 4, tzinfo=UTC),
    )


def test_who_sees_a_case() -> None:
    town_case = _case("town", "339921101")
    town = Principal(Role.CENTRE, "c", "TOWN-TW-339921101")
    other_town = Principal(Role.CENTRE, "c", "TOWN-TW-339902001")
    village = Principal(Role.CENTRE, "c", "VIL-TW-339921101201")
    assert may_see(town, town_case, [])
    assert not may_see(other_town, town_case, [])
    assert not may_see(village, town_case, [])  # its level only: the case went up
    assert may_see(Principal(Role.CENTRE, "c"), town_case, [])  # the city-wide coordinator
    assert may_see(Principal(Role.MEDIATOR, "m-1"), town_case, ["m-1"])
    assert not may_see(Principal(Role.MEDIATOR, "m-2"), town_case, ["m-1"])
    assert not may_see(Principal(Role.COMMITTEE, "k"), town_case, [])
    assert may_see(Principal(Role.OPERATOR, "o"), town_case, [])
