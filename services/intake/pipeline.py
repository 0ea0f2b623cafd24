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
from itertools import accumulate
from operator import attrgetter
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from services.intake import classifier, repeats
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.classifier import Classification
from services.intake.ids import TicketIdAllocator
from services.intake.locate import Located, locate
from services.intake.models import TICKETS
from services.intake.normalize import (
    Classifier,
    GroupMemo,
    NormalizedTicket,
    normalize_many,
    scrub_public_columns,
)
from services.intake.repeat_lookup import (
    NOT_A_REPEAT,
    CandidateLoader,
    Earlier,
    EarlierInUnit,
    Verdict,
    decide,
    judged_earlier,
    keys_of,
    made_appeal,
)
from shared.events.base import Encoded, encode_fields, encoded
from shared.events.intake import TicketReceived
from shared.groupcommit import Columns, Same


@dataclass(slots=True)
class Prepared:
    """One appeal ready to store: its row (clear text), its event (masked, as its outbox record)
    and what was decided. ``stored`` is the row itself, or, for a unit of many rows, the unit's
    rows a column at a time and this row's place in them (``Columns``, handed to the group
    committer as they are)."""

    ticket_id: str
    stored: dict[str, Any] | tuple[Columns, int]
    event: Encoded
    normalized: NormalizedTicket
    located: Located
    verdict: Verdict

    @property
    def row(self) -> dict[str, Any]:
        """The ticket's row, clear text."""
        if isinstance(self.stored, dict):
            return self.stored
        block, at = self.stored
        return {key: v.value if isinstance(v, Same) else v[at] for key, v in block.values.items()}


@dataclass(slots=True)
class _Pending:
    unit: int
    index: int
    channel: Channel
    normalized: NormalizedTicket
    located: Located
    ticket_id: str = ""
    appeal: repeats.Appeal | None = None
    earlier: Earlier | None = None  # how later appeals of its unit will see this one
    packed: bytes = b""  # its shingles as stored
    grams: list[int] | None = None  # its shingles, sorted


_EVENTS = TypeAdapter(list[TicketReceived])

Unit = Sequence[tuple[Channel, TicketDraft]]
"""What is stored all or nothing: one appeal, or a batch file's good rows."""

COLUMNS_MIN_ROWS = 64
"""A unit of at least this many rows (a batch file) hands its ticket rows to the group committer
a column at a time (``Columns``): no dict a row, and the values every row shares (the times of
acceptance, the status) processed once. A smaller unit's row is a dict, which for one row costs
less than its columns."""


