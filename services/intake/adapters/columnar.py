"""A CSV batch file's drafts built a column at a time.

Row by row, a 1,000-row file costs a mapping pass, a dict walk for control characters and a
``TicketDraft`` validation per row (~30 µs a row, the largest single share of a batch's CPU).
Here each column is read and checked at once: one control-character search per column, the
mapping's rules as list comprehensions over their columns, the phone, category, grid and
urgency checks per distinct value, and the draft built from the checked values without a
second validation.

The row-by-row path stays the definition. This path takes only rows it can prove valid by the
draft's own rules and leaves every other row (a bad value, a control character, a short row, a
field it does not check) to that path, which builds or refuses it exactly as before, with the
same error; a property test holds the two equal on varied files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from services.intake.canonical import (
    CITIZEN_NAME_MAX,
    CONTENT_MAX,
    TITLE_MAX,
    URGENCIES,
    TicketDraft,
    _check_id_number,
    _check_phone,
    _check_received_at,
    control_character,
)
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.locate import is_grid_code
from services.intake.mapping import EXTRA_PREFIX, FieldMapping, FieldRule, convert
from services.intake.values import derive_title
from shared import taxonomy

_CHANNEL_CODE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class _Refused(Exception):
    """A value this path does not take: its row goes the row-by-row way."""


def _within(limit: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not str or not 1 <= len(value) <= limit:
            raise _Refused
        return value

    return check


def _phone(value: Any) -> Any:
    if type(value) is not str or len(value) > 32:
        raise _Refused
    if not (value.isascii() and value.isdecimal() and 3 <= len(value) <= 20):
        try:
            _check_phone(value)
        except ValueError:
            raise _Refused from None
    return value


def _id_number(value: Any) -> Any:
    try:
        return _check_id_number(value)
    except (ValueError, TypeError):
        raise _Refused from None


def _known(test: Callable[[str], bool], limit: int | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not str or (limit is not None and len(value) > limit):
            raise _Refused
        if not test(value):
            raise _Refused
        return value

    return check


def _received_at(value: Any) -> Any:
    if type(value) is not datetime or value.utcoffset() is None:
        raise _Refused
    try:
        return _check_received_at(value)
    except ValueError:
        raise _Refused from None


def _flag(value: Any) -> Any:
    if type(value) is not bool:
        raise _Refused
    return value


def _between(low: float, high: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not float or not low <= value <= high:
            raise _Refused
        return value

    return check


# The draft's rules for each field a batch rule fills, for a value the mapping has already
# read (text stripped and non-empty, numbers finite, times aware). A field missing here
# (e-mail, attachments) is left to the row-by-row path whenever a row has a value for it.
# The text fields whose rule is a length alone (``_within``), by their most characters.
_LENGTHS: dict[str, int] = {
    "external_id": 128,
    "citizen_name": CITIZEN_NAME_MAX,
    "title": TITLE_MAX,
    "content": CONTENT_MAX,
    "address": 500,
    "enterprise_name": 200,
}
_CHECKS: dict[str, Callable[[Any], Any]] = {
    **{name: _within(limit) for name, limit in _LENGTHS.items()},
    "citizen_phone": _phone,
    "citizen_id_number": _id_number,
    "grid_code": _known(is_grid_code, 32),
    "category_code": _known(taxonomy.is_known),
    "urgency": _known(URGENCIES.__contains__),
    "is_enterprise": _flag,
    "received_at": _received_at,
    "longitude": _between(-180, 180),
    "latitude": _between(-90, 90),
}
# Fields whose values repeat across a file (codes, flags): checked once per distinct value.
_BY_VALUE = frozenset({"category_code", "grid_code", "urgency", "is_enterprise"})


def _read_column(
    rule: FieldRule, columns: list[Sequence[str]], tz: Any, refused: set[int]
) -> list[Any]:
    """``mapping._read`` of one rule for every row: the first of its columns with a cell that
    is not empty, converted; a row whose value does not convert is added to ``refused``."""
    if rule.kind == "text" and rule.values is None and len(columns) == 1:
        return [v.strip() or None for v in columns[0]]
    out: list[Any] = []
    for k, cells in enumerate(zip(*columns, strict=True)):
        value = None
        for cell, path in zip(cells, rule.paths, strict=True):
            if cell != "":
                try:
                    value = convert(rule, cell, path, tz)
                except PayloadError:
                    refused.add(k)
                break
        out.append(value)
    return out


def _check_column(target: str, column: list[Any], refused: set[int]) -> list[Any]:
    """The column's values as the draft holds them; rows with a value the draft would refuse
    (or this path cannot judge) added to ``refused``."""
    limit = _LENGTHS.get(target)
    if limit is not None and _all_within(column, limit):
        return list(column)  # what the loop below gives such a column
    check = _CHECKS.get(target)
    seen: dict[Any, Any] = {}
    out: list[Any] = []
    for k, value in enumerate(column):
        if value is None:
            out.append(None)
            continue
        try:
            if check is None:
                raise _Refused
            if target in _BY_VALUE:
                if value not in seen:
                    seen[value] = check(value)
                out.append(seen[value])
            else:
                out.append(check(value))
        except _Refused:
            refused.add(k)
            out.append(None)
    return out


def _all_within(column: list[Any], limit: int) -> bool:
    """Whether every value of ``column`` is None or a str of 1 to ``limit`` characters, as
    ``_within(limit)`` takes it: the values' types as one set and their lengths' least and
    most, each made in C, not a call and a ``try`` a value."""
    present = [value for value in column if value is not None] if None in column else column
    if not present:
        return True
    lengths = list(map(len, present)) if set(map(type, present)) == {str} else None
    return lengths is not None and min(lengths) >= 1 and max(lengths) <= limit


def _takes_file(
    header: Sequence[str], mapping: FieldMapping, channel: Channel, preset: Any
) -> bool:
    """Whether this path can read the file at all: plain rules, no defaults, clean names."""
    return (
        not mapping.defaults
        and set(preset) <= {"is_enterprise"}
        and all(r.join is None and not r.has_default for r in mapping.rules)
        and control_character("\n".join(header)) is None
        and len(channel.code) <= 64
        and _CHANNEL_CODE.fullmatch(channel.code) is not None
    )


def columnar_drafts(
    body: Sequence[tuple[int, Sequence[str]]],
    header: Sequence[str],
    mapping: FieldMapping,
    channel: Channel,
    preset: dict[str, Any],
) -> dict[int, TicketDraft]:
    """Drafts of the rows of ``body`` (by index) this path can prove valid; the other rows are
    for ``_row_outcome``. ``mapping`` is cut to the file's columns (``_for_columns``)."""
    if not _takes_file(header, mapping, channel, preset):
        return {}
    width = len(header)
    indexes = [i for i, (_, cells) in enumerate(body) if len(cells) == width]
    if not indexes:
        return {}
    columns: list[Sequence[str]] = list(zip(*(body[i][1] for i in indexes), strict=True))
    refused: set[int] = set()
    for j, column in enumerate(columns):
        if control_character("\n".join(column)) is not None:
            refused.update(k for k, v in enumerate(column) if control_character(v) is not None)
        if not header[j]:  # a value in an unnamed column is the row's error
            refused.update(k for k, v in enumerate(column) if v.strip())
    at = {name: j for j, name in enumerate(header) if name}
    plain: list[tuple[str, list[Any]]] = []
    extras: list[tuple[str, list[Any]]] = []
    for rule in mapping.rules:
        column = _read_column(rule, [columns[at[p]] for p in rule.paths], channel.tz, refused)
        if rule.target.startswith(EXTRA_PREFIX):
            extras.append((rule.target[len(EXTRA_PREFIX) :], column))
        else:
            plain.append((rule.target, _check_column(rule.target, column, refused)))
    leftover = [(name, columns[j]) for name, j in at.items() if name not in mapping.consumed]
    code = channel.code
    drafts: dict[int, TicketDraft] = {}
    for k, i in enumerate(indexes):
        if k in refused:
            continue
        data: dict[str, Any] = dict(preset)
        for target, values in plain:
            if (value := values[k]) is not None:
                data[target] = value
        try:
            _complete(data)
        except _Refused:
            continue
        extra = {name: cell for name, cells in leftover if (cell := cells[k]) != ""}
        for name, values in extras:
            if (value := values[k]) is not None:
                extra[name] = value
        data["extra"] = extra
        data["channel_code"] = code
        if data.get("enterprise_name") is not None:
            data["is_enterprise"] = True
        drafts[i] = _construct(data)
    return drafts


