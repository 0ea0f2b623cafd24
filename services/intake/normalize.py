"""Normalization: a channel's ``TicketDraft`` becomes what intake stores and what it publishes.

Pure: no I/O. The caller passes the arrival time, the hash salt, and optionally a grid locator
(address / coordinates → grid code, from the shared grid registry) and a classifier.

Two views come out, and only one may leave intake:

* the **store** view (``draft`` and ``citizen_hash``) keeps clear-text contact and ID numbers —
  intake's own tables only;
* the **public** view (``public_*`` fields, masked contact, scrubbed title/content/address/extra)
  is what goes on the bus: phone and ID numbers are masked even inside free text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from services.intake import classifier as text_classifier
from services.intake.canonical import AttachmentMeta, TicketDraft, Urgency
from services.intake.channels import (
    Channel,
    TimeLimitProfile,
    UnknownChannel,
    get_channel,
    time_limit_profile_for,
)
from services.intake.classifier import Classification
from services.intake.locate import is_grid_code, registered
from shared import pii, taxonomy

GridLocator = Callable[[str | None, float | None, float | None], str | None]
Classifier = Callable[[str, str], Classification]
CategorySource = Literal["channel", "classifier"]

# Hazards that should never wait on standard time limits, whatever the channel said.
_HAZARDS = re.compile(
    r"燃气泄漏|煤气泄漏|燃气味|煤气味|漏气|着火|起火|失火|冒烟|火灾|爆炸|有人被困|困人|被困|"
    r"触电|漏电|坍塌|塌方|倒塌|溺水|落水|中毒|窨井盖缺失|井盖缺失"
)


@dataclass(slots=True)
class NormalizedTicket:
    """A draft after normalization: store view, public view, and the derived fields.

    Not frozen, though nothing changes it once made: a frozen dataclass's ``__init__`` sets each
    of its nineteen fields through ``object.__setattr__``, ~2 µs a ticket of a batch file's
    ~12 µs of normalization (a plain one assigns them)."""

    draft: TicketDraft
    received_at: datetime
    citizen_hash: str | None
    citizen_display_name: str | None
    citizen_phone_masked: str | None
    citizen_id_masked: str | None
    citizen_email_masked: str | None
    public_title: str
    public_content: str
    public_address: str | None
    grid_code: str | None
    category_code: str
    category_source: CategorySource
    classification: Classification | None
    urgency: Urgency
    urgency_raised: bool
    is_enterprise: bool
    time_limit_profile: TimeLimitProfile
    attachments: tuple[AttachmentMeta, ...] = field(default_factory=tuple)

    @property
    def public_extra(self) -> dict[str, Any]:
        """The channel's extra fields, scrubbed (computed when asked: the event does not carry
        them, and a batch row's scrub of every extra column is a measurable share of its CPU)."""
        return pii.scrub_value(self.draft.extra)  # type: ignore[no-any-return]

    def store_row(self) -> dict[str, Any]:
        """Column values for intake's own ticket row (clear text allowed here, nowhere else)."""
        d = self.draft
        return {
            "channel": d.channel_code,
            "external_id": d.external_id,
            "received_at": self.received_at,
            "title": d.title,
            "content": d.content,
            "citizen_name": d.citizen_name,
            "citizen_phone": d.citizen_phone,
            "citizen_id_number": d.citizen_id_number,
            "citizen_hash": self.citizen_hash,
            "address": d.address,
            "longitude": d.longitude,
            "latitude": d.latitude,
            "grid_code": self.grid_code,
            "category_code": self.category_code,
            "urgency": self.urgency,
            "is_enterprise": self.is_enterprise,
            "time_limit_profile": self.time_limit_profile,
            "extra": {**d.extra, **({"citizen_email": d.citizen_email} if d.citizen_email else {})},
        }

    def public_fields(self) -> dict[str, Any]:
        """The fields of the canonical ticket event: no clear-text contact or ID number."""
        d = self.draft
        return {
            "channel": d.channel_code,
            "external_id": d.external_id,
            "received_at": self.received_at,
            "title": self.public_title,
            "content": self.public_content,
            "citizen": {
                "display_name": self.citizen_display_name,
                "phone_masked": self.citizen_phone_masked,
                "citizen_hash": self.citizen_hash,
            },
            "location": {
                "address": self.public_address,
                "longitude": d.longitude,
                "latitude": d.latitude,
                "grid_code": self.grid_code,
            },
            "category_code": self.category_code,
            "urgency": self.urgency,
            "is_enterprise": self.is_enterprise,
            "attachments": [a.model_dump() for a in self.attachments],
            "time_limit_profile": self.time_limit_profile,
        }


