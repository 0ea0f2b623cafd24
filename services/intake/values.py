"""Reading a channel's values: paths into payloads, "not given", and text, numbers, booleans and
times as channels really send them (spreadsheet floats for phone numbers, Chinese yes/no, local
times in the channel's zone); every refusal is a PayloadError naming the field."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any

from services.intake.errors import PayloadError

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
MISSING: Any = object()
TITLE_LIMIT = 30


def value_key(raw: Any) -> str:
    """A channel value as the key of a value map: booleans and whole floats in their usual form."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def lookup(payload: Any, path: str) -> Any:
    """The value at ``path`` (a flat key first, then a dotted path); ``MISSING`` if absent."""
    if type(payload) is dict:  # the common case, without the abstract Mapping check
        found = payload.get(path, MISSING)
        if found is not MISSING:
            return found
    elif isinstance(payload, Mapping) and path in payload:
        return payload[path]
    current = payload
    for part in path.split("."):
        if isinstance(current, dict | Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def is_empty(value: Any) -> bool:
    """Absent, ``None``, or an empty string, list or object: "not given" in any channel."""
    return value is MISSING or value is None or value == "" or value == [] or value == {}


def as_text(value: Any, path: str) -> str:
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


def as_float(value: Any, path: str) -> float | None:
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


def as_bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    key = value_key(value).lower()
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
    used = consumed if isinstance(consumed, set | frozenset) else set(consumed)

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
