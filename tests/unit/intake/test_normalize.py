"""Normalization: the public view carries no clear-text numbers; derived fields are right."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.adapters import adapt
from services.intake.canonical import TicketDraft
from services.intake.channels import channels, get_channel, time_limit_profile_for
from services.intake.classifier import Classification
from services.intake.normalize import (
    GroupMemo,
    Scrubbed,
    normalize,
    normalize_many,
    raised_urgency,
    scrub_public,
    scrub_public_columns,
)
from shared import pii
from shared.pii import citizen_hash

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
SALT = "s3cret"
PHONE = get_channel("hotline-12345-phone")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "channels"
EXPECTED = yaml.safe_load((FIXTURES / "expected.yaml").read_text("utf-8"))
DIGIT_RUN = re.compile(r"\d(?:[ \-]?\d){6,}")


def draft(**fields: Any) -> TicketDraft:
    """A 12345 phone draft with some fields replaced."""
    base: dict[str, Any] = {
        "channel_code": "hotline-12345-phone",
        "title": "路灯不亮",
        "content": "小区门口路灯坏了，回电13957123468",
        "citizen_name": "王建国",
        "citizen_phone": "139-5712-3468",
        "citizen_id_number": "330106198503120415",
        "address": "翠苑三区（电话0571-87654321）",
        "extra": {"caller_backup": "13812345678"},
    }
    return TicketDraft.model_validate({**base, **fields})


def test_public_view_is_masked_and_store_view_is_clear() -> None:
    normalized = normalize(draft(), channel=PHONE, salt=SALT, now=NOW)
    public = json.dumps(normalized.public_fields(), ensure_ascii=False, default=str)
    for clear in ("13957123468", "139-5712-3468", "330106198503120415", "87654321", "13812345678"):
        assert clear not in public
    assert normalized.citizen_phone_masked == "139****3468"
    assert normalized.citizen_display_name == "王**"
    assert normalized.citizen_id_masked == "330106********0415"
    assert normalized.public_content.endswith("回电139****3468")
    assert normalized.public_extra == {"caller_backup": "138****5678"}
    assert normalized.citizen_hash == citizen_hash(phone="13957123468", salt=SALT)
    row = normalized.store_row()
    assert (row["citizen_phone"], row["citizen_id_number"]) == (
        "139-5712-3468",
        "330106198503120415",
    )
    assert "13957123468" in row["content"]


def test_received_time_defaults_to_now_and_naive_now_is_refused() -> None:
    assert normalize(draft(), channel=PHONE, salt=SALT, now=NOW).received_at == NOW
    stamped = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    assert (
        normalize(draft(received_at=stamped), channel=PHONE, salt=SALT, now=NOW).received_at
        == stamped
    )
    with pytest.raises(ValueError):
        normalize(draft(), channel=PHONE, salt=SALT, now=datetime(2026, 12, 1))


def test_channel_category_wins_over_the_classifier() -> None:
    def never(title: str, content: str) -> Classification:
        raise AssertionError("the classifier must not run")

    normalized = normalize(
        draft(category_code="0104"), channel=PHONE, salt=SALT, now=NOW, classify=never
    )
    assert (normalized.category_code, normalized.category_source) == ("0104", "channel")
    assert normalized.classification is None


def test_classifier_fills_a_missing_category() -> None:
    normalized = normalize(draft(), channel=PHONE, salt=SALT, now=NOW)
    assert (normalized.category_code, normalized.category_source) == ("0102", "classifier")
    assert normalized.classification is not None and normalized.classification.code == "0102"


def test_grid_is_located_only_when_the_channel_did_not_give_one() -> None:
    calls: list[tuple[Any, ...]] = []

    def locate(address: str | None, lon: float | None, lat: float | None) -> str | None:
        calls.append((address, lon, lat))
        return "339902003007002"

    located = normalize(
        draft(longitude=120.1, latitude=30.2), channel=PHONE, salt=SALT, now=NOW, locate=locate
    )
    assert located.grid_code == "339902003007002"
    assert calls == [("翠苑三区（电话0571-87654321）", 120.1, 30.2)]
    given = normalize(
        draft(grid_code="339902001001001"), channel=PHONE, salt=SALT, now=NOW, locate=locate
    )
    assert given.grid_code == "339902001001001"
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("code", "fields", "profile"),
    [
        ("hotline-12345-phone", {}, "standard"),
        ("hotline-12345-phone", {"is_enterprise": True}, "enterprise_2115"),
        ("hotline-12345-phone", {"urgency": "critical"}, "urgent"),
        ("hotline-12345-enterprise", {}, "enterprise_2115"),
        ("grid-whistle", {"urgency": "critical"}, "whistle"),
        ("police-110-linkage", {}, "urgent"),
    ],
)
def test_time_limit_profile(code: str, fields: dict[str, Any], profile: str) -> None:
    channel = get_channel(code)
    normalized = normalize(draft(channel_code=code, **fields), channel=channel, salt=SALT, now=NOW)
    assert normalized.time_limit_profile == profile
    assert normalized.public_fields()["time_limit_profile"] == profile


def test_hazards_raise_urgency() -> None:
    assert raised_urgency("normal", "楼道里有很浓的煤气味") == "urgent"
    assert raised_urgency("critical", "楼道里有很浓的煤气味") == "critical"
    assert raised_urgency("normal", "路灯不亮") == "normal"
    gas = normalize(draft(content="楼道里有很浓的煤气味"), channel=PHONE, salt=SALT, now=NOW)
    assert (gas.urgency, gas.urgency_raised) == ("urgent", True)


def test_a_draft_from_another_channel_is_refused() -> None:
    with pytest.raises(ValueError):
        normalize(draft(), channel=get_channel("mayor-mailbox"), salt=SALT, now=NOW)


@pytest.mark.parametrize("channel", channels(), ids=lambda c: c.code)
def test_no_clear_text_number_leaves_intake_for_any_channel_fixture(channel: Any) -> None:
    body = next(p for p in FIXTURES.iterdir() if p.stem == channel.code).read_bytes()
    output = adapt(channel, body, content_type=EXPECTED[channel.code]["content_type"])
    assert output.drafts, f"the {channel.code} fixture gave no appeal"
    for item in output.drafts:
        normalized = normalize(item, channel=channel, salt=SALT, now=NOW)
        fields = {**normalized.public_fields(), "extra": normalized.public_extra}
        # SHA-256 digests and the citizen hash are hex: digit runs there are not numbers.
        fields.pop("attachments")
        fields["citizen"] = {**fields["citizen"], "citizen_hash": None}
        public = json.dumps(fields, ensure_ascii=False, default=str)
        secrets = [item.citizen_phone, item.citizen_id_number]
        for secret in filter(None, secrets):
            digits = re.sub(r"\D", "", secret)
            assert digits not in re.sub(r"[^\d*]", "", public), channel.code
        for run in DIGIT_RUN.findall(public):
            compact = re.sub(r"\D", "", run)
            assert not re.fullmatch(r"(?:86)?1[3-9]\d{9}", compact), (channel.code, run)


def test_public_fields_are_scrubbed_whatever_their_name() -> None:
    digest = "ab013812345678" + "c" * 50  # a hex digest holding a phone-shaped run of digits
    public = scrub_public(
        {
            "ticket_id": "20261101-0103123",  # an ID-number-shaped ticket number, kept
            "location": {"grid_code": "339902001001001", "area_code": "339902001001"},
            "citizen": {"citizen_hash": digest},
            "attachments": ({"sha256": digest, "content_type": "text/13811110001"},),
            "a_field_added_later": "回电13811110001",
            "repeat_of": "13811110001",  # not in its own shape: scrubbed like free text
            "grid_code": "13811110001",
            "received_at": NOW,
            "repeat_count": 3,
        }
    )
    assert public["ticket_id"] == "20261101-0103123"
    assert public["location"] == {"grid_code": "339902001001001", "area_code": "339902001001"}
    assert public["citizen"]["citizen_hash"] == digest
    assert public["attachments"][0] == {"sha256": digest, "content_type": "text/138****0001"}
    assert public["a_field_added_later"] == "回电138****0001"
    assert public["repeat_of"] == public["grid_code"] == "138****0001"
    assert (public["received_at"], public["repeat_count"]) == (NOW, 3)


# --- a group's shared memo gives what each draft alone gives ---------------------------------

_PHONES = st.sampled_from(
    ["139-5712-3468", "13957123468", "+86 139 5712 3468", "0571-87654321", "12", "", None]
)
_NAMES = st.sampled_from(["王建国", " 张 ", "李", "   ", None])
_TEXTS = st.sampled_from(
    [
        "路灯不亮",
        "回电13957123468",
        "身份证330106198503120415",
        "邮箱 a.b@163.com 燃气泄漏",
        "翠苑三区（电话0571-87654321）",
        "第3栋",
    ]
)


@st.composite
def _drafts(draw: st.DrawFn) -> TicketDraft:
    fields: dict[str, Any] = {
        "title": draw(_TEXTS),
        "content": draw(_TEXTS) + draw(st.text(max_size=8)).replace("\x00", ""),
        "citizen_name": draw(_NAMES),
        "citizen_phone": draw(_PHONES),
        "citizen_id_number": draw(st.sampled_from(["330106198503120415", "33010685031204", None])),
        "address": draw(st.one_of(st.none(), _TEXTS)),
    }
    try:
        return draft(**fields)
    except ValueError:
        return draft()


@settings(max_examples=200, deadline=None)
@given(st.lists(_drafts(), min_size=1, max_size=12))
def test_a_group_memo_normalizes_each_draft_as_it_would_alone(drafts: list[TicketDraft]) -> None:
    memo = GroupMemo()
    for d in drafts:
        shared = normalize(d, channel=PHONE, salt=SALT, now=NOW, memo=memo)
        assert shared == normalize(d, channel=PHONE, salt=SALT, now=NOW)
        # Each value as its own definition gives it (not only as another memo would).
        assert shared.citizen_hash == pii.citizen_hash(
            phone=d.citizen_phone, id_number=d.citizen_id_number, salt=SALT
        )
        assert shared.citizen_phone_masked == pii.mask_phone(d.citizen_phone)
        assert shared.citizen_display_name == pii.mask_name(d.citizen_name)
        assert shared.public_title == pii.scrub_text(d.title)
        assert shared.public_content == pii.scrub_text(d.content)
        assert shared.public_address == (pii.scrub_text(d.address) if d.address else None)
        for name in ("citizen_display_name", "public_title", "public_content", "public_address"):
            value = getattr(shared, name)
            assert value is None or type(value) is Scrubbed


_MANY_CHANNELS = [
    "hotline-12345-phone",
    "hotline-12345-enterprise",
    "grid-whistle",
    "police-110-linkage",
]


@st.composite
def _unit_items(draw: st.DrawFn) -> tuple[Any, TicketDraft, str | None, bool]:
    """A (channel, draft) of one of several channels, the grid its place would be located in,
    and whether the group classified it already."""
    code = draw(st.sampled_from(_MANY_CHANNELS))
    fields: dict[str, Any] = {
        "channel_code": code,
        "title": draw(st.sampled_from(["路灯不亮", "燃气泄漏", "噪音扰民", "漏水"])),
        "content": draw(_TEXTS) + draw(st.sampled_from(["", "，闻到煤气味", "有人被困"])),
        "citizen_name": draw(_NAMES),
        "citizen_phone": draw(_PHONES),
        "citizen_id_number": draw(st.sampled_from(["330106198503120415", "33010685031204", None])),
        "citizen_email": draw(st.sampled_from([None, "zhangsan@163.com"])),
        "address": draw(st.one_of(st.none(), _TEXTS)),
        "grid_code": draw(st.sampled_from([None, None, "339902001001001"])),
        "category_code": draw(st.sampled_from([None, "0104"])),
        "urgency": draw(st.sampled_from(["normal", "normal", "urgent", "critical"])),
        "is_enterprise": draw(st.booleans()),
        "received_at": draw(st.sampled_from([None, datetime(2026, 11, 3, 1, 0, tzinfo=UTC)])),
    }
    try:
        made = draft(**fields)
    except ValueError:
        made = draft(channel_code=code)
    located = draw(st.sampled_from([None, "339902003007002"]))
    return get_channel(code), made, located, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(_unit_items(), min_size=1, max_size=10))
def test_normalize_many_is_normalize_of_each_draft(
    items: list[tuple[Any, TicketDraft, str | None, bool]],
) -> None:
    given_class = Classification("0302", "03", 0.9, 0.9)
    classified = {id(d): given_class for _, d, _, pre in items if pre}
    many = normalize_many(
        [(c, d) for c, d, _, _ in items],
        grid_codes=[g for _, _, g, _ in items],
        salt=SALT,
        now=NOW,
        classifications=classified,
        memo=GroupMemo(),
    )
    alone = [
        normalize(
            d,
            channel=c,
            salt=SALT,
            now=NOW,
            locate=lambda _a, _lon, _lat, g=g: g,
            classification=classified.get(id(d)),
        )
        for c, d, g, _ in items
    ]
    assert many == alone
    for (channel, d, _, _), one in zip(items, many, strict=True):
        # Each derived value as its own definition gives it, not only as ``normalize`` does.
        assert one.urgency == raised_urgency(d.urgency, f"{d.title}\n{d.content}")
        assert one.time_limit_profile == time_limit_profile_for(
            channel,
            is_enterprise=d.is_enterprise or channel.is_enterprise_channel,
            urgency=one.urgency,
        )
        for name in ("citizen_phone_masked", "citizen_id_masked", "citizen_email_masked"):
            value = getattr(one, name)
            assert value is None or type(value) is Scrubbed


def test_normalize_many_refuses_a_draft_of_another_channel_and_a_naive_now() -> None:
    mailbox = get_channel("mayor-mailbox")
    with pytest.raises(ValueError):
        normalize_many([(mailbox, draft())], grid_codes=[None], salt=SALT, now=NOW)
    with pytest.raises(ValueError):
        normalize_many(
            [(PHONE, draft())], grid_codes=[None], salt=SALT, now=NOW.replace(tzinfo=None)
        )


_PUBLIC_KEYS = st.sampled_from(
    ["ticket_id", "channel", "grid_code", "area_code", "category_code", "citizen_hash", "note"]
)
_PUBLIC_VALUES = st.one_of(
    _TEXTS,
    st.sampled_from(
        [
            "20261205-0000123",
            "hotline-12345-phone",
            "0102",
            "standard",
            "a" * 64,
            "13812345678",
            "339902001001004",  # a grid's code: kept as a grid or area code, masked elsewhere
        ]
    ),
    st.text(max_size=12),
)
_PUBLIC = st.recursive(
    st.one_of(st.none(), st.integers(), _PUBLIC_VALUES),
    lambda inner: st.one_of(
        st.dictionaries(_PUBLIC_KEYS, inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_PUBLIC_KEYS, _PUBLIC, max_size=6), min_size=1, max_size=6))
def test_scrub_public_with_a_group_memo_is_scrub_public(values: list[dict[str, Any]]) -> None:
    memo = GroupMemo()
    for value in values:
        assert scrub_public(value, memo=memo) == scrub_public(value)


def _typed(value: Any) -> Any:
    """A value with the type of each part beside it (``Scrubbed`` and ``str`` compare equal)."""
    if isinstance(value, dict):
        return (dict, [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, tuple | list):
        return (type(value), [_typed(v) for v in value])
    return (type(value), value)


_COLUMN_VALUES = st.one_of(
    _PUBLIC,
    _PUBLIC_VALUES.map(Scrubbed),
    st.sampled_from([(), True, 1.5, datetime(2026, 12, 6, tzinfo=UTC)]),
)


@st.composite
def _rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Dicts with the same keys in the same order, each key's values all plain strings or of
    any kind."""
    keys = draw(st.lists(_PUBLIC_KEYS, unique=True, min_size=1, max_size=6))
    kinds = {k: draw(st.sampled_from([_PUBLIC_VALUES, _COLUMN_VALUES])) for k in keys}
    return draw(
        st.lists(
            st.fixed_dictionaries(kinds).map(lambda d: {k: d[k] for k in keys}),
            min_size=1,
            max_size=8,
        )
    )


@settings(max_examples=300, deadline=None)
@given(_rows(), st.booleans())
def test_scrub_public_by_columns_is_scrub_public_of_each_row(
    rows: list[dict[str, Any]], shared_memo: bool
) -> None:
    """Columns of strings, ``Scrubbed`` text, textless values, parts and a mix of them, with
    and without a group memo (one used before by rows of its own)."""
    memo = GroupMemo() if shared_memo else None
    if memo is not None:
        scrub_public({"channel": "13812345678", "note": "13812345678"}, memo=memo)
    keys = list(rows[0])
    columns = scrub_public_columns({k: [r[k] for r in rows] for k in keys}, memo=memo)
    assert list(columns) == keys
    by_rows = [dict(zip(keys, v, strict=True)) for v in zip(*columns.values(), strict=True)]
    assert [_typed(r) for r in by_rows] == [_typed(scrub_public(r)) for r in rows]