_TICKET_ID = re.compile(r"^\d{8}-\d{7}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")

# The only strings of a published ticket (and of its views) that are not scrubbed: identifiers
# intake issues, digests, and codes of the city's registries (grids, channels, categories),
# each passed only in its own shape
# (a ticket number or a grid code can look like an ID number; a hex digest can hold a run of
# digits like a phone's). Everything else is scrubbed, so a field added later is covered too.
_STRUCTURED: dict[str, Callable[[str], bool]] = {
    "ticket_id": lambda v: _TICKET_ID.match(v) is not None,
    "repeat_of": lambda v: _TICKET_ID.match(v) is not None,
    "citizen_hash": lambda v: _HEX_DIGEST.match(v) is not None,
    "sha256": lambda v: _HEX_DIGEST.match(v) is not None,
    "grid_code": is_grid_code,
    "area_code": lambda v: registered(v) is not None,
    "channel": lambda v: _is_channel(v),
    "category_code": taxonomy.is_known,
}


def _is_channel(code: str) -> bool:
    try:
        get_channel(code)
    except UnknownChannel:
        return False
    return True


class Scrubbed(str):
    """Text normalization has already scrubbed or masked: the public pass takes it as it is
    instead of scrubbing it a second time (a measurable share of a small request's CPU)."""

    __slots__ = ()


def _scrubbed(text: str | None) -> Scrubbed | None:
    return Scrubbed(pii.scrub_text(text)) if text else None


def _masked(value: str | None) -> Scrubbed | None:
    return Scrubbed(value) if value is not None else None


# Values that hold no text: taken as they are, without a call per field.
_NO_TEXT: frozenset[type] = frozenset({type(None), bool, int, float, datetime, Scrubbed})


def scrub_public(value: Any, *, key: str | None = None, memo: GroupMemo | None = None) -> Any:
    """``value`` with every string scrubbed of phone, ID numbers and e-mail addresses, except
    text already ``Scrubbed`` and the structured fields (by key) in their expected shape.
    ``memo``, shared by a group, gives a dict's plain strings once per distinct key and value
    (a file's channel, codes, grids and profiles repeat on every row)."""
    if type(value) is dict:  # the common case first, its textless fields and strings inline
        out = {}
        known = memo.public if memo is not None else None
        for k, v in value.items():
            kind = type(v)
            if kind in _NO_TEXT:
                out[k] = v
            elif kind is str:
                if known is not None:  # by key, then value: no tuple to allocate and collect
                    seen = known.get(k)
                    if seen is None:
                        seen = known[k] = {}
                    found = seen.get(v)
                    if found is None:
                        found = seen[v] = _public_text(k, v)
                    out[k] = found
                else:
                    check = _STRUCTURED.get(k)
                    out[k] = v if check is not None and check(v) else pii.scrub_text(v)
            elif kind is tuple and not v:  # no attachments: the same empty tuple
                out[k] = v
            else:
                out[k] = scrub_public(v, key=k, memo=memo)
        return out
    if isinstance(value, Scrubbed):
        return value
    if isinstance(value, str):
        return _public_text(key, value)
    if isinstance(value, dict):
        return {k: scrub_public(v, key=k, memo=memo) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_public(v, key=key, memo=memo) for v in value)
    return value


