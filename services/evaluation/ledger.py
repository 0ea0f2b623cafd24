"""What evaluation's ledger keeps of an event: everything its folds read, not what citizens and
departments wrote, nor who appealed.

The ledger holds every folded event so that a fact can be refolded whatever order its events
arrive in, and rebuilt. No fold reads an appeal's title or content, its citizen (masked name
and phone, hash) or address, a callback's comment, a return's reason or a mediator's summary
(``facts.py`` and ``cells.py`` read codes, times, flags and counts), so the ledger does not
store them: the committee's service keeps no copy of what citizens wrote or who they are (the
appeal stays in intake, the notes in dispatch and mediation), and a ticket's ledger entry is a
few hundred bytes instead of the appeal's kilobytes, in the table evaluation writes most.

An entry read back gets an empty text for each required field left out and its default for
each other (nobody for the citizen, no address), so it validates as its class. The stored
fields come after the stand-ins in the JSON text, and of a repeated key the last wins: an entry
written with its text (before this module) reads back with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event, dump_json_many

# Per class, what no fold reads and the ledger leaves out (pydantic's ``exclude``: a field, or
# some fields of a part).
LEFT_OUT: Mapping[type[Event], Mapping[str, Any]] = {
    i.TicketReceived: {"title": True, "content": True, "citizen": True, "location": {"address"}},
    i.FeedbackReceived: {"comment": True},
    d.ReturnRequested: {"reason": True},
    d.ReturnDecided: {"note": True},
    d.DispatchTransferred: {"reason": True},
    d.ExtensionRequested: {"reason": True},
    d.ExtensionDecided: {"note": True},
    d.ProgressNoted: {"note": True},
    d.CitizenContacted: {"note": True},
    d.DispatchWithdrawn: {"reason": True},
    d.DispatchSupervised: {"note": True},
    d.DispatchFocused: {"note": True},
    d.WhistleBlown: {"reason": True},
    d.MediationRequested: {"reason": True},
    m.AgreementReached: {"summary": True},
    m.MediationFailed: {"reason": True},
    m.CaseReferred: {"reason": True},
}


def stand_ins(cls: type[Event]) -> dict[str, str]:
    """The texts a read entry gets for the required fields left out of it (an empty one each);
    a left-out field with a default gets its default."""
    return {
        name: ""
        for name, what in LEFT_OUT.get(cls, {}).items()
        if what is True and cls.model_fields[name].is_required()
    }


# The stand-ins as the opening of a JSON object: '{"title":"","content":"",'
_OPENINGS = {cls: orjson.dumps(texts)[:-1] + b"," for cls in LEFT_OUT if (texts := stand_ins(cls))}


def payloads(events: Sequence[Event]) -> list[str]:
    """Each event's ledger entry: its JSON without what ``LEFT_OUT`` names for its class."""
    return dump_json_many(events, LEFT_OUT)


def read(cls: type[Event], payload: str | bytes) -> Event:
    """A ledger entry as its event, the left-out fields given their stand-ins or defaults."""
    opening = _OPENINGS.get(cls)
    if opening is None:
        return cls.model_validate_json(payload)
    text = payload.encode() if isinstance(payload, str) else payload
    return cls.model_validate_json(opening + text[1:])  # an entry is an object with its id
