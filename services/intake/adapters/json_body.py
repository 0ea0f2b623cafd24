"""JSON channels: the channel's own field names, read through its declarative mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from services.intake.adapters.common import as_object, decode_text, preset_for, require_format
from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import apply_mapping


def load_json_object(
    body: bytes | str | Mapping[str, Any], *, charset: str = "utf-8"
) -> Mapping[str, Any]:
    """A JSON object from a body; malformed JSON or a non-object is a ``PayloadError``."""
    if isinstance(body, Mapping):
        return body
    if isinstance(body, bytes) and charset.lower().replace("-", "") not in ("utf8", "ascii"):
        body = decode_text(body, charset)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("body", f"not valid JSON: {exc}") from None
    return as_object(value)


def parse_json(
    payload: bytes | str | Mapping[str, Any], channel: Channel, *, charset: str = "utf-8"
) -> TicketDraft:
    """One appeal from a JSON channel, through the channel's field mapping."""
    require_format(channel, "json")
    if channel.mapping is None or channel.kind != "appeal":
        raise ValueError(f"channel {channel.code!r} has no appeal mapping")
    return apply_mapping(
        load_json_object(payload, charset=charset),
        channel.mapping,
        model=TicketDraft,
        channel_code=channel.code,
        tz=channel.tz,
        preset=preset_for(channel),
    )


def parse_callback(
    payload: bytes | str | Mapping[str, Any], channel: Channel, *, charset: str = "utf-8"
) -> CallbackDraft:
    """One 回访 result from a callback channel, through the channel's field mapping."""
    if channel.kind != "callback" or channel.mapping is None:
        raise ValueError(f"channel {channel.code!r} is not a callback channel")
    if channel.payload_format == "form":
        from services.intake.adapters.form import decode_form

        data: Mapping[str, Any] = decode_form(payload, charset=charset)
    else:
        require_format(channel, "json")
        data = load_json_object(payload, charset=charset)
    return apply_mapping(
        data, channel.mapping, model=CallbackDraft, channel_code=channel.code, tz=channel.tz
    )