def scrub_public_columns(
    columns: Mapping[str, Sequence[Any]], *, memo: GroupMemo | None = None
) -> dict[str, list[Any]]:
    """``scrub_public`` of many dicts with the same keys, given as one column a key: each
    column's distinct plain strings scrubbed once (through ``memo`` when given) and the column
    mapped through them; a column whose values are anything but strings and textless values is
    scrubbed value by value as a dict's would be. Row ``i`` of the result is ``scrub_public``
    of row ``i`` of ``columns`` (a test holds them equal)."""
    known = memo.public if memo is not None else {}
    out: dict[str, list[Any]] = {}
    for key, column in columns.items():
        kinds = set(map(type, column))
        if kinds <= _NO_TEXT:
            out[key] = list(column)
        elif kinds <= _PLAIN:
            seen = known.setdefault(key, {})
            for value in {v for v in column if type(v) is str} - seen.keys():
                seen[value] = _public_text(key, value)
            out[key] = (
                list(map(seen.__getitem__, column))
                if kinds == _STR
                else [seen[v] if type(v) is str else v for v in column]
            )
        elif kinds == _TUPLE and not any(column):  # no attachments: the same empty tuples
            out[key] = list(column)
        else:
            out[key] = [scrub_public({key: v}, memo=memo)[key] for v in column]
    return out


_STR: frozenset[type] = frozenset({str})
_TUPLE: frozenset[type] = frozenset({tuple})
_PLAIN: frozenset[type] = _NO_TEXT | _STR


def _public_text(key: str | None, value: str) -> str:
    """A plain string of the public view under ``key``: as it is if the key is a structured
    field and the value has its shape, else scrubbed."""
    check = _STRUCTURED.get(key) if key is not None else None
    return value if check is not None and check(value) else pii.scrub_text(value)


class GroupMemo:
    """What normalization derives from one value alone, computed once per distinct value of a
    group: a file's rows share titles, addresses, names and texts (a patrol walks its own grid).
    Each entry is exactly what the call gives; the memo lives for one group and holds nothing
    of the salt or clear-text contact (names and texts are keyed by themselves, already in
    the group's memory)."""

    __slots__ = ("_hazards", "_names", "_profiles", "_texts", "public")

    def __init__(self) -> None:
        self._names: dict[str | None, Scrubbed | None] = {}
        self._texts: dict[str, Scrubbed] = {}
        self._hazards: dict[str, bool] = {}
        self._profiles: dict[tuple[str, bool, Urgency], TimeLimitProfile] = {}
        self.public: dict[str, dict[str, str]] = {}  # scrub_public's, by key and value

    def hazard(self, text: str) -> bool:
        """Whether ``text`` names an immediate hazard (``_HAZARDS``)."""
        found = self._hazards.get(text)
        if found is None:
            found = self._hazards[text] = _HAZARDS.search(text) is not None
        return found

    def profile(self, channel: Channel, is_enterprise: bool, urgency: Urgency) -> TimeLimitProfile:
        """``time_limit_profile_for(channel, is_enterprise=…, urgency=…)``, which reads only the
        channel's own profile of it."""
        key = (channel.time_limit_profile, is_enterprise, urgency)
        found = self._profiles.get(key)
        if found is None:
            found = self._profiles[key] = time_limit_profile_for(
                channel, is_enterprise=is_enterprise, urgency=urgency
            )
        return found

    def scrubbed(self, text: str) -> Scrubbed:
        """``Scrubbed(pii.scrub_text(text))``."""
        found = self._texts.get(text)
        if found is None:
            found = self._texts[text] = Scrubbed(pii.scrub_text(text))
        return found

    def name(self, name: str | None) -> Scrubbed | None:
        """``_masked(pii.mask_name(name))``."""
        try:
            return self._names[name]
        except KeyError:
            found = self._names[name] = _masked(pii.mask_name(name))
            return found


def raised_urgency(urgency: Urgency, text: str) -> Urgency:
    """``urgency``, raised to ``urgent`` when the text names an immediate hazard."""
    if urgency == "normal" and _HAZARDS.search(text):
        return "urgent"
    return urgency


