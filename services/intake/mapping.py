"""Declarative field mappings: a channel's own field names → the canonical draft's fields.

A mapping is data (``channels.yaml``), not code. Each target field takes one rule:

``title: subject``
    copy the value at ``subject``;
``citizen_phone: reporter.mobile``
    a dotted path into nested objects (``items.0.name`` indexes a list; a flat key that itself
    contains dots or brackets is found first);
``title: [subject, summary]``
    the first of several paths that has a value;
``content: {paths: [desc, remark], join: "\\n"}``
    every path that has a value, joined;
``urgency: {path: level, values: {"1": normal, "2": urgent}, default: normal}``
    a value map (an unlisted value is an error naming the field) and a default for when the
    payload has no value at all;
``received_at: {path: createTime, format: "%Y%m%d%H%M%S"}``
    a ``strptime`` format; naive times are in the channel's time zone;
``extra.case_type: caseType``
    keep a channel value under a name of our choosing in ``extra``.

``defaults`` give values for targets the payload leaves empty. Every payload field that no rule
reads is kept in the draft's ``extra``, so nothing a channel sends is silently dropped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.errors import PayloadError

Kind = Literal["text", "float", "bool", "datetime", "any"]
Draft = TypeVar("Draft", TicketDraft, CallbackDraft)

_TICKET_KINDS: dict[str, Kind] = {
    "external_id": "text",
    "received_at": "datetime",
    "citizen_name": "text",
    "citizen_phone": "text",
    "citizen_id_number": "text",
    "citizen_email": "text",
    "title": "text",
    "content": "text",
    "address": "text",
    "longitude": "float",
    "latitude": "float",
    "grid_code": "text",
    "category_code": "text",
    "urgency": "text",
    "is_enterprise": "bool",
    "enterprise_name": "text",
}
_CALLBACK_KINDS: dict[str, Kind] = {
    "ticket_id": "text",
    "resolved": "bool",
    "satisfaction": "text",
    "comment": "text",
    "external_id": "text",
    "received_at": "datetime",
}
TARGET_KINDS: dict[type[BaseModel], dict[str, Kind]] = {
    TicketDraft: _TICKET_KINDS,
    CallbackDraft: _CALLBACK_KINDS,
}
EXTRA_PREFIX = "extra."
_KIND_OF: dict[str, Kind] = {**_CALLBACK_KINDS, **_TICKET_KINDS}
# strptime is slow (~20 µs); for these formats an exact-shape check plus fromisoformat is the same
# parse at a twentieth of the cost.
_ISO_SHAPED = {
    "%Y-%m-%d %H:%M:%S": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"),
    "%Y-%m-%d %H:%M": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"),
    "%Y-%m-%d": re.compile(r"\d{4}-\d{2}-\d{2}"),
}

_TRUE = {"1", "true", "t", "yes", "y", "是", "有", "对"}
_FALSE = {"0", "false", "f", "no", "n", "否", "无", "不是"}
_SENTENCE = re.compile(r"[^。！？!?；;\n\r]+[！？!?]?")
_MISSING: Any = object()
TITLE_LIMIT = 30


@dataclass(frozen=True, slots=True)
class FieldRule:
    """How one target field is read from a channel payload."""

    target: str
    paths: tuple[str, ...]
    join: str | None = None
    values: Mapping[str, Any] | None = None
    default: Any = None
    has_default: bool = False
    datetime_format: str | None = None

    @property
    def kind(self) -> Kind:
        """What the target holds; ``extra.*`` targets keep the value as it came."""
        if self.target.startswith(EXTRA_PREFIX):
            return "any"
        return _KIND_OF[self.target]


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """A channel's whole mapping: one rule per target, plus defaults for empty targets."""

    rules: tuple[FieldRule, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def rule_for(self, target: str) -> FieldRule | None:
        """The rule that fills ``target``, if any."""
        for rule in self.rules:
            if rule.target == target:
                return rule
        return None

    def merged(self, overrides: FieldMapping | None) -> FieldMapping:
        """This mapping with ``overrides``' rules and defaults taking precedence per target."""
        if overrides is None:
            return self
        replaced = {rule.target for rule in overrides.rules}
        rules = tuple(r for r in self.rules if r.target not in replaced) + overrides.rules
        defaults = {**self.defaults, **overrides.defaults}
        return FieldMapping(rules=rules, defaults=MappingProxyType(defaults))

    def extended(self, overrides: FieldMapping | None) -> FieldMapping:
        """Like ``merged``, but an overriding rule keeps this mapping's paths as fallbacks."""
        if overrides is None:
            return self
        rules: list[FieldRule] = []
        for rule in overrides.rules:
            base = self.rule_for(rule.target)
            if base is not None:
                paths = rule.paths + tuple(p for p in base.paths if p not in rule.paths)
                rule = dataclasses.replace(rule, paths=paths)
            rules.append(rule)
        return self.merged(FieldMapping(rules=tuple(rules), defaults=overrides.defaults))


# --- building mappings from data -----------------------------------------------------------


def _as_paths(spec: Any, where: str) -> tuple[str, ...]:
    if isinstance(spec, str) and spec:
        return (spec,)
    if isinstance(spec, list) and spec and all(isinstance(p, str) and p for p in spec):
        return tuple(spec)
    raise ValueError(f"{where}: a path is a non-empty string or a list of them")


def _value_key(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def parse_rule(target: str, spec: Any, *, where: str) -> FieldRule:
    """One rule from its data form (a path, a list of paths, or a dict with options)."""
    if not isinstance(spec, dict):
        return FieldRule(target=target, paths=_as_paths(spec, where))
    unknown = set(spec) - {"path", "paths", "join", "values", "default", "format"}
    if unknown:
        raise ValueError(f"{where}: unknown rule options {sorted(unknown)}")
    if ("path" in spec) == ("paths" in spec):
        raise ValueError(f"{where}: give exactly one of 'path' and 'paths'")
    paths = _as_paths(spec.get("path", spec.get("paths")), where)
    values = spec.get("values")
    if values is not None:
        if not isinstance(values, dict) or not values:
            raise ValueError(f"{where}: 'values' maps channel values to ours")
        values = MappingProxyType({_value_key(k): v for k, v in values.items()})
    join = spec.get("join")
    if join is not None and not isinstance(join, str):
        raise ValueError(f"{where}: 'join' is a separator string")
    fmt = spec.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise ValueError(f"{where}: 'format' is a strptime format string")
    return FieldRule(
        target=target,
        paths=paths,
        join=join,
        values=values,
        default=spec.get("default"),
        has_default="default" in spec,
        datetime_format=fmt,
    )


def parse_mapping(
    spec: Mapping[str, Any] | None,
    *,
    model: type[BaseModel],
    where: str,
    defaults: Mapping[str, Any] | None = None,
) -> FieldMapping:
    """A ``FieldMapping`` from its data form; every target must be a field of ``model``."""
    kinds = TARGET_KINDS[model]
    rules: list[FieldRule] = []
    for target, rule_spec in (spec or {}).items():
        if not isinstance(target, str) or not (
            target in kinds or (target.startswith(EXTRA_PREFIX) and len(target) > len(EXTRA_PREFIX))
        ):
            raise ValueError(f"{where}: {target!r} is not a field of {model.__name__}")
        rules.append(parse_rule(target, rule_spec, where=f"{where}.{target}"))
    for target in defaults or {}:
        if target not in kinds:
            raise ValueError(f"{where}: default for unknown field {target!r}")
    return FieldMapping(rules=tuple(rules), defaults=MappingProxyType(dict(defaults or {})))


# --- reading payloads -----------------------------------------------------------------------


def lookup(payload: Any, path: str) -> Any:
    """The value at ``path`` (a flat key first, then a dotted path); ``_MISSING`` if absent."""
    if isinstance(payload, dict | Mapping) and path in payload:
        return payload[path]
    current = payload
    for part in path.split("."):
        if isinstance(current, dict | Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def is_empty(value: Any) -> bool:
    """Absent, ``None``, or an empty string, list or object: "not given" in any channel."""
    return value is _MISSING or value is None or value == "" or value == [] or value == {}


def _text(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise PayloadError(path, "expected text, got a boolean")
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        # Spreadsheets turn phone and id columns into floats: 13812345678.0
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return "\n".join(str(v) for v in value)
    raise PayloadError(path, f"expected text, got {type(value).__name__}")


def _float(value: Any, path: str) -> float | None:
    if isinstance(value, bool):
        raise PayloadError(path, "expected a number, got a boolean")
    if isinstance(value, int | float | Decimal):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PayloadError(path, f"expected a number, got {value!r}") from None
    else:
        raise PayloadError(path, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise PayloadError(path, "expected a finite number")
    return number


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    key = _value_key(value).lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise PayloadError(path, f"expected yes/no (true/false, 1/0, 是/否), got {value!r}")


def parse_datetime(value: Any, path: str, *, tz: tzinfo, fmt: str | None = None) -> datetime:
    """A timezone-aware datetime from ISO 8601, a strptime format, or epoch (s or ms)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 100_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise PayloadError(path, f"not a time: {value!r}") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            shape = _ISO_SHAPED.get(fmt) if fmt is not None else None
            if shape is not None and shape.fullmatch(text):
                parsed = datetime.fromisoformat(text)
            elif fmt is not None:
                parsed = datetime.strptime(text, fmt)
            elif text.isdigit() and len(text) in (10, 13):
                return parse_datetime(int(text), path, tz=tz)
            else:
                parsed = datetime.fromisoformat(text.replace("/", "-"))
        except ValueError:
            expected = f"the format {fmt!r}" if fmt else "an ISO 8601 time"
            raise PayloadError(path, f"expected {expected}, got {value!r}") from None
    else:
        raise PayloadError(path, f"expected a time, got {type(value).__name__}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def _convert(rule: FieldRule, value: Any, path: str, tz: tzinfo) -> Any:
    if rule.values is not None:
        key = _value_key(value)
        if key not in rule.values:
            allowed = ", ".join(sorted(rule.values))
            raise PayloadError(path, f"unknown value {key!r}; expected one of {allowed}")
        value = rule.values[key]
        if value is None:
            return None
    kind = rule.kind
    if kind == "text":
        return _text(value, path).strip() or None
    if kind == "float":
        return _float(value, path)
    if kind == "bool":
        return _bool(value, path)
    if kind == "datetime":
        return parse_datetime(value, path, tz=tz, fmt=rule.datetime_format)
    return jsonable(value)


def _read(rule: FieldRule, payload: Mapping[str, Any], tz: tzinfo) -> tuple[Any, str]:
    if rule.join is not None:
        parts = [
            (_text(value, path).strip(), path)
            for path in rule.paths
            if not is_empty(value := lookup(payload, path))
        ]
        parts = [(text, path) for text, path in parts if text]
        if not parts:
            return None, rule.paths[0]
        return _convert(rule, rule.join.join(t for t, _ in parts), parts[0][1], tz), parts[0][1]
    for path in rule.paths:
        value = lookup(payload, path)
        if not is_empty(value):
            return _convert(rule, value, path, tz), path
    if rule.has_default:
        return rule.default, rule.paths[0]
    return None, rule.paths[0]


def jsonable(value: Any) -> Any:
    """``value`` with times, decimals and tuples turned into what JSON can carry."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return None
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)  # a duration, a formula error, anything else a sheet or decoder yields


def leftovers(payload: Mapping[str, Any], consumed: Iterable[str]) -> dict[str, Any]:
    """The payload without the paths some rule read; emptied objects are dropped."""
    used = set(consumed)

    def prune(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in used:
                continue
            if isinstance(value, Mapping):
                inner = prune(value, path + ".")
                if inner:
                    kept[str(key)] = inner
            elif not is_empty(value):
                kept[str(key)] = jsonable(value)
        return kept

    return prune(payload, "")


def derive_title(content: str, *, limit: int = TITLE_LIMIT) -> str:
    """A title from free text: its first sentence (a question keeps its mark), cut to ``limit``."""
    text = content.strip()
    first = next((m.group().strip() for m in _SENTENCE.finditer(text) if m.group().strip()), text)
    first = " ".join(first.split())
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def apply_mapping(
    payload: Mapping[str, Any],
    mapping: FieldMapping,
    *,
    model: type[Draft],
    channel_code: str,
    tz: tzinfo,
    preset: Mapping[str, Any] | None = None,
    keep_leftovers: bool = True,
) -> Draft:
    """Build a draft from a payload; a ``PayloadError`` names the channel's field at fault."""
    data: dict[str, Any] = dict(preset or {})
    extra: dict[str, Any] = dict(data.pop("extra", {}) or {})
    sources: dict[str, str] = {}
    consumed: list[str] = []
    for rule in mapping.rules:
        consumed.extend(rule.paths)
        value, path = _read(rule, payload, tz)
        sources[rule.target] = path
        if value is None:
            continue
        if rule.target.startswith(EXTRA_PREFIX):
            extra[rule.target[len(EXTRA_PREFIX) :]] = value
        else:
            data[rule.target] = value
    for target, value in mapping.defaults.items():
        if data.get(target) is None:
            data[target] = value
    if model is TicketDraft:
        _complete_title_and_content(data, sources)
    if keep_leftovers:
        extra = {**leftovers(payload, consumed), **extra}
    data["extra"] = extra
    data["channel_code"] = channel_code
    return validate_draft(model, data, sources)


def _complete_title_and_content(data: dict[str, Any], sources: dict[str, str]) -> None:
    """SMS-like channels send only text, some forms only a subject: fill the other one in."""
    if not data.get("title") and data.get("content"):
        data["title"] = derive_title(str(data["content"]))
    elif not data.get("content") and data.get("title"):
        data["content"] = data["title"]
    elif not data.get("content"):
        raise PayloadError(sources.get("content", "content"), "the appeal has no text")


def validate_draft(model: type[Draft], data: dict[str, Any], sources: Mapping[str, str]) -> Draft:
    """``model(**data)``, with a validation error turned into a ``PayloadError`` on the source."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        target = str(first["loc"][0]) if first["loc"] else "body"
        message = first["msg"].removeprefix("Value error, ")
        raise PayloadError(sources.get(target, target), message) from None
