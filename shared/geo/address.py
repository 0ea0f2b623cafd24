"""Address parsing: the area names an address walks down, then a facility or a road and number."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping

from shared.geo.model import AddressMatch, Area, RoadSegment, Tier

_HOUSE_NUMBER = re.compile(r"(\d+)")
_PROVINCE_PREFIXES = ("浙江省",)


def _normalise(text: str) -> str:
    # NFKC folds full-width digits ("１２号") to ASCII; whitespace carries no meaning in addresses.
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


class AddressIndex:
    """The tree's area names, road segments and facilities, for resolving addresses."""

    def __init__(
        self, by_code: Mapping[str, Area], root: Area, is_within: Callable[[str, str], bool]
    ) -> None:
        self._by_code = by_code
        self._root = root
        self._is_within = is_within
        self._names: dict[str, list[Area]] = {}
        self._roads: dict[str, list[tuple[RoadSegment, Area]]] = {}
        self._facilities: dict[str, Area] = {}
        for a in by_code.values():
            if a.tier is not Tier.GRID:
                self._names.setdefault(a.name_zh, []).append(a)
                continue
            for seg in a.roads:
                self._roads.setdefault(seg.road_zh, []).append((seg, a))
            if a.facility_zh:
                self._facilities[a.facility_zh] = a
        # Longest names first, so "解放北路" is tried before a shorter road it happens to contain.
        self._road_names = sorted(self._roads, key=len, reverse=True)
        self._facility_names = sorted(self._facilities, key=len, reverse=True)
        self._max_name = max(len(n) for n in self._names)

    def locate(self, text: str) -> AddressMatch | None:
        """Resolve an address: walk the area names it starts with, then a facility or a road."""
        norm = _normalise(text)
        for prefix in _PROVINCE_PREFIXES:
            norm = norm.removeprefix(prefix)
        current = self._root
        # The walk below only descends, so the city's own name is consumed up front.
        pos = len(current.name_zh) if norm.startswith(current.name_zh) else 0
        named = pos > 0
        while True:
            step = self._next_name(norm, pos, current)
            if step is None:
                break
            current, pos = step
            named = True
        rest = norm[pos:]
        found = self._facility_in(rest, current) or self._road_in(rest, current)
        if found is not None:
            return found
        if named:
            return AddressMatch(area=current, grid=None, via="area", matched=norm[:pos])
        return None

    def _next_name(self, text: str, pos: int, within: Area) -> tuple[Area, int] | None:
        # Longest name first; a name only counts when it lies below what was already matched,
        # which lets an address skip tiers ("枫桥市北海街道…") but not contradict itself.
        for length in range(min(self._max_name, len(text) - pos), 1, -1):
            candidates = [
                a
                for a in self._names.get(text[pos : pos + length], ())
                if a.code != within.code and self._is_within(a.code, within.code)
            ]
            if len(candidates) == 1:
                return candidates[0], pos + length
        return None

    def _facility_in(self, text: str, within: Area) -> AddressMatch | None:
        for name in self._facility_names:
            grid = self._facilities[name]
            if name in text and self._is_within(grid.code, within.code):
                return AddressMatch(area=grid, grid=grid, via="facility", matched=name)
        return None

    def _road_in(self, text: str, within: Area) -> AddressMatch | None:
        for name in self._road_names:
            at = text.find(name)
            if at < 0:
                continue
            segments = [
                (s, g) for s, g in self._roads[name] if self._is_within(g.code, within.code)
            ]
            if not segments:
                continue
            number = _HOUSE_NUMBER.match(text, at + len(name))
            if number is not None:
                n = int(number.group(1))
                for seg, grid in segments:
                    if seg.first_number <= n <= seg.last_number:
                        return AddressMatch(
                            area=grid, grid=grid, via="road_number", matched=name + number.group(1)
                        )
            grids = {g.code: g for _, g in segments}
            if len(grids) == 1:
                grid = next(iter(grids.values()))
                return AddressMatch(area=grid, grid=grid, via="road", matched=name)
            # A road crossing several grids without a usable number still pins the village.
            villages = {str(g.parent) for g in grids.values()}
            if len(villages) == 1:
                village = self._by_code[villages.pop()]
                return AddressMatch(area=village, grid=None, via="road", matched=name)
        return None
