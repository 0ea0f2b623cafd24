"""The channel registry: the city's 72 appeal inlets (and the callback channel), kept as data.

``data/channels.yaml`` is the source; this module loads it once, validates it (72 unique appeal
channels, known families, formats and time-limit profiles, well-formed field mappings) and hands
out frozen ``Channel`` objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel

from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.mapping import FieldMapping, parse_mapping
from shared.errors import DomainError

Family = Literal[
    "phone",
    "web",
    "mobile",
    "social",
    "mail",
    "letters_visits",
    "in_person",
    "grid",
    "partner_hotline",
    "gov_platform",
    "media",
    "representative",
]
PayloadFormat = Literal["json", "form", "email", "sms", "csv", "xlsx", "open311"]
TimeLimitProfile = Literal["standard", "enterprise_2115", "whistle", "urgent"]
ChannelKind = Literal["appeal", "callback"]

FAMILIES: tuple[str, ...] = get_args(Family)
PAYLOAD_FORMATS: tuple[str, ...] = get_args(PayloadFormat)
TIME_LIMIT_PROFILES: tuple[str, ...] = get_args(TimeLimitProfile)
APPEAL_CHANNEL_COUNT = 72
DEFAULT_TIMEZONE = "Asia/Shanghai"

_CODE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_MAPPED_FORMATS = {"json", "form"}
_FIELDS = {
    "code",
    "name_zh",
    "name_en",
    "family",
    "payload_format",
    "time_limit_profile",
    "active",
    "kind",
    "note",
    "mapping",
    "defaults",
    "timezone",
}


class UnknownChannel(DomainError, KeyError):
    """No channel has this code."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)

    def __str__(self) -> str:
        return f"unknown channel code {self.code!r}"

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "field": "code"}


class RegistryError(ValueError):
    """``channels.yaml`` is malformed; the message says which channel and what."""


@dataclass(frozen=True, slots=True)
class Channel:
    """One inlet: who it is, what it posts, and which time limits its appeals get by default."""

    code: str
    name_zh: str
    name_en: str
    family: Family
    payload_format: PayloadFormat
    time_limit_profile: TimeLimitProfile
    active: bool = True
    kind: ChannelKind = "appeal"
    note: str | None = None
    mapping: FieldMapping | None = None
    timezone: str = DEFAULT_TIMEZONE

    @property
    def tz(self) -> ZoneInfo:
        """The time zone for times the channel sends without an offset."""
        return ZoneInfo(self.timezone)

    @property
    def is_enterprise_channel(self) -> bool:
        """Enterprise channels' appeals run on the 2115 time limits."""
        return self.time_limit_profile == "enterprise_2115"

    def public(self) -> dict[str, Any]:
        """The channel as ``GET /channels`` shows it (no mapping internals)."""
        return {
            "code": self.code,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "family": self.family,
            "payload_format": self.payload_format,
            "time_limit_profile": self.time_limit_profile,
            "active": self.active,
            "kind": self.kind,
            "note": self.note,
        }


@dataclass(frozen=True)
class ChannelRegistry:
    """Every channel by code; the appeal channels in file order."""

    by_code: Mapping[str, Channel]

    @cached_property
    def appeal(self) -> tuple[Channel, ...]:
        """The appeal inlets (72), in file order."""
        return tuple(c for c in self.by_code.values() if c.kind == "appeal")

    @cached_property
    def callback(self) -> tuple[Channel, ...]:
        """The callback (回访) channels."""
        return tuple(c for c in self.by_code.values() if c.kind == "callback")

    def get(self, code: str) -> Channel:
        """The channel with this code; ``UnknownChannel`` names an unknown code."""
        try:
            return self.by_code[code]
        except KeyError:
            raise UnknownChannel(code) from None


def _choice(entry: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str) -> str:
    value = entry.get(key)
    if value not in allowed:
        raise RegistryError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: {key} is required")
    return value.strip()