# Every field of a draft in the model's order, with its default (the required ones are always
# given): ``model_construct`` less its per-field loop, which cost more than the rest of a row.
_TEMPLATE: dict[str, Any] = {
    name: None if field.is_required() else field.get_default(call_default_factory=True)
    for name, field in TicketDraft.model_fields.items()
}
_new_draft = TicketDraft.__new__
_set = object.__setattr__


def _construct(data: dict[str, Any]) -> TicketDraft:
    """``TicketDraft.model_construct(set(data), **data)`` for checked ``data`` of the draft's
    own fields (no aliases, no extras, no post-init: what ``model_construct`` would do)."""
    draft = _new_draft(TicketDraft)
    _set(draft, "__dict__", {**_TEMPLATE, **data})
    _set(draft, "__pydantic_fields_set__", set(data))
    _set(draft, "__pydantic_extra__", None)
    _set(draft, "__pydantic_private__", None)
    return draft


def _complete(data: dict[str, Any]) -> None:
    """``mapping._complete_title_and_content`` and the draft's own checks of the two texts and
    of a coordinate pair; ``_Refused`` where the row-by-row path would fail."""
    title, content = data.get("title"), data.get("content")
    if not title and content:
        title = data["title"] = derive_title(content).strip()
    elif not content and title:
        content = data["content"] = title
    elif not content:
        raise _Refused
    if not (title and len(title) <= TITLE_MAX and len(content) <= CONTENT_MAX):
        raise _Refused
    if (data.get("longitude") is None) != (data.get("latitude") is None):
        raise _Refused
