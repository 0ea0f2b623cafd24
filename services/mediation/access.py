"""Who may see and act on a mediation case.

- A mediator sees and acts on the cases they are assigned to (a walk-in they open is theirs).
- A centre sees and acts on the cases held at its own level in its own area: the unit code it
  names (``X-Fengqiao-Department: TOWN-TW-339921101``) ends in its area code, whose shape gives
  the level (a ``CITY-…`` unit is the city level). A centre that names no unit is the city-wide
  coordinator and sees every level.
- The committee reads counts only (``/cases/stats``), never a case or a party.
- Operators may do anything (the embedded default's open mode acts as operator).

A case the caller may not see answers 403 naming the case; one that does not exist, 404.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from services.mediation.models import Case
from shared.auth import Principal, Role
from shared.errors import Forbidden
from shared.events.mediation import Level
from shared.geo import Tier, tier_of

_TIER_LEVEL: dict[Tier, Level] = {
    Tier.CITY: "city",
    Tier.DISTRICT: "district",
    Tier.TOWN: "town",
    Tier.VILLAGE: "village",
    Tier.GRID: "village",  # a grid's disputes go to its village room
}


@dataclass(frozen=True, slots=True)
class UnitScope:
    """A centre unit's level and area (None: the whole city)."""

    level: Level
    area_code: str | None


def level_of_tier(tier: str) -> Level:
    """The mediation level of an org-chart tier (a grid is the village's)."""
    return _TIER_LEVEL.get(Tier(tier), "town") if tier in set(Tier) else "town"


def unit_scope(unit_code: str) -> UnitScope | None:
    """The level and area of a unit code such as ``TOWN-TW-339921101``; None when the code
    names neither (the caller decides what an unknown unit may see)."""
    suffix = unit_code.rsplit("-", 1)[-1]
    if suffix.isdigit():
        try:
            tier = tier_of(suffix)
        except ValueError:
            return None
        return UnitScope(_TIER_LEVEL[tier], None if tier is Tier.CITY else suffix)
    if unit_code.upper().startswith("CITY"):
        return UnitScope("city", None)
    return None


def within(area_code: str | None, scope_area: str | None) -> bool:
    """True when an area lies inside another: area codes extend their parent's code."""
    if scope_area is None:
        return True
    return area_code is not None and area_code.startswith(scope_area)


def centre_sees(principal: Principal, case: Case) -> bool:
    """True when a centre principal's level and area hold the case."""
    if principal.department_code is None:
        return True
    scope = unit_scope(principal.department_code)
    if scope is None:
        return False
    return case.level == scope.level and within(case.centre_area_code, scope.area_code)


def may_see(principal: Principal, case: Case, mediator_ids: Collection[str]) -> bool:
    """True when the principal may read (and act on) the case."""
    match principal.role:
        case Role.OPERATOR:
            return True
        case Role.MEDIATOR:
            return principal.subject in mediator_ids
        case Role.CENTRE:
            return centre_sees(principal, case)
    return False


def check_sees(principal: Principal, case: Case, mediator_ids: Collection[str]) -> None:
    """Forbidden naming the case unless the principal may see it."""
    if not may_see(principal, case, mediator_ids):
        raise Forbidden(f"case {case.case_id} is not one of yours ({principal.role.value})")
