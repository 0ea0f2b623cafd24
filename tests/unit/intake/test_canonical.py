"""The canonical draft models: what they accept, what they refuse, and that errors name fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.intake.canonical import (
    CLOCK_SKEW,
    AttachmentMeta,
    CallbackDraft,
    TicketDraft,
    clean_ticket_draft,
    draft_of_ticket_in,
    without_control_characters,
)
from services.intake.models import TicketIn


def draft(**fields: Any) -> TicketDraft:
    """A valid draft with some fields replaced."""
    base: dict[str, Any] = {
        "channel_code": "hotline-12345-phone",
        "title": "路灯不亮",
        "content": "路灯坏了",
    }
    return TicketDraft.model_validate({**base, **fields})


def error_fields(exc: ValidationError) -> set[str]:
    """The top-level field names a validation error points at."""
    return {str(e["loc"][0]) for e in exc.errors() if e["loc"]}


def test_minimal_draft_has_safe_defaults() -> None:
    made = draft()
    assert made.urgency == "normal"
    assert made.is_enterprise is False
    assert made.attachments == ()
    assert made.extra == {}
    assert made.received_at is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel_code", "Hotline 12345"),
        ("title", "   "),
        ("content", ""),
        ("title", "长" * 201),
        ("urgency", "very"),
        ("citizen_phone", "call me"),
        ("citizen_phone", "12"),
        ("citizen_id_number", "3301061990"),
        ("citizen_email", "not-an-address"),
        ("longitude", 181.0),
        ("category_code", "9999"),
        ("received_at", datetime(2026, 11, 3, 9, 0)),  # naive: refused
    ],
)
def test_invalid_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    extra = {"latitude": 30.0} if field == "longitude" else {}
    with pytest.raises(ValidationError) as caught:
        draft(**{field: value}, **extra)
    assert field in error_fields(caught.value)


def test_an_appeal_received_in_the_future_is_refused() -> None:
    later = datetime.now(UTC) + CLOCK_SKEW + timedelta(minutes=5)
    with pytest.raises(ValidationError) as caught:
        draft(received_at=later)
    assert error_fields(caught.value) == {"received_at"}
    assert "in the future" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        CallbackDraft(
            channel_code="callback-12345-revisit",
            ticket_id="20261103-0000871",
            resolved=True,
            satisfaction="satisfied",
            received_at=later,
        )
    assert error_fields(caught.value) == {"received_at"}


def test_a_channel_clock_slightly_ahead_is_tolerated() -> None:
    ahead = datetime.now(UTC) + CLOCK_SKEW - timedelta(minutes=1)
    assert draft(received_at=ahead).received_at == ahead


def test_control_characters_are_dropped_everywhere() -> None:
    made = draft(title="路灯\x00不亮", content="灯坏了\x07\n三天", extra={"备注\x01": ["a\x00b"]})
    assert (made.title, made.content, made.extra) == ("路灯不亮", "灯坏了\n三天", {"备注": ["ab"]})
    with pytest.raises(ValidationError) as caught:
        draft(title="\x00\x00")  # nothing left: as if no title was sent
    assert error_fields(caught.value) == {"title"}
    meta = AttachmentMeta(filename="a\x00.jpg", content_type="image/jpeg", size=1, sha256="0" * 64)
    assert meta.filename == "a.jpg"


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        draft(colour="blue")
    assert "colour" in error_fields(caught.value)


def test_blank_optionals_count_as_missing() -> None:
    made = draft(citizen_phone="", address="  ", category_code="", external_id="")
    assert made.citizen_phone is None
    assert made.address is None
    assert made.category_code is None
    assert made.external_id is None


def test_coordinates_come_in_pairs() -> None:
    with pytest.raises(ValidationError) as caught:
        draft(longitude=120.1)
    assert "latitude" in error_fields(caught.value)
    assert "longitude is" not in str(caught.value)
    with pytest.raises(ValidationError, match="longitude is missing"):
        draft(latitude=30.2)
    assert draft(longitude=120.1, latitude=30.2).latitude == 30.2


def test_id_number_is_compacted_with_upper_case_x() -> None:
    assert draft(citizen_id_number="330106 19550430 081x").citizen_id_number == "33010619550430081X"
    assert draft(citizen_id_number="330106550430081").citizen_id_number == "330106550430081"


def test_phone_keeps_its_written_form_and_allows_an_extension() -> None:
    assert draft(citizen_phone="0571-8765 4321 转 806").citizen_phone == "0571-8765 4321 转 806"
    assert draft(citizen_phone="+86 138 1234 5678").citizen_phone == "+86 138 1234 5678"


def test_naming_an_enterprise_makes_the_appeal_an_enterprise_appeal() -> None:
    assert draft(enterprise_name="临江云帆科技有限公司").is_enterprise is True
    assert draft(enterprise_name="").is_enterprise is False


def test_taxonomy_codes_at_both_levels_are_accepted() -> None:
    assert draft(category_code="01").category_code == "01"
    assert draft(category_code="0102").category_code == "0102"


def test_drafts_are_frozen() -> None:
    made = draft()
    with pytest.raises(ValidationError):
        made.title = "changed"  # type: ignore[misc]


def test_attachment_meta_requires_a_sha256() -> None:
    ok = AttachmentMeta(filename="a.jpg", content_type="image/jpeg", size=3, sha256="0" * 64)
    assert ok.size == 3
    with pytest.raises(ValidationError) as caught:
        AttachmentMeta(filename="a.jpg", content_type="image/jpeg", size=3, sha256="abc")
    assert "sha256" in error_fields(caught.value)
    with pytest.raises(ValidationError):
        AttachmentMeta(filename="a.jpg", content_type="jpeg", size=-1, sha256="0" * 64)


def test_callback_draft() -> None:
    made = CallbackDraft(
        channel_code="callback-12345-revisit",
        ticket_id="20261103-0000871",
        resolved=False,
        satisfaction="dissatisfied",
        comment="",
        received_at=datetime(2025, 12, 1, tzinfo=UTC),
    )
    assert made.comment is None
    with pytest.raises(ValidationError) as caught:
        CallbackDraft(
            channel_code="callback-12345-revisit",
            ticket_id="x",
            resolved=True,
            satisfaction="happy",  # type: ignore[arg-type]
        )
    assert "satisfaction" in error_fields(caught.value)


_CONTROLS = "".join(chr(c) for c in [*range(0x20), 0x7F])


def _cleaned(value: Any) -> Any:
    """The definition: every control character but tab, line feed and return removed."""
    keep = "\t\n\r"
    if isinstance(value, str):
        return "".join(c for c in value if c in keep or c not in _CONTROLS)
    if isinstance(value, dict):
        return {_cleaned(k): _cleaned(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cleaned(v) for v in value)
    return value


_texts = st.text(alphabet=st.sampled_from(["a", "路", " ", "\n", "\t", "\x00", "\x1f", "\x7f"]))
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(_texts, _values, max_size=6))
def test_control_characters_are_removed_from_every_string_of_a_payload(data: Any) -> None:
    assert without_control_characters(data) == _cleaned(data)


# ``clean_ticket_draft``: the hot route's shortcut must give what ``TicketDraft`` gives, or
# nothing (and the caller validates the ordinary way).
_TEXT = st.text(alphabet=st.sampled_from(["a", "路", " ", "\u3000", "\x00", "\x07", "\t", "1"]))
_DRAFT_FIELDS = st.fixed_dictionaries(
    {
        "channel_code": st.sampled_from(["hotline-12345-phone", "Bad Code"]),
        "title": _TEXT,
        "content": _TEXT,
    },
    optional={
        "external_id": st.none() | _TEXT,
        "citizen_name": st.none() | _TEXT,
        "citizen_phone": st.none() | st.sampled_from(["13812345678", "12", " 0571-87654321 "]),
        "citizen_id_number": st.none() | st.sampled_from(["330106198503120415", "1"]),
        "citizen_email": st.none() | st.sampled_from(["a@b.cn", "a b@c"]),
        "address": st.none() | _TEXT,
        "longitude": st.none() | st.floats(-200, 200),
        "latitude": st.none() | st.floats(-100, 100),
        "grid_code": st.none() | st.sampled_from(["339902001001001", "123"]),
        "category_code": st.none() | st.sampled_from(["0102", "9999", "01"]),
        "urgency": st.sampled_from(["normal", "urgent", "later"]),
        "is_enterprise": st.booleans(),
        "enterprise_name": st.none() | _TEXT,
        "received_at": st.none() | st.datetimes(timezones=st.just(UTC)),
    },
)


@settings(max_examples=400, deadline=None)
@given(_DRAFT_FIELDS)
def test_the_clean_shortcut_gives_the_drafts_answer_or_none(data: dict[str, Any]) -> None:
    _same_draft_or_none(clean_ticket_draft(dict(data)), data)


def _same_draft_or_none(shortcut: TicketDraft | None, data: dict[str, Any]) -> None:
    """A shortcut's draft is ``TicketDraft.model_validate(data)`` to the field (values, their
    types and order, the fields set), or there is none."""
    try:
        expected: TicketDraft | None = TicketDraft.model_validate(dict(data))
    except ValidationError:
        expected = None
    if shortcut is None:
        return
    assert expected is not None
    assert type(shortcut) is TicketDraft
    assert shortcut == expected
    assert list(shortcut.__dict__.items()) == list(expected.__dict__.items())
    assert [type(v) for v in shortcut.__dict__.values()] == [
        type(v) for v in expected.__dict__.values()
    ]
    assert shortcut.model_fields_set == expected.model_fields_set
    assert shortcut.model_dump_json() == expected.model_dump_json()


def test_the_clean_shortcut_takes_a_plain_ticket_and_leaves_what_needs_cleaning() -> None:
    plain = {"channel_code": "hotline-12345-phone", "title": "路灯不亮", "content": "坏了"}
    assert clean_ticket_draft(plain) == TicketDraft.model_validate(plain)
    assert clean_ticket_draft({**plain, "enterprise_name": "五金厂"}).is_enterprise  # type: ignore[union-attr]
    assert clean_ticket_draft({**plain, "title": "路灯\x00不亮"}) is None
    assert clean_ticket_draft({**plain, "address": "  "}) is None
    assert clean_ticket_draft({**plain, "extra": {}}) is None


# ``draft_of_ticket_in``: a validated canonical ticket's fields straight into the draft must give
# what ``TicketDraft`` gives, or nothing (and the caller validates the ordinary way).
_SOME_TEXT = st.sampled_from(["路灯不亮", " 坏了 "]) | _TEXT
_TICKET_IN = st.fixed_dictionaries(
    {"title": _SOME_TEXT, "content": _SOME_TEXT},
    optional={
        "channel": st.sampled_from(["hotline-12345-phone", "Bad Code", "a-", "ok\n"]),
        "external_id": st.none() | _TEXT,
        "citizen_name": st.none() | _TEXT,
        "citizen_phone": st.none()
        | st.sampled_from(["13812345678", "12", " 0571-87654321 ", "call", "+86 138 1234 5678"]),
        "citizen_id_number": st.none() | st.sampled_from(["330106198503120415", "1"]),
        "citizen_email": st.none() | st.sampled_from(["a@b.cn", "a b@c"]),
        "address": st.none() | _TEXT,
        "longitude": st.none() | st.floats(-200, 200) | st.integers(-200, 200),
        "latitude": st.none() | st.floats(-100, 100) | st.integers(-100, 100),
        "grid_code": st.none() | st.sampled_from(["339902001001001", "123", "339902001"]),
        "category_code": st.none() | st.sampled_from(["0102", "9999", "01", "99"]),
        "urgency": st.sampled_from(["normal", "urgent", "critical"]),
        "is_enterprise": st.booleans(),
        "enterprise_name": st.none() | _TEXT,
        "received_at": st.none()
        | st.datetimes(timezones=st.just(UTC), max_value=datetime(2026, 1, 1)),
    },
)


def _ticket_in_fields(body: dict[str, Any]) -> dict[str, Any]:
    """A canonical ticket's validated fields, its channel as the draft's ``channel_code``."""
    data = dict(TicketIn.model_validate(body).__dict__)
    data["channel_code"] = data.pop("channel")
    return data


@settings(max_examples=600, deadline=None)
@given(_TICKET_IN)
def test_a_ticket_in_straight_to_its_draft_is_the_drafts_answer_or_none(body: Any) -> None:
    try:
        data = _ticket_in_fields(body)
    except ValidationError:
        return
    _same_draft_or_none(draft_of_ticket_in(dict(data)), data)


def test_a_plain_ticket_in_goes_straight_to_its_draft() -> None:
    data = _ticket_in_fields({"title": "路灯不亮", "content": "坏了", "enterprise_name": "厂"})
    draft = draft_of_ticket_in({**data, "citizen_phone": "13812345678"})
    assert draft is not None and draft.is_enterprise and draft.citizen_phone == "13812345678"
    assert draft_of_ticket_in({**data, "citizen_email": "a@b.cn"}) is None  # not checked here
    assert draft_of_ticket_in({**data, "longitude": 120.0}) is None  # no latitude
    assert draft_of_ticket_in({**data, "title": "路\x00灯"}) is None
