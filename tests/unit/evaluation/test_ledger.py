"""A ledger entry keeps what the folds read and nothing citizens or departments wrote: read
back, it folds to the same facts as the event it was written from."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from services.evaluation import ledger
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event, dump_json_many
from tests.unit.evaluation.test_fold import at, life, snapshot

WRITTEN = "楼上每晚十一点后装修噪音扰民，多次沟通无果"
CITIZEN = i.Citizen(display_name="张**", phone_masked="138****1234", citizen_hash="ab" * 32)


def _with_texts(events: list[Event]) -> list[Event]:
    """The life's events with every text ``LEFT_OUT`` names (and the citizen) filled in."""
    out = []
    for event in events:
        fields = ledger.LEFT_OUT.get(type(event), {})
        update = {name: CITIZEN if name == "citizen" else WRITTEN for name in fields}
        out.append(event.model_copy(update=update))
    return out


def test_an_entry_holds_no_text_and_folds_to_the_event_s_facts() -> None:
    events = _with_texts(
        [
            *life("T1"),
            d.ProgressNoted(
                ticket_id="T1",
                dispatch_id="D3",
                department_code="C",
                note="x",
                occurred_at=at(8.5),
            ),
        ]
    )
    entries = ledger.payloads(events)
    for entry in entries:
        assert WRITTEN not in entry and "138****1234" not in entry and "张**" not in entry
    assert sum(type(e) in ledger.LEFT_OUT for e in events) >= 6  # the life has texts to leave out

    read = [ledger.read(type(e), entry) for e, entry in zip(events, entries, strict=True)]
    assert [e.event_id for e in read] == [e.event_id for e in events]
    assert read[0].title == "" and read[0].citizen == i.Citizen()  # type: ignore[attr-defined]
    assert snapshot(read) == snapshot(events)
    # Everything but the left-out fields is the event's own.
    for event, back in zip(events, read, strict=True):
        kept = set(type(event).model_fields) - set(ledger.LEFT_OUT.get(type(event), {}))
        assert back.model_dump(include=kept) == event.model_dump(include=kept)


def test_an_entry_written_whole_reads_back_whole() -> None:
    """Entries written before the ledger left texts out keep them: the stored value wins."""
    received = _with_texts(life("T-OLD"))[0]
    back = ledger.read(type(received), received.model_dump_json())
    assert back == received
    assert ledger.read(type(received), received.model_dump_json().encode()) == received


@pytest.mark.parametrize("cls", list(ledger.LEFT_OUT), ids=lambda c: c.__name__)
def test_every_stand_in_is_a_value_of_its_field(cls: type[Event]) -> None:
    for name, stand_in in ledger.LEFT_OUT[cls].items():
        field = cls.model_fields[name]  # a field of the class: a misspelt name fails here
        TypeAdapter(field.annotation).validate_python(stand_in)


def test_many_events_of_a_class_leave_out_what_one_does() -> None:
    """The dump of many events of a class (one serializer call, cut at each event's opening)
    leaves out the same fields as the dump of each alone."""
    events = _with_texts(life("T-MANY") + life("T-MANY-2"))
    leave_out = {cls: set(fields) for cls, fields in ledger.LEFT_OUT.items()}
    many = dump_json_many(events, leave_out)
    assert many == [e.model_dump_json(exclude=leave_out.get(type(e))) for e in events]
    assert dump_json_many(events) == [e.model_dump_json() for e in events]


def test_the_folded_classes_texts_are_left_out() -> None:
    """Each class whose free text the ledger leaves out is one evaluation folds."""
    from services.evaluation.handlers import FOLDED

    assert set(ledger.LEFT_OUT) <= set(FOLDED)
    assert {i.TicketReceived, d.ProgressNoted, m.AgreementReached} <= set(ledger.LEFT_OUT)
