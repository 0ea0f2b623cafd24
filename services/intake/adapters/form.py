"""Form posts (``application/x-www-form-urlencoded``): mailbox, window and hotline web forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from services.intake.adapters.common import decode_text, preset_for, require_format
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import apply_mapping

MAX_FIELDS = 500


def decode_form(
    body: bytes | str | Mapping[str, Any], *, charset: str = "utf-8"
) -> dict[str, str | list[str]]:
    """Form fields by name; a repeated name gives a list. Many government forms post GB18030."""
    if isinstance(body, Mapping):
        return dict(body)
    # Percent-encoded ASCII is the standard; raw bytes in the form's charset are tolerated.
    text = decode_text(body, charset) if isinstance(body, bytes) else body
    try:
        parsed = parse_qs(
            text,
            keep_blank_values=True,
            encoding=charset,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise PayloadError("body", f"form values are not valid {charset}") from None
    except LookupError:
        raise PayloadError("body", f"unknown charset {charset!r}") from None
    except ValueError as exc:
        raise PayloadError("body", f"not a form body: {exc}") from None
    return {name: values[0] if len(values) == 1 else values for name, values in parsed.items()}


def parse_form(
    body: bytes | str | Mapping[str, Any], channel: Channel, *, charset: str = "utf-8"
) -> TicketDraft:
    """One appeal from a form-posting channel, through the channel's field mapping."""
    require_format(channel, "form")
    if channel.mapping is None or channel.kind != "appeal":
        raise ValueError(f"channel {channel.code!r} has no appeal mapping")
    return apply_mapping(
        decode_form(body, charset=charset),
        channel.mapping,
        model=TicketDraft,
        channel_code=channel.code,
        tz=channel.tz,
        preset=preset_for(channel),
    )
