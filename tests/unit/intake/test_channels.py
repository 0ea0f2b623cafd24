"""Every one of the 72 channels: its native fixture normalizes into the expected draft."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.intake.adapters import adapt, adapt_callback
from services.intake.canonical import TicketDraft
from services.intake.channels import callback_channels, channels, time_limit_profile_for
from shared.pii import normalize_phone

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "channels"
PAYLOAD_SUFFIXES = {".json", ".form", ".eml", ".csv", ".xlsx"}
EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load(
    (FIXTURES / "expected.yaml").read_text("utf-8")
)


def fixture_for(code: str) -> Path:
    """The one fixture file of a channel."""
    found = [p for p in FIXTURES.iterdir() if p.stem == code and p.suffix in PAYLOAD_SUFFIXES]
    assert len(found) == 1, f"{code}: expected exactly one fixture, found {found}"
    return found[0]


def check_draft(draft: TicketDraft, expected: dict[str, Any]) -> None:
    """The first draft of a fixture carries the values expected.yaml names."""
    simple = {
        "external_id": "external_id",
        "name": "citizen_name",
        "id_number": "citizen_id_number",
        "email": "citizen_email",
        "title": "title",
        "address": "address",
        "grid_code": "grid_code",
        "category_code": "category_code",
        "urgency": "urgency",
        "is_enterprise": "is_enterprise",
        "enterprise_name": "enterprise_name",
    }
    for key, attribute in simple.items():
        if key in expected:
            assert getattr(draft, attribute) == expected[key], key
    if "phone" in expected:
        assert normalize_phone(draft.citizen_phone) == expected["phone"]
    if "received_at" in expected:
        assert draft.received_at == datetime.fromisoformat(expected["received_at"])
        assert draft.received_at is not None and draft.received_at.tzinfo is not None
    if "coords" in expected:
        assert (draft.longitude is not None and draft.latitude is not None) == expected["coords"]
    if "attachments" in expected:
        assert len(draft.attachments) == expected["attachments"]
    if "content_contains" in expected:
        assert expected["content_contains"] in draft.content
    for key in expected.get("extra_keys", []):
        assert key in draft.extra, f"extra lacks {key!r}: {sorted(draft.extra)}"
    for key in expected.get("no_extra_keys", []):
        assert key not in draft.extra


def test_every_channel_has_a_fixture_and_an_expectation() -> None:
    codes = {c.code for c in channels()} | {c.code for c in callback_channels()}
    stems = {p.stem for p in FIXTURES.iterdir() if p.suffix in PAYLOAD_SUFFIXES}
    assert len({c.code for c in channels()}) == 72
    assert stems == codes
    assert set(EXPECTED) == codes


@pytest.mark.parametrize("channel", channels(), ids=lambda c: c.code)
def test_channel_fixture_normalizes(channel: Any) -> None:
    expected = EXPECTED[channel.code]
    body = fixture_for(channel.code).read_bytes()

    output = adapt(channel, body, content_type=expected["content_type"])

    assert len(output.drafts) == expected.get("rows", 1)
    assert len(output.errors) == expected.get("errors", 0)
    assert output.batch == (channel.payload_format in ("csv", "xlsx"))
    assert channel.active == expected.get("active", True)
    for draft in output.drafts:
        assert draft.channel_code == channel.code
        assert draft.title.strip() and draft.content.strip()
        assert len(draft.title) <= 200
        if channel.is_enterprise_channel:
            assert draft.is_enterprise
    first = output.drafts[0]
    check_draft(first, expected)
    profile = time_limit_profile_for(
        channel, is_enterprise=first.is_enterprise, urgency=first.urgency
    )
    assert profile == expected.get("profile", "standard")
    assert len(output.attachments) == expected.get("attachments", 0)


@pytest.mark.parametrize("channel", callback_channels(), ids=lambda c: c.code)
def test_callback_fixture_normalizes(channel: Any) -> None:
    expected = EXPECTED[channel.code]
    body = fixture_for(channel.code).read_bytes()

    callback = adapt_callback(channel, body, content_type=expected["content_type"])

    assert callback.channel_code == channel.code
    assert callback.ticket_id == expected["ticket_id"]
    assert callback.resolved is expected["resolved"]
    assert callback.satisfaction == expected["satisfaction"]
    assert callback.external_id == expected["external_id"]
    assert callback.received_at == datetime.fromisoformat(expected["received_at"])
    assert callback.comment