def _channel(entry: Any, *, kind: ChannelKind, position: int) -> Channel:
    if not isinstance(entry, dict):
        raise RegistryError(f"channel #{position}: expected a mapping")
    code = entry.get("code")
    where = f"channel {code!r}" if code else f"channel #{position}"
    if not isinstance(code, str) or not _CODE.match(code):
        raise RegistryError(
            f"{where}: code must be a lower-case ASCII slug like 'hotline-12345-phone'"
        )
    unknown = set(entry) - _FIELDS
    if unknown:
        raise RegistryError(f"{where}: unknown keys {sorted(unknown)}")
    if entry.get("kind", "appeal") != kind:
        raise RegistryError(f"{where}: kind {entry.get('kind')!r} in the {kind} section")
    payload_format = _choice(entry, "payload_format", PAYLOAD_FORMATS, where)
    active = entry.get("active", True)
    if not isinstance(active, bool):
        raise RegistryError(f"{where}: active is true or false")
    timezone = entry.get("timezone", DEFAULT_TIMEZONE)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RegistryError(f"{where}: unknown timezone {timezone!r}") from None
    model: type[BaseModel] = TicketDraft if kind == "appeal" else CallbackDraft
    spec, defaults = entry.get("mapping"), entry.get("defaults")
    if spec is not None and not isinstance(spec, dict):
        raise RegistryError(f"{where}: mapping is a table of field → path")
    if defaults is not None and not isinstance(defaults, dict):
        raise RegistryError(f"{where}: defaults is a table of field → value")
    if payload_format in _MAPPED_FORMATS and not spec:
        raise RegistryError(f"{where}: {payload_format} channels need a field mapping")
    if payload_format == "email" and spec:
        raise RegistryError(f"{where}: e-mail channels have no field mapping")
    mapping = None
    if spec or defaults:
        try:
            mapping = parse_mapping(spec, model=model, where=f"{where}.mapping", defaults=defaults)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
    required = ("content",) if kind == "appeal" else ("ticket_id", "resolved", "satisfaction")
    if payload_format in _MAPPED_FORMATS and mapping is not None:
        missing = [t for t in required if mapping.rule_for(t) is None]
        if missing:
            raise RegistryError(f"{where}: the mapping does not fill {', '.join(missing)}")
    note = entry.get("note")
    return Channel(
        code=code,
        name_zh=_text(entry, "name_zh", where),
        name_en=_text(entry, "name_en", where),
        family=_choice(entry, "family", FAMILIES, where),  # type: ignore[arg-type]
        payload_format=payload_format,  # type: ignore[arg-type]
        time_limit_profile=_choice(entry, "time_limit_profile", TIME_LIMIT_PROFILES, where),  # type: ignore[arg-type]
        active=active,
        kind=kind,
        note=str(note).strip() if note else None,
        mapping=mapping,
        timezone=timezone,
    )


def load_registry(text: str, *, appeal_count: int = APPEAL_CHANNEL_COUNT) -> ChannelRegistry:
    """Parse and validate a registry document (the text of ``channels.yaml``)."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or not isinstance(document.get("channels"), list):
        raise RegistryError("the registry needs a 'channels' list")
    entries: list[Channel] = [
        _channel(entry, kind="appeal", position=i)
        for i, entry in enumerate(document["channels"], start=1)
    ]
    entries += [
        _channel(entry, kind="callback", position=i)
        for i, entry in enumerate(document.get("callback_channels") or [], start=1)
    ]
    by_code: dict[str, Channel] = {}
    for channel in entries:
        if channel.code in by_code:
            raise RegistryError(f"channel {channel.code!r} is listed twice")
        by_code[channel.code] = channel
    registry = ChannelRegistry(by_code=MappingProxyType(by_code))
    if len(registry.appeal) != appeal_count:
        raise RegistryError(
            f"expected {appeal_count} appeal channels, found {len(registry.appeal)}"
        )
    return registry


@cache
def registry() -> ChannelRegistry:
    """The registry shipped with intake (loaded and validated once)."""
    text = resources.files("services.intake.data").joinpath("channels.yaml").read_text("utf-8")
    return load_registry(text)


def channels() -> tuple[Channel, ...]:
    """The 72 appeal channels, in registry order."""
    return registry().appeal


def callback_channels() -> tuple[Channel, ...]:
    """The callback (回访) channels."""
    return registry().callback


def get_channel(code: str) -> Channel:
    """The channel with this code (appeal or callback); ``UnknownChannel`` if there is none."""
    return registry().get(code)


def time_limit_profile_for(
    channel: Channel, *, is_enterprise: bool, urgency: str = "normal"
) -> TimeLimitProfile:
    """The time limits one appeal runs on.

    A whistle channel keeps its whistle; a critical appeal, or any from an urgent channel, runs
    urgent; an enterprise appeal from any channel runs on 2115; otherwise the channel's default.
    """
    if channel.time_limit_profile == "whistle":
        return "whistle"
    if channel.time_limit_profile == "urgent" or urgency == "critical":
        return "urgent"
    if is_enterprise:
        return "enterprise_2115"
    return channel.time_limit_profile
