"""What evaluation's ledger keeps of an event: everything its folds read, not what citizens and
departments wrote, nor who appealed.

The ledger holds every folded event so that a fact can be refolded whatever order its events
arrive in, and rebuilt. No fold reads an appeal's title or content, its citizen (masked name
and phone, hash), a callback's comment, a return's reason or a mediator's summary
(``facts.py`` and ``cells.py`` read codes, times, flags and counts), so the ledger does not
store them: the committee's service keeps no copy of what citizens wrote or who they are (the
appeal stays in intake, the notes in dispatch and mediation), and a ticket's ledger entry is a
few hundred bytes instead of the appeal's kilobytes, in the table evaluation writes most.

An entry read back gets each left-out field's stand-in (an empty text, none where the field is
optional, nobody for the citizen), so it validates as its class. The stored fields come after
the stand-ins in the JSON text, and of a repeated key the last wins: an entry written with its
text (before this module) reads back with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event, dump_json_many

# Per class, the free-text fields no fold reads, and the stand-in a read entry gets for each.
LEFT_OUT: Mapping[type[Event], Mapping[str, Any]] = {
    i.TicketReceived: {"title": "", "content": "", "citizen": {}},
    i.FeedbackReceived: {"comment": None},
    d.ReturnRequested: {"reason": ""},
    d.ReturnDecided: {"note": None},
    d.DispatchTransferred: {"reason": ""},
    d.ExtensionRequested: {"reason": ""},
    d.ExtensionDecided: {"note": None},
    d.ProgressNoted: {"note": ""},
    d.CitizenContacted: {"note": None},
    d.DispatchWithdrawn: {"reason": ""},
    d.DispatchSupervised: {"note": ""},
    d.DispatchFocused: {"note": None},
    d.WhistleBlown: {"reason": ""},
    d.MediationRequested: {"reason": None},
    m.AgreementReached: {"summary": ""},
    m.MediationFailed: {"reason": ""},
    m.CaseReferred: {"reason": ""},
}

_LEAVE_OUT = {cls: set(fields) for cls, fields in LEFT_OUT.items()}
# The stand-ins as the opening of a JSON object: '{"title":"","content":"",'
_OPENINGS = {cls: orjson.dumps(dict(fields))[:-1] + b"," for cls, fields in LEFT_OUT.items()}


def payloads(events: Sequence[Event]) -> list[str]:
    """Each event's ledger entry: its JSON without the fields ``LEFT_OUT`` names for its class."""
    return dump_json_many(events, _LEAVE_OUT)


def read(cls: type[Event], payload: str | bytes) -> Event:
    """A ledger entry as its event, the left-out fields given their stand-ins."""
    opening = _OPENINGS.get(cls)
    if opening is None:
        return cls.model_validate_json(payload)
    text = payload.encode() if isinstance(payload, str) else payload
    body = text.lstrip()[1:]  # the entry's fields after its "{"
    if body.lstrip().startswith(b"}"):  # no field of its own
        return cls.model_validate_json(opening[:-1] + b"}")
    return cls.model_validate_json(opening + body)
