"""A new ticket's answer written from its prepared row (``service.accepted_json``) must be the
bytes the route's ``TicketAccepted`` dumps, whatever the values."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.models import TicketAccepted
from services.intake.pipeline import Prepared
from services.intake.service import accepted_json

_TEXT = st.text() | st.sampled_from(["F2026120500001", "0102", '"\\\u2028\x7f\x00', "路灯"])
_COUNT = st.integers(-(2**70), 2**70) | st.integers(0, 5) | st.booleans()


def _prepared(ticket_id: Any, category: Any, repeat_of: Any, count: Any) -> Prepared:
    row = {"category_code": category, "repeat_of": repeat_of, "repeat_count": count}
    nothing = cast(Any, None)
    return Prepared(ticket_id, row, nothing, nothing, nothing, nothing)


@settings(max_examples=500, deadline=None)
@given(_TEXT, st.none() | _TEXT, st.none() | _TEXT, _COUNT)
def test_the_answer_from_the_row_is_the_models_dump(
    ticket_id: str, category: str | None, repeat_of: str | None, count: int
) -> None:
    model = TicketAccepted(
        ticket_id=ticket_id,
        status="received",
        created=True,
        category_code=category,
        repeat_of=repeat_of,
        repeat_count=count,
    )
    expected = model.model_dump_json().encode()
    assert accepted_json(_prepared(ticket_id, category, repeat_of, count)) == expected


def test_a_plain_answer() -> None:
    assert accepted_json(_prepared("F1", "0102", None, 0)) == (
        b'{"ticket_id":"F1","status":"received","created":true,'
        b'"category_code":"0102","repeat_of":null,"repeat_count":0}'
    )
