"""Address / coordinates → grid and area, through the shared city registry (``shared.geo``).

The grid data is dispatch's and everyone's: it is read from ``shared.geo``, never copied. Address
lookups are cached (batch files and busy places repeat the same addresses all day); the registry
is immutable for the life of the process, so the cache never goes stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from shared import geo


@dataclass(frozen=True, slots=True)
class Located:
    """Where an appeal is: its grid when it could be told, and the deepest area known."""

    grid_code: str | None = None
    area_code: str | None = None


NOWHERE = Located()


@lru_cache(maxsize=8192)
def _by_address(address: str) -> Located:
    match = geo.locate_address(address)
    if match is None:
        return NOWHERE
    grid = match.grid.code if match.grid is not None else None
    return Located(grid_code=grid, area_code=grid or match.area.code)


@lru_cache(maxsize=8192)
def _by_point(lon: float, lat: float) -> Located:
    grid = geo.grid_for_point(lon, lat)
    return Located(grid.code, grid.code) if grid is not None else NOWHERE


def registered(code: str) -> geo.Area | None:
    """The registry's area with this code, or None (unknown or malformed)."""
    try:
        return geo.area(code)
    except (KeyError, ValueError):
        return None


def is_grid_code(code: str) -> bool:
    """Whether ``code`` names a grid of the city's registry."""
    found = registered(code)
    return found is not None and found.tier is geo.Tier.GRID


def locate(
    *,
    address: str | None,
    longitude: float | None,
    latitude: float | None,
    grid_code: str | None = None,
) -> Located:
    """The grid and area of an appeal.

    A grid the channel names itself (grid workers know theirs) wins; then the coordinates (a
    point is exact); then the address, which may pin only a village or a town.
    """
    if grid_code:
        return Located(grid_code, grid_code if registered(grid_code) is not None else None)
    by_point = NOWHERE
    if longitude is not None and latitude is not None:
        by_point = _by_point(round(longitude, 6), round(latitude, 6))
        if by_point.grid_code is not None:
            return by_point
    if address:
        by_address = _by_address(address.strip())
        if by_address is not NOWHERE:
            return by_address
    return by_point
