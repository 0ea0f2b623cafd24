"""A ledger entry keeps what the folds read and nothing citizens or departments wrote: read
back, it folds to the same facts as the event it was written from."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from services.evaluation import ledger
from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event, dump_json_many
from tests.unit.evaluation.test_fold import at, life, snapshot

WRITTEN = "楼上每晚十一点后装修噪音扰民，多次沟通无果"
ADDRESS = "越城区府山街道胜利西路12号3幢501室"
CITIZEN = i.Citizen(display_name="张**", phone_masked="138****1234", citizen_hash="ab" * 32)


def _with_texts(events: list[Event]) -> list[Event]:
    """The life's events with everything ``LEFT_OUT`` names filled in."""
    out = []
    for event in events:
        update: dict[str, Any] = {}
        for name, what in ledger.LEFT_OUT.get(type(event), {}).items():
            if name == "citizen":
                update[name] = CITIZEN
            elif name == "location":
                update[name] = event.location.model_copy(update={"address": ADDRESS})  # type: ignore[attr-defined]
            else:
                assert what is True
                update[name] = WRITTEN
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
        assert ADDRESS not in entry
    assert sum(type(e) in ledger.LEFT_OUT for e in events) >= 6  # the life has texts to leave out

    read = [ledger.read(type(e), entry) for e, entry in zip(events, entries, strict=True)]
    assert [e.event_id for e in read] == [e.event_id for e in events]
    first = read[0]
    assert isinstance(first, i.TicketReceived)
    assert (first.title, first.content, first.citizen, first.location.address) == (
        "",
        "",
        i.Citizen(),
        None,
    )
    assert first.location.grid_code == events[0].location.grid_code  # type: ignore[attr-defined]
    assert snapshot(read) == snapshot(events)
    # Everything but the left-out fields is the event's own.
    for event, back in zip(events, read, strict=True):
        left = ledger.LEFT_OUT.get(type(event))
        assert back.model_dump(exclude=left) == event.model_dump(exclude=left)


def test_an_entry_written_whole_reads_back_whole() -> None:
    """Entries written before the ledger left texts out keep them: the stored value wins."""
    received = _with_texts(life("T-OLD"))[0]
    back = ledger.read(type(received), received.model_dump_json())
    assert back == received
    assert ledger.read(type(received), received.model_dump_json().encode()) == received


@pytest.mark.parametrize("cls", list(ledger.LEFT_OUT), ids=lambda c: c.__name__)
def test_every_field_left_out_reads_back_as_a_value_of_its_field(cls: type[Event]) -> None:
    stand_ins = ledger.stand_ins(cls)
    for name in ledger.LEFT_OUT[cls]:
        field = cls.model_fields[name]  # a field of the class: a misspelt name fails here
        if name in stand_ins:
            TypeAdapter(field.annotation).validate_python(stand_ins[name])
        else:
            assert not field.is_required(), name  # it reads back as its default


def test_many_events_of_a_class_leave_out_what_one_does() -> None:
    """The dump of many events of a class (one serializer call, cut at each event's opening)
    leaves out the same fields as the dump of each alone."""
    events = _with_texts(life("T-MANY") + life("T-MANY-2"))
    many = dump_json_many(events, ledger.LEFT_OUT)
    assert many == [e.model_dump_json(exclude=ledger.LEFT_OUT.get(type(e))) for e in events]
    assert dump_json_many(events) == [e.model_dump_json() for e in events]


def test_the_folded_classes_texts_are_left_out() -> None:
    """Each class whose free text the ledger leaves out is one evaluation folds."""
    from services.evaluation.handlers import FOLDED

    assert set(ledger.LEFT_OUT) <= set(FOLDED)
    assert {i.TicketReceived, d.ProgressNoted, m.AgreementReached} <= set(ledger.LEFT_OUT)
