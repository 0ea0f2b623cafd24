"""The one normalization pipeline every channel's drafts go through.

draft → PII (clear text stays on the row; masked values, the salted hash and scrubbed free text
go on the event) → category (the channel's own code if valid, else the classifier) → grid and
area (``shared.geo``) → urgency, enterprise flag and time-limit profile → ticket id → repeat
detection against the store and against earlier rows of the same file → the ticket row and its
``TicketReceived`` event, ready to be stored together in one group-commit unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.intake import repeats
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.ids import TicketIdAllocator
from services.intake.locate import Located, locate
from services.intake.normalize import Classifier, NormalizedTicket, normalize, scrub_public
from services.intake.repeat_lookup import (
    NOT_A_REPEAT,
    CandidateLoader,
    Earlier,
    Verdict,
    decide,
    keys_of,
    pack_shingles,
)
from shared.events.intake import TicketReceived


@dataclass(slots=True)
class Prepared:
    """One appeal ready to store: its row (clear text), its event (masked) and what was decided."""

    ticket_id: str
    row: dict[str, Any]
    event: TicketReceived
    normalized: NormalizedTicket
    located: Located
    verdict: Verdict


@dataclass(slots=True)
class _Pending:
    index: int
    channel: Channel
    normalized: NormalizedTicket
    located: Located
    ticket_id: str = ""
    appeal: repeats.Appeal | None = None
    earlier: Earlier | None = None  # how later appeals will see this one


class Pipeline:
    """Turns drafts into stored-ready tickets; shared by every route that accepts appeals."""

    def __init__(
        self,
        *,
        salt: str,
        ids: TicketIdAllocator,
        loader: CandidateLoader,
        classify: Classifier | None = None,
        detect_repeats: bool = True,
    ) -> None:
        self._salt = salt
        self._ids = ids
        self._loader = loader
        self._classify = classify
        self.policy = loader.policy
        self._detect_repeats = detect_repeats

    def normalize(
        self, draft: TicketDraft, channel: Channel, *, now: datetime
    ) -> tuple[NormalizedTicket, Located]:
        """PII, grid, category, urgency and time limits for one draft (pure, no I/O)."""
        located = locate(
            address=draft.address,
            longitude=draft.longitude,
            latitude=draft.latitude,
            grid_code=draft.grid_code,
        )
        normalized = normalize(
            draft,
            channel=channel,
            salt=self._salt,
            now=now,
            locate=lambda _address, _lon, _lat: located.grid_code,
            classify=self._classify,
        )
        return normalized, located

    async def prepare(
        self, items: Sequence[tuple[Channel, TicketDraft]], *, now: datetime
    ) -> list[Prepared]:
        """Normalize, number and judge repeats for a group of drafts (one POST or one file).

        Rows are judged in order of receipt, so a later row of a file may repeat an earlier one.
        """
        pending = []
        for index, (channel, draft) in enumerate(items):
            normalized, located = self.normalize(draft, channel, now=now)
            pending.append(_Pending(index, channel, normalized, located))
        for p in pending:
            n = p.normalized
            p.ticket_id = await self._ids.next_id(n.received_at)
            p.appeal = repeats.appeal(
                received_at=n.received_at,
                title=n.public_title,
                content=n.public_content,
                ticket_id=p.ticket_id,
                citizen_hash=n.citizen_hash,
                grid_code=n.grid_code,
                address=n.public_address,
                longitude=n.draft.longitude,
                latitude=n.draft.latitude,
                policy=self.policy,
            )
        appeals = [p.appeal for p in pending if p.appeal is not None]
        if not self._detect_repeats:
            return [self._build(p, NOT_A_REPEAT, now=now) for p in pending]
        stored = await self._loader.earlier(appeals)
        # Earlier rows of the same group are candidates too: judge in order of receipt. A row
        # sharing several keys with an earlier one (citizen, grid, address) is one candidate.
        local: dict[tuple[str, str], list[Earlier]] = {}
        verdicts: dict[int, Verdict] = {}
        for p in sorted(pending, key=lambda q: (q.normalized.received_at, q.index)):
            appeal = p.appeal
            assert appeal is not None
            keys = keys_of(appeal)
            candidates = stored[p.index]
            nearby = [e for key in keys for e in local.get(key, ())]
            if nearby:
                known = {e.appeal.ticket_id for e in candidates}
                candidates = list(candidates)
                for e in nearby:
                    if e.appeal.ticket_id not in known:
                        known.add(e.appeal.ticket_id)
                        candidates.append(e)
            verdict = decide(appeal, candidates, self.policy)
            verdicts[p.index] = verdict
            p.earlier = Earlier(
                repeats.Appeal(
                    received_at=appeal.received_at,
                    text="",
                    shingles=appeal.shingles,
                    ticket_id=p.ticket_id,
                    citizen_hash=appeal.citizen_hash,
                    grid_code=appeal.grid_code,
                    address_key=appeal.address_key,
                    longitude=appeal.longitude,
                    latitude=appeal.latitude,
                    repeat_of=verdict.repeat_of,
                ),
                verdict.repeat_count,
            )
            for key in keys:
                local.setdefault(key, []).append(p.earlier)
        return [self._build(p, verdicts[p.index], now=now) for p in pending]

    def _build(self, p: _Pending, verdict: Verdict, *, now: datetime) -> Prepared:
        n, draft, located = p.normalized, p.normalized.draft, p.located
        assert p.appeal is not None
        attachments = [a.model_dump() for a in n.attachments]
        packed = pack_shingles(p.appeal.shingles)
        self._loader.shingles.put(p.ticket_id, packed)
        if p.earlier is not None:  # the next files' look-ups find it ready, not to unpack
            self._loader.shingles.keep(p.earlier)
        row: dict[str, Any] = {
            "ticket_id": p.ticket_id,
            "channel": draft.channel_code,
            "external_id": draft.external_id,
            "received_at": n.received_at,
            "accepted_at": now,
            "title": draft.title,
            "content": draft.content,
            "citizen_name": draft.citizen_name,
            "citizen_phone": draft.citizen_phone,
            "citizen_id_number": draft.citizen_id_number,
            "citizen_email": draft.citizen_email,
            "citizen_hash": n.citizen_hash,
            "address": draft.address,
            "address_key": p.appeal.address_key,
            "longitude": draft.longitude,
            "latitude": draft.latitude,
            "grid_code": n.grid_code,
            "area_code": located.area_code,
            "category_code": n.category_code,
            "category_source": n.category_source,
            "urgency": n.urgency,
            "is_enterprise": n.is_enterprise,
            "enterprise_name": draft.enterprise_name,
            "repeat_of": verdict.repeat_of,
            "repeat_count": verdict.repeat_count,
            "shingles": packed,
            "time_limit_profile": n.time_limit_profile,
            "status": "received",
            "status_at": now,
            "department_code": None,
            "due_at": None,
            "attachments": attachments,
            "extra": draft.extra,
        }
        # One validation for the event and its parts (plain dicts inside, not models: building
        # each part as a model first costs a validator call and an __init__ each). Every string
        # but the structured ones is scrubbed, whichever field it is in.
        public = scrub_public(
            {
                "ticket_id": p.ticket_id,
                "channel": draft.channel_code,
                "received_at": n.received_at,
                "title": n.public_title,
                "content": n.public_content,
                "citizen": {
                    "display_name": n.citizen_display_name,
                    "phone_masked": n.citizen_phone_masked,
                    "citizen_hash": n.citizen_hash,
                },
                "location": {
                    "address": n.public_address,
                    "longitude": draft.longitude,
                    "latitude": draft.latitude,
                    "grid_code": n.grid_code,
                    "area_code": located.area_code,
                },
                "category_code": n.category_code,
                "urgency": n.urgency,
                "is_enterprise": n.is_enterprise,
                "repeat_of": verdict.repeat_of,
                "repeat_count": verdict.repeat_count,
                "external_id": draft.external_id,
                "attachments": tuple(
                    {
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "size": a.size,
                        "sha256": a.sha256,
                    }
                    for a in n.attachments
                ),
                "time_limit_profile": n.time_limit_profile,
                "category_source": n.category_source,
            }
        )
        event = TicketReceived(**public)
        return Prepared(p.ticket_id, row, event, n, located, verdict)
