"""What the public Open311 GET publishes of a ticket: a fixed phrase per status instead of the
departments' notes, the media URL scrubbed, the ``address_id`` the request came with."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.intake import lifecycle
from services.intake.open311 import PUBLIC_STATUS_NOTES, request_entry


def ticket(**changes: Any) -> SimpleNamespace:
    """A stored ticket row, as far as ``request_entry`` reads it."""
    row: dict[str, Any] = {
        "ticket_id": "20261201-0000001",
        "status": "received",
        "category_code": "0102",
        "content": "路灯不亮",
        "address": "延安路1号",
        "department_code": None,
        "repeat_of": None,
        "received_at": datetime(2026, 12, 1, 1, 0, tzinfo=UTC),
        "accepted_at": datetime(2026, 12, 1, 1, 0, tzinfo=UTC),
        "status_at": None,
        "due_at": None,
        "latitude": None,
        "longitude": None,
        "extra": {},
    }
    row.update(changes)
    return SimpleNamespace(**row)


def test_every_status_has_a_short_public_phrase() -> None:
    assert set(PUBLIC_STATUS_NOTES) == set(lifecycle.STATUSES)
    assert all(0 < len(phrase) <= 4 for phrase in PUBLIC_STATUS_NOTES.values())


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        ("received", "已受理"),
        ("dispatched", "已派发"),
        ("in_progress", "处理中"),
        ("completed", "已办结"),
        ("closed", "已关闭"),
    ],
)
def test_status_notes_are_the_fixed_phrase_of_the_status(status: str, phrase: str) -> None:
    assert request_entry(ticket(status=status))["status_notes"] == phrase


def test_media_url_is_scrubbed_of_numbers() -> None:
    extra = {"media_url": "https://ssp.example.cn/p/1.jpg?tel=13912345678"}
    media = request_entry(ticket(extra=extra))["media_url"]
    assert media == "https://ssp.example.cn/p/1.jpg?tel=139****5678"


def test_a_stored_media_url_that_is_no_web_address_is_not_published() -> None:
    assert request_entry(ticket(extra={"media_url": "javascript:alert(1)"}))["media_url"] is None


def test_address_id_is_echoed() -> None:
    assert request_entry(ticket(extra={"address_id": "A-17"}))["address_id"] == "A-17"
    assert request_entry(ticket())["address_id"] is None
