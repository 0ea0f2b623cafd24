"""The demo city: its tree, its codes, grid lookup by point and by address."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import geo
from shared.geo import Tier, UnknownArea, point_in_polygon, tier_of

TREE = geo.city()
GRIDS = [a for a in TREE.by_code.values() if a.tier is Tier.GRID]
MIN_LON, MIN_LAT, MAX_LON, MAX_LAT = 120.30, 29.60, 120.90, 30.10


def _first(tier: Tier, kind: str | None = None) -> geo.Area:
    return next(a for a in TREE.by_code.values() if a.tier is tier and kind in (None, a.kind))


def _containing(lon: float, lat: float) -> list[str]:
    return [g.code for g in GRIDS if point_in_polygon(lon, lat, g.polygon)]


# ---- the data ---------------------------------------------------------------------------------


def test_the_city_has_the_promised_shape() -> None:
    tiers = Counter(a.tier for a in TREE.by_code.values())
    assert tiers[Tier.CITY] == 1
    assert tiers[Tier.DISTRICT] == 4
    assert tiers[Tier.TOWN] == 20
    assert 140 <= tiers[Tier.VILLAGE] <= 180
    assert 550 <= tiers[Tier.GRID] <= 700
    kinds = Counter(g.kind for g in GRIDS)
    assert kinds["special"] >= 40
    assert set(kinds) == {"base", "special"}
    assert {a.kind for a in TREE.by_code.values() if a.tier is Tier.DISTRICT} == {
        "district",
        "county",
    }


def test_every_grid_has_a_grade_a_quad_and_a_road() -> None:
    assert {g.grade for g in GRIDS} == {"A", "B", "C"}
    for g in GRIDS:
        assert len(g.polygon) == 4
        assert g.roads, g.code
        assert all(s.first_number <= s.last_number for s in g.roads)


def test_special_grids_name_their_facility_and_carry_8xx_codes() -> None:
    assert any(g.kind == "special" for g in GRIDS)
    for g in GRIDS:
        if g.kind == "special":
            assert g.code[-3] == "8"
            assert g.facility_zh and g.facility_en
            assert g.facility_zh in g.name_zh
        else:
            assert g.code[-3] == "0"
            assert g.facility_zh is None


def test_codes_names_and_prefixes_are_consistent() -> None:
    for a in TREE.by_code.values():
        assert tier_of(a.code) is a.tier
        assert a.name_zh and a.name_en.isascii()
        if a.parent is not None:
            parent = TREE.by_code[a.parent]
            # Codes extend their parent's, except a district, which shares the city's first four.
            stem = parent.code[:4] if parent.tier is Tier.CITY else parent.code
            assert a.code.startswith(stem)
            assert parent.tier.level == a.tier.level - 1
        if a.tier in (Tier.DISTRICT, Tier.TOWN, Tier.VILLAGE):
            assert a.address_prefix == TREE.by_code[str(a.parent)].address_prefix + a.name_zh
    village = _first(Tier.VILLAGE)
    assert village.address_prefix.startswith("枫桥市")


def test_village_and_road_names_are_unique_so_addresses_are_unambiguous() -> None:
    names = Counter(a.name_zh for a in TREE.by_code.values() if a.tier is not Tier.GRID)
    assert max(names.values()) == 1
    road_owner: dict[str, set[str]] = {}
    for g in GRIDS:
        for s in g.roads:
            road_owner.setdefault(s.road_zh, set()).add(str(g.parent))
    assert all(len(villages) == 1 for villages in road_owner.values())


# ---- codes and the tree -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "tier"),
    [
        ("339900", Tier.CITY),
        ("339902", Tier.DISTRICT),
        ("339921", Tier.DISTRICT),
        ("339902001", Tier.TOWN),
        ("339902001001", Tier.VILLAGE),
        ("339902001001001", Tier.GRID),
    ],
)
def test_tier_of_reads_the_code_shape(code: str, tier: Tier) -> None:
    assert tier_of(code) is tier


@pytest.mark.parametrize("code", ["", "3399", "33990200", "33990A", "3399020010010011"])
def test_tier_of_refuses_malformed_codes(code: str) -> None:
    with pytest.raises(ValueError, match="area code"):
        tier_of(code)


def test_ancestors_climb_to_the_city_nearest_first() -> None:
    grid = GRIDS[0]
    chain = geo.ancestors(grid.code)
    assert [a.tier for a in chain] == [Tier.VILLAGE, Tier.TOWN, Tier.DISTRICT, Tier.CITY]
    assert chain[0].code == grid.parent
    assert geo.ancestors("339900") == []


def test_subtree_holds_the_area_and_everything_below() -> None:
    town = geo.area("339902001")
    below = geo.subtree(town.code)
    assert below[0] == town
    assert {a.tier for a in below} == {Tier.TOWN, Tier.VILLAGE, Tier.GRID}
    assert all(a.code.startswith(town.code) for a in below)
    assert len(geo.subtree("339900")) == len(geo.areas())
    assert [c.code for c in geo.children("339900")] == ["339902", "339903", "339904", "339921"]


def test_is_within_follows_the_tree() -> None:
    grid = GRIDS[0]
    assert geo.is_within(grid.code, grid.code)
    assert geo.is_within(grid.code, "339900")
    assert geo.is_within(grid.code, str(grid.parent))
    assert not geo.is_within("339902", "339903")
    assert not geo.is_within("339900", "339902")


def test_unknown_codes_raise_a_key_error_naming_the_code() -> None:
    with pytest.raises(UnknownArea, match="339999"):
        geo.area("339999")
    with pytest.raises(KeyError):
        geo.ancestors("339902999")
    with pytest.raises(KeyError):
        geo.is_within("339902", "339999")


# ---- points -------------------------------------------------------------------------------


def test_point_in_polygon_half_open_edges() -> None:
    square = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
    assert point_in_polygon(0.5, 0.5, square)
    assert point_in_polygon(0.0, 0.5, square)  # the west edge belongs to the square
    assert not point_in_polygon(1.0, 0.5, square)  # the east edge belongs to the neighbour
    assert point_in_polygon(0.5, 0.0, square)
    assert not point_in_polygon(0.5, 1.0, square)
    assert not point_in_polygon(1.5, 0.5, square)


def test_every_grid_is_found_at_its_centroid() -> None:
    assert len(GRIDS) > 500  # the demo city: 624 base and special grids
    for g in GRIDS:
        lon = sum(p[0] for p in g.polygon) / 4
        lat = sum(p[1] for p in g.polygon) / 4
        assert geo.grid_for_point(lon, lat) == g


def test_shared_vertices_and_edges_belong_to_exactly_one_grid() -> None:
    vertices = {p for g in GRIDS for p in g.polygon}
    assert vertices
    for lon, lat in vertices:
        if MIN_LON <= lon < MAX_LON and MIN_LAT <= lat < MAX_LAT:
            found = geo.grid_for_point(lon, lat)
            assert found is not None
            assert _containing(lon, lat) == [found.code]


def test_the_index_is_not_a_linear_scan() -> None:
    index = TREE._index
    assert max(len(cell) for cell in index.cells) <= 12


@settings(max_examples=300, deadline=None)
@given(
    lon=st.floats(min_value=MIN_LON, max_value=MAX_LON, exclude_max=True),
    lat=st.floats(min_value=MIN_LAT, max_value=MAX_LAT, exclude_max=True),
)
def test_grids_tile_the_city_without_gaps_or_overlaps(lon: float, lat: float) -> None:
    found = geo.grid_for_point(lon, lat)
    assert found is not None
    assert _containing(lon, lat) == [found.code]


@pytest.mark.parametrize(
    ("lon", "lat"), [(120.0, 29.8), (121.0, 29.8), (120.5, 29.0), (120.5, 31.0), (0.0, 0.0)]
)
def test_points_outside_the_city_have_no_grid(lon: float, lat: float) -> None:
    assert geo.grid_for_point(lon, lat) is None


# ---- addresses ----------------------------------------------------------------------------


def _multi_grid_road() -> tuple[str, list[geo.Area]]:
    owners: dict[str, list[geo.Area]] = {}
    for g in GRIDS:
        for s in g.roads:
            owners.setdefault(s.road_zh, []).append(g)
    road = next(r for r, gs in owners.items() if len(gs) >= 2)
    return road, owners[road]


def test_full_address_with_road_and_number_finds_the_grid() -> None:
    road, grids = _multi_grid_road()
    second = grids[1]
    seg = next(s for s in second.roads if s.road_zh == road)
    address = f"{second.address_prefix}{road}{seg.first_number}号3幢2单元"
    match = geo.locate_address(address)
    assert match is not None
    assert match.grid == second
    assert match.via == "road_number"
    assert geo.grid_for_address(address) == second


def test_address_may_skip_tiers_and_use_full_width_digits_and_spaces() -> None:
    road, grids = _multi_grid_road()
    first = grids[0]
    seg = next(s for s in first.roads if s.road_zh == road)
    town = geo.area(first.code[:9])
    village = geo.area(first.code[:12])
    number = str(seg.last_number).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    address = f"浙江省 枫桥市 {town.name_zh} {village.name_zh} {road} {number}号"
    assert geo.grid_for_address(address) == first


def test_road_without_number_across_several_grids_pins_the_village() -> None:
    road, grids = _multi_grid_road()
    match = geo.locate_address(f"{road}附近")
    assert match is not None
    assert match.grid is None
    assert match.area.code == grids[0].parent


def test_road_with_a_number_outside_every_segment_still_pins_the_village() -> None:
    road, grids = _multi_grid_road()
    match = geo.locate_address(f"{road}99999号")
    assert match is not None
    assert match.grid is None
    assert match.area.code == grids[0].parent


def test_area_names_alone_give_the_deepest_area_and_no_grid() -> None:
    village = _first(Tier.VILLAGE, "village")
    match = geo.locate_address(village.address_prefix + "村口大樟树下")
    assert match is not None
    assert match.area == village
    assert match.grid is None
    assert match.via == "area"
    town = geo.area(village.code[:9])
    assert geo.locate_address(f"{town.name_zh}政府门口") is not None
    assert geo.grid_for_address(town.address_prefix) is None


def test_a_facility_name_finds_its_special_grid() -> None:
    special = next(g for g in GRIDS if g.kind == "special")
    assert geo.grid_for_address(f"{special.facility_zh}东门") == special
    match = geo.locate_address(f"{special.address_prefix}{special.facility_zh}")
    assert match is not None
    assert match.via == "facility"


def test_a_road_in_another_town_than_the_one_named_is_not_trusted() -> None:
    road, grids = _multi_grid_road()
    own_town = grids[0].code[:9]
    other_town = next(a for a in geo.areas().values() if a.tier is Tier.TOWN and a.code != own_town)
    match = geo.locate_address(f"{other_town.address_prefix}{road}1号")
    assert match is not None
    assert match.area == other_town
    assert match.grid is None


def test_unrecognised_addresses_give_nothing() -> None:
    assert geo.locate_address("火星基地一号") is None
    assert geo.grid_for_address("") is None
