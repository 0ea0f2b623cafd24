"""Mediation passes over most assignments from their payload's bytes, before decoding them."""

from __future__ import annotations

import itertools
import typing
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from services.mediation.handlers import (
    concerns_mediation,
    event_handlers,
    may_concern_mediation,
)
from shared.events import encode
from shared.events.dispatch import AssignMode, HandlingLine, TicketAssigned
from shared.inbox import Only


def _assigned(line: str, mode: str, **extra: Any) -> TicketAssigned:
    return TicketAssigned.model_validate(
        {
            "ticket_id": "20260101-0000001",
            "dispatch_id": "d-1",
            "department_code": "ZJ-HZ-SC-CGJ",
            "department_tier": "district",
            "area_code": "330102",
            "category_code": "0102",
            "channel": "hotline-12345-phone",
            "handling_line": line,
            "mode": mode,
            "deadlines": {"sign_for": datetime(2026, 1, 2, tzinfo=UTC)},
            **extra,
        }
    )


def test_every_assignment_mediation_acts_on_passes_the_screen() -> None:
    """Whatever the line and mode: an assignment ``concerns_mediation`` accepts is never
    screened out, and an ordinary one (normal line, assigned) is."""
    lines = typing.get_args(HandlingLine)
    modes = typing.get_args(AssignMode)
    for line, mode in itertools.product(lines, modes):
        event = _assigned(line, mode)
        payload = encode(event).value
        if concerns_mediation(event):
            assert may_concern_mediation(payload), (line, mode)
    for line, mode in itertools.product(("normal", "task_force", "aid"), ("assign", "grab")):
        assert not may_concern_mediation(encode(_assigned(line, mode)).value), (line, mode)


def test_a_payload_written_with_escapes_goes_on_to_decoding() -> None:
    """JSON may spell a word with escapes; such a payload is not judged by its bytes."""
    payload = encode(_assigned("mediation", "assign")).value
    escaped = payload.replace(b'"mediation"', b'"\\u006dediation"')
    assert b"mediation" not in escaped
    assert may_concern_mediation(escaped)


def test_the_assignments_handler_screens_its_records() -> None:
    ctx = cast(Any, SimpleNamespace(settings=SimpleNamespace(board_reroutes=3)))
    entry = event_handlers(ctx)[TicketAssigned]
    assert isinstance(entry, Only)
    assert entry.screen is may_concern_mediation
    assert entry.when is concerns_mediation