def normalize(
    draft: TicketDraft,
    *,
    channel: Channel,
    salt: str,
    now: datetime,
    locate: GridLocator | None = None,
    classify: Classifier | None = None,
    classification: Classification | None = None,
    memo: GroupMemo | None = None,
) -> NormalizedTicket:
    """Mask, hash, scrub, locate, classify and set time limits for one draft.

    ``classification``, when given, is the draft's already computed (a group is classified in
    one matrix product); it is used only for a draft without a category of its own. ``memo``,
    shared by a group's drafts, gives the per-value results once per distinct value."""
    if draft.channel_code != channel.code:
        raise ValueError(f"draft of {draft.channel_code!r} normalized as {channel.code!r}")
    grid_code = draft.grid_code
    if grid_code is None and locate is not None:
        grid_code = locate(draft.address, draft.longitude, draft.latitude)
    (normalized,) = normalize_many(
        [(channel, draft)],
        grid_codes=[grid_code],
        salt=salt,
        now=now,
        classify=classify,
        classifications={id(draft): classification} if classification is not None else None,
        memo=memo,
    )
    return normalized


def normalize_many(
    items: Sequence[tuple[Channel, TicketDraft]],
    *,
    grid_codes: Sequence[str | None],
    salt: str,
    now: datetime,
    classify: Classifier | None = None,
    classifications: Mapping[int, Classification] | None = None,
    memo: GroupMemo | None = None,
) -> list[NormalizedTicket]:
    """``normalize`` of each (channel, draft), the draft's grid code given (``grid_codes[i]``,
    what ``locate`` gives for draft ``i`` when it has none of its own) and its classification
    looked up by the draft's identity in ``classifications``: the same tickets (a test holds
    them equal), with what repeats across a file done once — the hazard search of each distinct
    title, the time-limit profile of each (channel, enterprise, urgency) — and no keyword call
    per draft. A draft that fails raises, as ``normalize`` does; the caller fails its unit."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if memo is None:
        memo = GroupMemo()
    given = classifications or {}
    normalize_phone, hash_of_digits = pii.normalize_phone, pii.citizen_hash_of_digits
    mask_phone_digits, mask_id, mask_email = (
        pii.mask_phone_digits,
        pii.mask_id_number,
        pii.mask_email,
    )
    scrubbed, name, hazard, profile = memo.scrubbed, memo.name, memo.hazard, memo.profile
    out: list[NormalizedTicket] = []
    for (channel, draft), located in zip(items, grid_codes, strict=True):
        if draft.channel_code != channel.code:
            raise ValueError(f"draft of {draft.channel_code!r} normalized as {channel.code!r}")
        grid_code = draft.grid_code
        if grid_code is None:
            grid_code = located
        title, content = draft.title, draft.content
        classification = None
        if draft.category_code is not None:
            category, source = draft.category_code, "channel"
        else:
            classification = given.get(id(draft))
            if classification is None:
                classification = (classify or text_classifier.classify)(title, content)
            category, source = classification.code, "classifier"
        # ``raised_urgency`` of title and content joined by a newline: no hazard holds one, so
        # each is searched alone (a file's titles repeat) with the same result.
        urgency = draft.urgency
        if urgency == "normal" and (hazard(title) or _HAZARDS.search(content) is not None):
            urgency = "urgent"
        is_enterprise = draft.is_enterprise or channel.is_enterprise_channel
        digits = normalize_phone(draft.citizen_phone)
        phone_masked = mask_phone_digits(digits)
        id_masked = mask_id(draft.citizen_id_number)
        email_masked = mask_email(draft.citizen_email)
        address = draft.address
        out.append(
            NormalizedTicket(
                draft,
                draft.received_at or now,
                hash_of_digits(digits, id_number=draft.citizen_id_number, salt=salt),
                name(draft.citizen_name),
                Scrubbed(phone_masked) if phone_masked is not None else None,
                Scrubbed(id_masked) if id_masked is not None else None,
                Scrubbed(email_masked) if email_masked is not None else None,
                scrubbed(title),
                scrubbed(content),
                scrubbed(address) if address else None,
                grid_code,
                category,
                source,  # type: ignore[arg-type]
                classification,
                urgency,
                urgency != draft.urgency,
                is_enterprise,
                profile(channel, is_enterprise, urgency),
                draft.attachments,
            )
        )
    return out