class Pipeline:
    """Turns drafts into stored-ready tickets; shared by every route that accepts appeals.

    The group is the unit of work: ``prepare_group`` takes every unit that queued while the
    previous group was being prepared (single posts, batch files) and does each step once for
    all of them — one classifier product, one pass of numbering, one candidate look-up — while
    a failure in one unit fails that unit only.
    """

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
        self,
        unit: Unit,
        *,
        now: datetime,
        classified: dict[int, Classification],
        memo: GroupMemo,
    ) -> tuple[list[NormalizedTicket], list[Located]]:
        """PII, grid, category, urgency and time limits for one unit's drafts (pure, no I/O);
        ``classified``: the group's classifications by draft identity; ``memo`` shared by the
        drafts of a group."""
        located = [
            locate(
                address=draft.address,
                longitude=draft.longitude,
                latitude=draft.latitude,
                grid_code=draft.grid_code,
            )
            for _, draft in unit
        ]
        normalized = normalize_many(
            unit,
            grid_codes=[place.grid_code for place in located],
            salt=self._salt,
            now=now,
            classify=self._classify,
            classifications=classified,
            memo=memo,
        )
        return normalized, located

    async def prepare(self, items: Unit, *, now: datetime) -> list[Prepared]:
        """Normalize, number and judge repeats for one unit (one POST or one file)."""
        (outcome,) = await self.prepare_group([items], now=now)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def prepare_group(
        self, units: Sequence[Unit], *, now: datetime
    ) -> list[list[Prepared] | Exception]:
        """Each unit's tickets ready to store, or the exception that failed that unit alone.

        Rows of one unit are judged in order of receipt, so a later row of a file may repeat an
        earlier one; separate units see each other only once stored (either may yet fail).
        """
        outcomes: list[list[Prepared] | Exception | None] = [None] * len(units)
        classified = self._classify_group(units)
        pending: list[_Pending] = []
        memo = GroupMemo()
        for u, unit in enumerate(units):
            try:
                normalized, located = self.normalize(
                    unit, now=now, classified=classified, memo=memo
                )
            except Exception as exc:
                outcomes[u] = exc
            else:
                start = len(pending)
                pending.extend(
                    _Pending(u, start + i, channel, n, place)
                    for i, ((channel, _), n, place) in enumerate(
                        zip(unit, normalized, located, strict=True)
                    )
                )
        try:
            ids = await self._ids.take([p.normalized.received_at for p in pending])
        except Exception as exc:  # the database, not any unit: every unit fails with it
            return [exc if o is None else o for o in outcomes]
        for p, ticket_id in zip(pending, ids, strict=True):
            p.ticket_id = ticket_id
        address_keys: dict[str | None, str | None] = {}
        for p, text_shingles in zip(pending, self._shingles(pending, outcomes), strict=True):
            if text_shingles is None:
                continue
            try:
                p.appeal = self._appeal(p, text_shingles, address_keys)
            except Exception as exc:
                outcomes[p.unit] = exc
        pending = [p for p in pending if outcomes[p.unit] is None]
        stored = await self._candidates(pending, outcomes)
        by_unit: dict[int, list[_Pending]] = {}
        for p in pending:
            if outcomes[p.unit] is None:
                by_unit.setdefault(p.unit, []).append(p)
        judged: list[tuple[int, list[_Pending], dict[int, Verdict], list[Any]]] = []
        for u, members in by_unit.items():
            try:
                verdicts = self._judge(members, stored)
                rows: list[Any]
                if len(members) >= COLUMNS_MIN_ROWS:
                    block = self._columns(members, verdicts, now=now)
                    rows = [(block, at) for at in range(len(members))]
                else:
                    rows = [self._row(p, verdicts[p.index], now=now) for p in members]
            except Exception as exc:
                outcomes[u] = exc
            else:
                judged.append((u, members, verdicts, rows))
        # The group's event fields gathered a field at a time, and its events written straight
        # to their records from them (one read of random bytes for all their ids) when every
        # value is one the model keeps as it is, each in one call for the whole group (a group
        # of single posts is many units of one ticket); else each unit's by itself, so a value
        # only the model can vouch for costs its own unit one validation (pydantic-core's loop,
        # not an __init__ per event) and one dump, and a failure fails that unit alone.
        everyone = [p for _, members, _, _ in judged for p in members]
        decided = {at: v for _, _, verdicts, _ in judged for at, v in verdicts.items()}
        try:
            group_fields: list[dict[str, Any]] | None = _public_fields(everyone, decided, memo)
        except Exception:
            group_fields = None
        try:
            group_events = (
                encode_fields(TicketReceived, group_fields) if group_fields is not None else None
            )
        except Exception:
            group_events = None
        start = 0
        for u, members, verdicts, rows in judged:
            end = start + len(members)
            try:
                if group_fields is not None:
                    publics = group_fields[start:end]
                else:
                    publics = _public_fields(members, verdicts, memo)
                if group_events is not None:
                    events = group_events[start:end]
                else:
                    events = encode_fields(TicketReceived, publics) or encoded(
                        _EVENTS.validate_python(publics)
                    )
                outcomes[u] = [
                    Prepared(p.ticket_id, row, event, p.normalized, p.located, verdicts[p.index])
                    for p, row, event in zip(members, rows, events, strict=True)
                ]
            except Exception as exc:
                outcomes[u] = exc
            start = end
        return [o if o is not None else RuntimeError("unit not prepared") for o in outcomes]

    def _classify_group(self, units: Sequence[Unit]) -> dict[int, Classification]:
        """Every draft without a category, classified in one sparse-matrix product (by the
        draft's identity); a custom classifier is called per draft in ``normalize``."""
        if self._classify is not None:
            return {}
        drafts = [d for unit in units for _, d in unit if d.category_code is None]
        if not drafts:
            return {}
        try:
            found = classifier.classify_many((d.title, d.content) for d in drafts)
        except Exception:  # one text the model cannot take: each is classified alone instead
            return {}
        return {id(d): c for d, c in zip(drafts, found, strict=True)}

    def _shingles(
        self, pending: list[_Pending], outcomes: list[list[Prepared] | Exception | None]
    ) -> list[tuple[str, frozenset[int]] | None]:
        """Each appeal's compared text and shingles, the shingles of the whole group in one
        numpy pass; each appeal's packed shingles (sorted little-endian uint32s) set aside for
        its row. A text that cannot be shingled fails its own unit only."""
        texts: list[str | None]
        try:
            texts = list(
                compared_texts(
                    [(p.normalized.public_title, p.normalized.public_content) for p in pending]
                )
            )
        except Exception:  # one text normalization refuses: each alone, so only its unit fails
            texts = []
            for p in pending:
                try:
                    texts.append(
                        repeats.text_of(p.normalized.public_title, p.normalized.public_content)
                    )
                except Exception as exc:
                    outcomes[p.unit] = exc
                    texts.append(None)
        size = self.policy.shingle_size
        try:
            grams = repeats.shingles_many([t or "" for t in texts], size)
        except Exception:  # one text the encoder refuses: each alone, so only its unit fails
            grams = []
            for p, text in zip(pending, texts, strict=True):
                try:
                    grams.append(repeats.shingles_many([text or ""], size)[0])
                except Exception as exc:
                    outcomes[p.unit] = exc
                    grams.append(repeats.shingles_many([""], size)[0])
        # Every appeal's grams packed and listed at once, each its own slice of the whole (a
        # numpy call or three a row cost more than the slicing).
        ends = list(accumulate(map(len, grams)))
        whole = np.concatenate(grams) if grams else np.zeros(0, dtype=np.uint32)
        packed, listed = whole.astype("<u4", copy=False).tobytes(), whole.tolist()
        out: list[tuple[str, frozenset[int]] | None] = []
        start = 0
        for p, text, end in zip(pending, texts, ends, strict=True):
            if text is None or outcomes[p.unit] is not None:
                out.append(None)
            else:
                p.packed = packed[4 * start : 4 * end]
                p.grams = listed[start:end]
                out.append((text, frozenset(p.grams)))
            start = end
        return out

    def _appeal(
        self,
        p: _Pending,
        text_shingles: tuple[str, frozenset[int]],
        address_keys: dict[str | None, str | None],
    ) -> repeats.Appeal:
        """``repeats.appeal(…)`` of the pending ticket: the same appeal, its slots set directly
        and each distinct address normalized once a group (``address_keys``, by address)."""
        n = p.normalized
        if n.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        address = n.public_address
        if address in address_keys:
            address_key = address_keys[address]
        else:
            address_key = address_keys[address] = repeats.normalize_address(address)
        text, grams = text_shingles
        return made_appeal(
            n.received_at,
            text,
            grams,
            p.ticket_id,
            n.citizen_hash,
            n.grid_code or None,
            address_key,
            n.draft.longitude,
            n.draft.latitude,
            None,
        )

    async def _candidates(
        self, pending: list[_Pending], outcomes: list[list[Prepared] | Exception | None]
    ) -> dict[int, list[Earlier]]:
        """Stored candidates of every pending appeal, by its index: one look-up for the group;
        if that fails, one per unit, so only a culprit's unit fails."""
        if not self._detect_repeats or not pending:
            return {}
        appeals = [p.appeal for p in pending if p.appeal is not None]
        # Each appeal's sorted grams as its row stores them: the look-up's numpy pass reads
        # them joined, not back out of the appeals' frozensets.
        packed = [p.packed for p in pending if p.appeal is not None]
        try:
            loaded = await self._loader.load(appeals, packed)
        except Exception:
            if len({p.unit for p in pending}) == 1:
                raise
            found: dict[int, list[Earlier]] = {}
            for u in sorted({p.unit for p in pending}):
                members = [p for p in pending if p.unit == u]
                try:
                    alone = await self._loader.load(
                        [p.appeal for p in members if p.appeal],
                        [p.packed for p in members if p.appeal],
                    )
                except Exception as exc:
                    outcomes[u] = exc
                    continue
                found.update((p.index, c) for p, c in zip(members, alone, strict=True))
            return found
        return {p.index: c for p, c in zip(pending, loaded, strict=True)}

    def _judge(
        self, members: list[_Pending], stored: dict[int, list[Earlier]]
    ) -> dict[int, Verdict]:
        """Each appeal of one unit against its stored candidates and the unit's earlier rows."""
        if not self._detect_repeats:
            return {p.index: NOT_A_REPEAT for p in members}
        # A row sharing several keys with an earlier one (citizen, grid, address) is one
        # candidate; a stored ticket is taken as loaded.
        in_unit, grams = None, {}
        if len(members) > 1:
            grams = {
                p.index: p.grams if p.grams is not None else sorted(p.appeal.shingles)
                for p in members
                if p.appeal is not None
            }
            in_unit = EarlierInUnit(self.policy, list(grams.values()))
        verdicts: dict[int, Verdict] = {}
        for p in sorted(members, key=lambda q: (q.normalized.received_at, q.index)):
            appeal = p.appeal
            assert appeal is not None
            keys = keys_of(appeal)
            candidates = stored.get(p.index, [])
            if in_unit is not None:
                nearby = in_unit.candidates(keys, p.ticket_id, grams[p.index])
                if nearby:
                    for e in candidates:
                        nearby.pop(e.appeal.ticket_id, None)  # type: ignore[arg-type]
                    candidates = [*candidates, *nearby.values()]
            verdict = decide(appeal, candidates, self.policy)
            verdicts[p.index] = verdict
            p.earlier = judged_earlier(appeal, verdict)
            if in_unit is not None:
                in_unit.add(keys, p.earlier, grams[p.index])
        return verdicts

    def _columns(
        self, members: list[_Pending], verdicts: dict[int, Verdict], *, now: datetime
    ) -> Columns:
        """The unit's ticket rows a column at a time: ``_row`` of each (a test holds them
        equal), each column read off its objects in one ``map``."""
        ns = [p.normalized for p in members]
        drafts = [n.draft for n in ns]
        decided = [verdicts[p.index] for p in members]

        def of(objects: list[Any], attribute: str) -> list[Any]:
            return list(map(attrgetter(attribute), objects))

        values: dict[str, Sequence[Any] | Same] = {
            "ticket_id": of(members, "ticket_id"),
            "channel": of(drafts, "channel_code"),
            "external_id": of(drafts, "external_id"),
            "received_at": of(ns, "received_at"),
            "accepted_at": Same(now),
            "title": of(drafts, "title"),
            "content": of(drafts, "content"),
            "citizen_name": of(drafts, "citizen_name"),
            "citizen_phone": of(drafts, "citizen_phone"),
            "citizen_id_number": of(drafts, "citizen_id_number"),
            "citizen_email": of(drafts, "citizen_email"),
            "citizen_hash": of(ns, "citizen_hash"),
            "address": of(drafts, "address"),
            "address_key": of(of(members, "appeal"), "address_key"),
            "longitude": of(drafts, "longitude"),
            "latitude": of(drafts, "latitude"),
            "grid_code": of(ns, "grid_code"),
            "area_code": of(of(members, "located"), "area_code"),
            "category_code": of(ns, "category_code"),
            "category_source": of(ns, "category_source"),
            "urgency": of(ns, "urgency"),
            "is_enterprise": of(ns, "is_enterprise"),
            "enterprise_name": of(drafts, "enterprise_name"),
            "repeat_of": of(decided, "repeat_of"),
            "repeat_count": of(decided, "repeat_count"),
            "shingles": of(members, "packed"),
            "time_limit_profile": of(ns, "time_limit_profile"),
            "status": Same("received"),
            "status_at": Same(now),
            "department_code": Same(None),
            "due_at": Same(None),
            "attachments": [[a.model_dump() for a in n.attachments] for n in ns],
            "extra": of(drafts, "extra"),
        }
        return Columns(TICKETS, len(members), values)

    def _row(self, p: _Pending, verdict: Verdict, *, now: datetime) -> dict[str, Any]:
        """The ticket's row, clear text."""
        n, draft, located = p.normalized, p.normalized.draft, p.located
        assert p.appeal is not None
        attachments = [a.model_dump() for a in n.attachments]
        packed = p.packed
        return {
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


# Joins a group's texts for one normalization (``compared_texts``): a letter, so the compared
# text's word runs keep it; its own NFKC and lower case; a starter that composes with nothing;
# in no boilerplate phrase; a Han character added only in Unicode 14, which appeals do not use
# (a text that holds it is taken alone).
_JOIN = "\u9fff"


def compared_texts(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``repeats.text_of(title, content)`` of each pair, by one ``repeats.normalize_text`` of
    all the texts joined by ``_JOIN`` and cut at it: NFKC, lower case, the boilerplate phrases
    and the word runs each act within the characters between two joins (no composition, case
    context or phrase reaches across a letter of this kind), so each piece is its own text's
    result (a test holds the two equal). Texts that hold the join, or that normalization turns
    into it, are taken one by one instead. Raises as ``text_of`` of a bad text would."""
    joined = [f"{title}{content}" for title, content in pairs]
    if len(joined) > 1:
        together = _JOIN.join(joined)
        if together.count(_JOIN) == len(joined) - 1:
            pieces = repeats.normalize_text(together).split(_JOIN)
            if len(pieces) == len(joined):
                return pieces
    return [repeats.normalize_text(text) for text in joined]


def _public_fields(
    members: list[_Pending], verdicts: dict[int, Verdict], memo: GroupMemo | None
) -> list[dict[str, Any]]:
    """The ``TicketReceived`` fields of a unit's tickets as plain dicts, parts included (validated
    once for the unit if the writer declines them: building each part as a model first costs a
    validator call and an __init__ each). Every string but the structured ones is scrubbed,
    whichever field it is in: the values gathered a field at a time, each field's distinct
    strings scrubbed once (``scrub_public_columns``), then zipped into each ticket's dicts."""
    ns = [p.normalized for p in members]
    sources = (
        (_FROM_NORMALIZED, ns),
        (_FROM_DRAFT, [n.draft for n in ns]),
        (_FROM_VERDICT, [verdicts[p.index] for p in members]),
        (_FROM_PENDING, members),
    )
    gathered = {
        name: list(map(attrgetter(attribute), objects))
        for names, objects in sources
        for name, attribute in names
    }
    gathered["area_code"] = [p.located.area_code for p in members]
    gathered["attachments"] = [
        tuple(
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in n.attachments
        )
        for n in ns
    ]
    # One column a field, the parts' fields among them (no name is both a part's and the
    # event's, and a part's strings are scrubbed by their own field's name as in a dict).
    columns = scrub_public_columns(gathered, memo=memo)
    return [
        {
            "ticket_id": ticket_id,
            "channel": channel,
            "received_at": received_at,
            "title": title,
            "content": content,
            "citizen": {
                "display_name": display_name,
                "phone_masked": phone_masked,
                "citizen_hash": citizen_hash,
            },
            "location": {
                "address": address,
                "longitude": longitude,
                "latitude": latitude,
                "grid_code": grid_code,
                "area_code": area_code,
            },
            "category_code": category_code,
            "urgency": urgency,
            "is_enterprise": is_enterprise,
            "repeat_of": repeat_of,
            "repeat_count": repeat_count,
            "external_id": external_id,
            "attachments": attachments,
            "time_limit_profile": time_limit_profile,
            "category_source": category_source,
        }
        for (
            ticket_id,
            channel,
            received_at,
            title,
            content,
            display_name,
            phone_masked,
            citizen_hash,
            address,
            longitude,
            latitude,
            grid_code,
            area_code,
            category_code,
            urgency,
            is_enterprise,
            repeat_of,
            repeat_count,
            external_id,
            attachments,
            time_limit_profile,
            category_source,
        ) in zip(*(columns[name] for name in _IN_ORDER), strict=True)
    ]


def _pairs(spec: str) -> tuple[tuple[str, str], ...]:
    """``"field=attribute field"`` as (field, attribute) pairs, the attribute the field's name
    where it has no ``=``."""
    words = (word.partition("=") for word in spec.split())
    return tuple((name, attribute or name) for name, _, attribute in words)


# Where each event field's value is read: the normalized ticket, the draft, the verdict, the
# pending entry (the area from the located place, attachments as dicts).
_FROM_NORMALIZED = _pairs(
    "display_name=citizen_display_name phone_masked=citizen_phone_masked citizen_hash"
    " address=public_address grid_code received_at title=public_title"
    " content=public_content category_code urgency is_enterprise time_limit_profile"
    " category_source"
)
_FROM_DRAFT = _pairs("longitude latitude channel=channel_code external_id")
_FROM_VERDICT = _pairs("repeat_of repeat_count")
_FROM_PENDING = _pairs("ticket_id")


# The event's fields in its order, its parts' fields in their place.
_IN_ORDER = [
    "ticket_id",
    "channel",
    "received_at",
    "title",
    "content",
    "display_name",
    "phone_masked",
    "citizen_hash",
    "address",
    "longitude",
    "latitude",
    "grid_code",
    "area_code",
    "category_code",
    "urgency",
    "is_enterprise",
    "repeat_of",
    "repeat_count",
    "external_id",
    "attachments",
    "time_limit_profile",
    "category_source",
]
