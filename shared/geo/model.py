"""The area model: tiers, codes and the value objects of the area tree.

Codes follow the statistical division codes: a 6-digit city (``339900``) or district
(``339902``), 9-digit towns (001–099 streets, 1xx towns, 2xx townships), 12-digit villages
(0xx communities, 2xx villages) and 15-digit grids that extend their village (0xx base grids,
8xx special grids for industrial parks and markets). A code's tier follows from its shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Point = tuple[float, float]


class Tier(StrEnum):
    """The five tiers, from the top down."""

    CITY = "city"
    DISTRICT = "district"
    TOWN = "town"
    VILLAGE = "village"
    GRID = "grid"

    @property
    def level(self) -> int:
        """0 for the city down to 4 for a grid."""
        return _TIER_LEVELS[self]


_TIER_LEVELS = {tier: index for index, tier in enumerate(Tier)}


class UnknownArea(KeyError):
    """An area code that is not in the city."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"unknown area code {self.code!r}"


@dataclass(frozen=True, slots=True)
class RoadSegment:
    """A run of house numbers on one road that lies inside one grid (both ends inclusive)."""

    road_zh: str
    road_en: str
    first_number: int
    last_number: int


@dataclass(frozen=True, slots=True)
class Area:
    """One node of the area tree; grids carry a polygon, a grade, road segments and a facility."""

    code: str
    tier: Tier
    # city | district | county | street | town | township | community | village | base | special
    kind: str
    name_zh: str
    name_en: str
    parent: str | None
    # The Chinese postal prefix down to the village, e.g. 枫桥市越城区北海街道塔山社区.
    address_prefix: str
    grade: str | None = None
    polygon: tuple[Point, ...] = ()
    roads: tuple[RoadSegment, ...] = ()
    facility_zh: str | None = None
    facility_en: str | None = None

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(min_lon, min_lat, max_lon, max_lat) of the polygon."""
        lons = [p[0] for p in self.polygon]
        lats = [p[1] for p in self.polygon]
        return min(lons), min(lats), max(lons), max(lats)


@dataclass(frozen=True, slots=True)
class AddressMatch:
    """What an address resolved to: the deepest area named, and the grid when it could be told."""

    area: Area
    grid: Area | None
    via: str  # "area" (names only) | "road" | "road_number" | "facility"
    matched: str  # the part of the text that was recognised


def tier_of(code: str) -> Tier:
    """The tier a code belongs to, from its shape alone; ValueError for a malformed code."""
    if not code.isdigit():
        raise ValueError(f"area code {code!r} is not all digits")
    match len(code):
        case 6:
            return Tier.CITY if code.endswith("00") else Tier.DISTRICT
        case 9:
            return Tier.TOWN
        case 12:
            return Tier.VILLAGE
        case 15:
            return Tier.GRID
    raise ValueError(f"area code {code!r} has {len(code)} digits; expected 6, 9, 12 or 15")


def parent_code(code: str) -> str | None:
    """The code of the area one tier up, derived from the code's shape (None for the city)."""
    tier = tier_of(code)
    if tier is Tier.CITY:
        return None
    if tier is Tier.DISTRICT:
        return code[:4] + "00"
    return code[: {Tier.TOWN: 6, Tier.VILLAGE: 9, Tier.GRID: 12}[tier]]
