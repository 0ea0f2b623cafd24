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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.errors import PayloadError
from services.intake.values import (
    as_bool,
    as_float,
    as_text,
    derive_title,
    is_empty,
    jsonable,
    leftovers,
    lookup,
    parse_datetime,
    value_key,
)

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
    kind: Kind = field(init=False)  # what the target holds; ``extra.*`` keeps the value as it came

    def __post_init__(self) -> None:
        kind = "any" if self.target.startswith(EXTRA_PREFIX) else _KIND_OF[self.target]
        object.__setattr__(self, "kind", kind)


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """A channel's whole mapping: one rule per target, plus defaults for empty targets."""

    rules: tuple[FieldRule, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    consumed: frozenset[str] = field(init=False)  # every path some rule reads

    def __post_init__(self) -> None:
        object.__setattr__(self, "consumed", frozenset(p for r in self.rules for p in r.paths))

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
        values = MappingProxyType({value_key(k): v for k, v in values.items()})
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


def convert(rule: FieldRule, value: Any, path: str, tz: tzinfo) -> Any:
    """One payload value as ``rule``'s target holds it; a ``PayloadError`` names ``path``."""
    if rule.values is not None:
        key = value_key(value)
        if key not in rule.values:
            allowed = ", ".join(sorted(rule.values))
            raise PayloadError(path, f"unknown value {key!r}; expected one of {allowed}")
        value = rule.values[key]
        if value is None:
            return None
    kind = rule.kind
    if kind == "text":
        return as_text(value, path).strip() or None
    if kind == "float":
        return as_float(value, path)
    if kind == "bool":
        return as_bool(value, path)
    if kind == "datetime":
        return parse_datetime(value, path, tz=tz, fmt=rule.datetime_format)
    return jsonable(value)


def _read(rule: FieldRule, payload: Mapping[str, Any], tz: tzinfo) -> tuple[Any, str]:
    if rule.join is not None:
        parts = [
            (as_text(value, path).strip(), path)
            for path in rule.paths
            if not is_empty(value := lookup(payload, path))
        ]
        parts = [(text, path) for text, path in parts if text]
        if not parts:
            return None, rule.paths[0]
        return convert(rule, rule.join.join(t for t, _ in parts), parts[0][1], tz), parts[0][1]
    for path in rule.paths:
        value = lookup(payload, path)
        if not is_empty(value):
            return convert(rule, value, path, tz), path
    if rule.has_default:
        return rule.default, rule.paths[0]
    return None, rule.paths[0]


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
    for rule in mapping.rules:
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
        extra = {**leftovers(payload, mapping.consumed), **extra}
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
