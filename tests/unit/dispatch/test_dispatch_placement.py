"""Placement's per-ticket pieces of a fetch: the routing facts a ticket is stored and routed
with, and the dispatch ids' random suffixes."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.dispatch import placement
from services.dispatch.deadlines.profiles import ClockName, default_profiles
from services.dispatch.organisation.chart import default_org
from services.dispatch.routing import TicketFacts
from shared.events.intake import Location, TicketReceived

ORG = default_org()
PROFILES = default_profiles()
GRID = "339902001001002"


def _facts_as_the_model_made_them(ticket: TicketReceived) -> dict[str, object]:
    """The facts as placement built them before: a model of the ticket, dumped as JSON."""
    area = ticket.location.grid_code or ticket.location.area_code
    if area is not None and area not in ORG.tree.by_code:
        area = None
    profile = PROFILES.profiles.get(ticket.time_limit_profile)
    usable = profile is not None and ClockName.SIGN_FOR in profile.clocks
    given = {field: getattr(ticket, name) for field, name in _AS_GIVEN.items()}
    text = f"{ticket.title}\n{ticket.content}"
    default = ticket.time_limit_profile if usable else None
    facts = TicketFacts(**given, area_code=area, text=text, default_profile=default)
    return facts.model_dump(mode="json")


# The facts taken from the ticket as they are: the field of the facts, the ticket's attribute.
_AS_GIVEN = {
    "ticket_id": "ticket_id",
    "category": "category_code",
    "channel": "channel",
    "enterprise": "is_enterprise",
    "urgency": "urgency",
    "repeat_count": "repeat_count",
}


@settings(max_examples=200, deadline=None)
@given(
    grid=st.sampled_from([GRID, None, "999999999999999"]),
    area=st.sampled_from([GRID[:9], None, "123"]),
    profile=st.sampled_from([*sorted(PROFILES.profiles), "unknown"]),
    urgency=st.sampled_from(["normal", "urgent", "critical"]),
    enterprise=st.booleans(),
    repeat=st.integers(0, 5),
    title=st.text(max_size=20),
    content=st.text(max_size=200),
)
def test_a_tickets_facts_are_the_models_json_values_in_its_order(
    grid: str | None,
    area: str | None,
    profile: str,
    urgency: str,
    enterprise: bool,
    repeat: int,
    title: str,
    content: str,
) -> None:
    ticket = TicketReceived(
        ticket_id="T-1",
        channel="hotline-12345-phone",
        received_at=datetime(2026, 12, 6, tzinfo=UTC),
        title=title,
        content=content,
        category_code="0204",
        urgency=urgency,  # type: ignore[arg-type]
        is_enterprise=enterprise,
        repeat_count=repeat,
        time_limit_profile=profile,
        location=Location(grid_code=grid, area_code=area),
    )
    values = placement.facts_values(ticket, ORG, PROFILES)
    expected = _facts_as_the_model_made_them(ticket)
    assert list(values.items()) == list(expected.items())  # the same JSON, key for key
    assert placement.facts_for(ticket, ORG, PROFILES).model_dump(mode="json") == expected


def test_dispatch_ids_end_in_eight_random_hex_digits_never_repeated() -> None:
    ids = [placement.new_dispatch_id("T-1") for _ in range(3000)]  # past one draw of suffixes
    assert all(re.fullmatch(r"D-T-1-[0-9a-f]{8}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_repeat_its_parents_dispatch_ids() -> None:
    placement.new_dispatch_id("T-1")  # suffixes drawn and waiting in the parent
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(write, placement.new_dispatch_id("T-1").encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read, "rb") as pipe:
        theirs = pipe.read().decode()
    assert re.fullmatch(r"D-T-1-[0-9a-f]{8}", theirs)
    assert theirs != placement.new_dispatch_id("T-1")
