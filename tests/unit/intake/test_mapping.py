"""The declarative field-mapping engine: paths, fallbacks, joins, value maps, conversions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.errors import PayloadError
from services.intake.mapping import (
    FieldMapping,
    apply_mapping,
    derive_title,
    is_empty,
    leftovers,
    lookup,
    parse_mapping,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def mapping(spec: dict[str, Any], defaults: dict[str, Any] | None = None) -> FieldMapping:
    """A ticket mapping from its data form."""
    return parse_mapping(spec, model=TicketDraft, where="test", defaults=defaults)


def apply(payload: dict[str, Any], spec: dict[str, Any], **kw: Any) -> TicketDraft:
    """Map a payload through ``spec`` into a ticket draft."""
    return apply_mapping(
        payload, mapping(spec), model=TicketDraft, channel_code="test-channel", tz=SHANGHAI, **kw
    )


def test_lookup_prefers_flat_keys_then_dotted_paths_and_list_indices() -> None:
    payload = {"a.b": 1, "a": {"b": 2, "c": [{"d": 3}]}}
    assert lookup(payload, "a.b") == 1
    assert lookup(payload, "a.c.0.d") == 3
    assert is_empty(lookup(payload, "a.c.5.d"))
    assert is_empty(lookup(payload, "a.x"))


def test_nested_paths_and_leftovers_in_extra() -> None:
    draft = apply(
        {
            "reporter": {"mobile": "13812345678", "wechat": "wx1"},
            "desc": "井盖丢了。请处理",
            "k": 1,
        },
        {"citizen_phone": "reporter.mobile", "content": "desc"},
    )
    assert draft.citizen_phone == "13812345678"
    assert draft.title == "井盖丢了"
    assert draft.extra == {"reporter": {"wechat": "wx1"}, "k": 1}


def test_first_present_path_wins() -> None:
    spec = {"content": "c", "address": ["addr", "poi.name"]}
    assert apply({"c": "x", "addr": "", "poi": {"name": "和睦新村"}}, spec).address == "和睦新村"
    assert apply({"c": "x", "addr": "文三路", "poi": {"name": "和睦"}}, spec).address == "文三路"


def test_join_concatenates_present_values() -> None:
    spec = {"content": {"paths": ["a", "b", "c"], "join": "\n"}}
    assert apply({"a": "第一段", "b": "", "c": "第三段"}, spec).content == "第一段\n第三段"


def test_value_maps_translate_codes_and_unknown_values_name_the_field() -> None:
    spec = {"content": "c", "urgency": {"path": "lvl", "values": {1: "normal", "2": "urgent"}}}
    assert apply({"c": "x", "lvl": 2}, spec).urgency == "urgent"
    assert apply({"c": "x", "lvl": "1"}, spec).urgency == "normal"
    with pytest.raises(PayloadError) as caught:
        apply({"c": "x", "lvl": "9"}, spec)
    assert caught.value.field == "lvl"
    assert "'9'" in caught.value.message and "1, 2" in caught.value.message


def test_value_map_default_covers_only_a_missing_value() -> None:
    spec = {
        "content": "c",
        "urgency": {"path": "lvl", "values": {"2": "urgent"}, "default": "urgent"},
    }
    assert apply({"c": "x"}, spec).urgency == "urgent"
    assert apply({"c": "x", "lvl": ""}, spec).urgency == "urgent"
    with pytest.raises(PayloadError):
        apply({"c": "x", "lvl": "7"}, spec)


def test_boolean_values_map_by_their_json_spelling() -> None:
    spec = {
        "content": "c",
        "urgency": {"path": "leak", "values": {True: "critical", False: "normal"}},
    }
    assert apply({"c": "x", "leak": True}, spec).urgency == "critical"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("是", True), ("否", False), ("Y", True), (0, False), ("true", True), (True, True)],
)
def test_booleans(raw: Any, expected: bool) -> None:
    assert (
        apply({"c": "x", "e": raw}, {"content": "c", "is_enterprise": "e"}).is_enterprise
        is expected
    )


def test_a_bad_boolean_names_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        apply({"c": "x", "e": "maybe"}, {"content": "c", "is_enterprise": "e"})
    assert caught.value.field == "e"


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        ("2026-11-03 09:14:52", None, datetime(2026, 11, 3, 9, 14, 52, tzinfo=SHANGHAI)),
        ("2026/11/03 09:14", None, datetime(2026, 11, 3, 9, 14, tzinfo=SHANGHAI)),
        ("2026-11-03T01:14:52Z", None, datetime(2026, 11, 3, 1, 14, 52, tzinfo=UTC)),
        ("20261103091452", "%Y%m%d%H%M%S", datetime(2026, 11, 3, 9, 14, 52, tzinfo=SHANGHAI)),
        (1794268800, None, datetime(2026, 11, 10, 0, 0, tzinfo=UTC)),
        (1794268800000, None, datetime(2026, 11, 10, 0, 0, tzinfo=UTC)),
        ("1794268800", None, datetime(2026, 11, 10, 0, 0, tzinfo=UTC)),
    ],
)
def test_times_become_aware(raw: Any, fmt: str | None, expected: datetime) -> None:
    rule: Any = {"path": "t", "format": fmt} if fmt else "t"
    received = apply({"c": "x", "t": raw}, {"content": "c", "received_at": rule}).received_at
    assert received == expected
    assert received is not None and received.tzinfo is not None


def test_a_time_in_the_wrong_format_names_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        apply(
            {"c": "x", "t": "03/11/2026"},
            {"content": "c", "received_at": {"path": "t", "format": "%Y-%m-%d"}},
        )
    assert caught.value.field == "t"
    assert "%Y-%m-%d" in caught.value.message


def test_spreadsheet_numbers_become_text_and_text_numbers_become_floats() -> None:
    draft = apply(
        {"c": "x", "p": 13812345678.0, "id": 20261103001, "lng": "120.13", "lat": 30},
        {
            "content": "c",
            "citizen_phone": "p",
            "external_id": "id",
            "longitude": "lng",
            "latitude": "lat",
        },
    )
    assert draft.citizen_phone == "13812345678"
    assert draft.external_id == "20261103001"
    assert (draft.longitude, draft.latitude) == (120.13, 30.0)


def test_a_non_number_coordinate_names_the_field() -> None:
    with pytest.raises(PayloadError) as caught:
        apply({"c": "x", "x": "east", "y": 30}, {"content": "c", "longitude": "x", "latitude": "y"})
    assert caught.value.field == "x"


def test_model_validation_errors_name_the_channel_field() -> None:
    spec = {"content": "c", "citizen_phone": "caller.tel"}
    with pytest.raises(PayloadError) as caught:
        apply({"c": "x", "caller": {"tel": "call me"}}, spec)
    assert caught.value.field == "caller.tel"


def test_missing_text_names_the_content_field() -> None:
    with pytest.raises(PayloadError) as caught:
        apply({"t": ""}, {"title": "t", "content": "body.text"})
    assert caught.value.field == "body.text"


def test_title_alone_becomes_the_content_too() -> None:
    draft = apply({"t": "路灯不亮"}, {"title": "t", "content": "c"})
    assert draft.content == draft.title == "路灯不亮"


def test_extra_targets_rename_channel_values() -> None:
    draft = apply({"c": "x", "caseType": "噪声"}, {"content": "c", "extra.case_type": "caseType"})
    assert draft.extra == {"case_type": "噪声"}


def test_defaults_and_presets() -> None:
    spec = mapping({"content": "c"}, defaults={"urgency": "urgent"})
    draft = apply_mapping(
        {"c": "x"},
        spec,
        model=TicketDraft,
        channel_code="test-channel",
        tz=SHANGHAI,
        preset={"is_enterprise": True},
    )
    assert draft.urgency == "urgent"
    assert draft.is_enterprise is True


def test_leftovers_are_json_ready() -> None:
    left = leftovers({"a": datetime(2026, 1, 1), "b": {"c": 1, "d": ""}, "e": None}, ["b.c"])
    assert left == {"a": "2026-01-01T00:00:00"}


def test_callback_mapping() -> None:
    spec = parse_mapping(
        {
            "ticket_id": "gdbh",
            "resolved": {"path": "sfjj", "values": {"1": True, "0": False}},
            "satisfaction": {"path": "myd", "values": {"1": "satisfied", "3": "dissatisfied"}},
        },
        model=CallbackDraft,
        where="test",
    )
    made = apply_mapping(
        {"gdbh": "20261103-0000871", "sfjj": 0, "myd": 3},
        spec,
        model=CallbackDraft,
        channel_code="callback-12345-revisit",
        tz=SHANGHAI,
    )
    assert (made.resolved, made.satisfaction) == (False, "dissatisfied")


@pytest.mark.parametrize(
    "spec",
    [
        {"colour": "c"},
        {"content": ""},
        {"content": {"path": "a", "paths": ["b"]}},
        {"content": {"path": "a", "frobnicate": 1}},
        {"content": {"path": "a", "values": []}},
        {"extra.": "a"},
    ],
)
def test_malformed_mappings_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        mapping(spec)


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("井盖丢了。请尽快处理", "井盖丢了"),
        ("怎么办理居住证？需要什么材料", "怎么办理居住证？"),
        ("\n  路灯  不亮\n第二行", "路灯 不亮"),
        ("一" * 40, "一" * 29 + "…"),
    ],
)
def test_derive_title(text: str, title: str) -> None:
    assert derive_title(text) == title
