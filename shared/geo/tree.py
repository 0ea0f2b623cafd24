"""The loaded area tree: lookups by code, by point and by address, and the committed demo city."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from shared.geo.address import AddressIndex
from shared.geo.model import (
    AddressMatch,
    Area,
    RoadSegment,
    Tier,
    UnknownArea,
    parent_code,
    tier_of,
)
from shared.geo.spatial import GridIndex

DATA_PACKAGE = "shared.data.city"
DATA_FILE = "fengqiao.json"


@dataclass
class AreaTree:
    """The loaded city: lookups by code, by point and by address."""

    by_code: dict[str, Area]
    children_of: dict[str, list[str]] = field(init=False)
    _index: GridIndex = field(init=False, repr=False)
    _addresses: AddressIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.children_of = {code: [] for code in self.by_code}
        for a in self.by_code.values():
            if a.parent is not None:
                self.children_of[a.parent].append(a.code)
        self._index = GridIndex([a for a in self.by_code.values() if a.tier is Tier.GRID])
        self._addresses = AddressIndex(self.by_code, self.root, self.is_within)

    @property
    def root(self) -> Area:
        """The city."""
        return next(a for a in self.by_code.values() if a.tier is Tier.CITY)

    def area(self, code: str) -> Area:
        """The area with this code; UnknownArea otherwise."""
        try:
            return self.by_code[code]
        except KeyError:
            raise UnknownArea(code) from None

    def children(self, code: str) -> list[Area]:
        """The areas one tier below, in code order."""
        self.area(code)
        return [self.by_code[c] for c in self.children_of[code]]

    def ancestors(self, code: str) -> list[Area]:
        """The areas above this one, nearest first, ending with the city."""
        result: list[Area] = []
        parent = self.area(code).parent
        while parent is not None:
            a = self.by_code[parent]
            result.append(a)
            parent = a.parent
        return result

    def subtree(self, code: str) -> list[Area]:
        """This area and everything below it, depth first."""
        result: list[Area] = []
        stack = [code]
        self.area(code)
        while stack:
            c = stack.pop()
            result.append(self.by_code[c])
            stack.extend(reversed(self.children_of[c]))
        return result

    def is_within(self, code: str, ancestor: str) -> bool:
        """True when ``code`` is ``ancestor`` or lies in its subtree."""
        self.area(ancestor)
        current: str | None = self.area(code).code
        while current is not None:
            if current == ancestor:
                return True
            current = self.by_code[current].parent
        return False

    def grid_for_point(self, lon: float, lat: float) -> Area | None:
        """The grid containing the point, or None outside the city."""
        return self._index.lookup(lon, lat)

    def locate_address(self, text: str) -> AddressMatch | None:
        """Resolve an address: walk the area names it starts with, then a facility or a road."""
        return self._addresses.locate(text)

    def grid_for_address(self, text: str) -> Area | None:
        """The grid an address lies in, when the address names it precisely enough."""
        match = self.locate_address(text)
        return match.grid if match else None


# --------------------------------------------------------------------------------------------
# Loading


def _area_from_json(row: dict[str, Any]) -> Area:
    code = str(row["code"])
    polygon = tuple((float(x), float(y)) for x, y in row.get("polygon", ()))
    roads = tuple(
        RoadSegment(str(a), str(b), int(c), int(d)) for a, b, c, d in row.get("roads", ())
    )
    facility = row.get("facility")
    return Area(
        code=code,
        tier=tier_of(code),
        kind=str(row["kind"]),
        name_zh=str(row["name_zh"]),
        name_en=str(row["name_en"]),
        parent=parent_code(code),
        address_prefix=str(row["address_prefix"]),
        grade=str(row["grade"]) if row.get("grade") else None,
        polygon=polygon,
        roads=roads,
        facility_zh=str(facility[0]) if facility else None,
        facility_en=str(facility[1]) if facility else None,
    )


def tree_from_document(document: dict[str, Any]) -> AreaTree:
    """Build the tree from a parsed city document (the committed JSON's shape)."""
    rows: list[dict[str, Any]] = document["areas"]
    return AreaTree({a.code: a for a in map(_area_from_json, rows)})


@cache
def city() -> AreaTree:
    """The committed demo city, loaded once per process."""
    text = resources.files(DATA_PACKAGE).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return tree_from_document(json.loads(text))


def areas() -> dict[str, Area]:
    """Every area of the demo city by code, grids included."""
    return city().by_code


def area(code: str) -> Area:
    """The demo city's area with this code; UnknownArea otherwise."""
    return city().area(code)


def ancestors(code: str) -> list[Area]:
    """The areas above this one, nearest first, ending with the city."""
    return city().ancestors(code)


def subtree(code: str) -> list[Area]:
    """This area and everything below it."""
    return city().subtree(code)


def children(code: str) -> list[Area]:
    """The areas one tier below this one."""
    return city().children(code)


def is_within(code: str, ancestor: str) -> bool:
    """True when ``code`` is ``ancestor`` or lies in its subtree."""
    return city().is_within(code, ancestor)


def grid_for_point(lon: float, lat: float) -> Area | None:
    """The grid containing a WGS-84 point, or None outside the city."""
    return city().grid_for_point(lon, lat)


def grid_for_address(text: str) -> Area | None:
    """The grid an address lies in, or None when the address is not precise enough."""
    return city().grid_for_address(text)


def locate_address(text: str) -> AddressMatch | None:
    """The deepest area (and grid, when known) an address names."""
    return city().locate_address(text)
