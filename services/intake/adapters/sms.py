"""SMS: a citizen's free-text message. The sender's number is the contact; the first sentence
becomes the title; a labelled address (``地址：…``) in the text is picked up.

The SMS gateway pushes each mobile-originated message as JSON or a form with ``phone_number``,
``content``, ``send_time`` and ``sequence_id`` (common gateway field names; ``from``/``text``/
``timestamp``/``msg_id`` are accepted too, and a channel's mapping may rename them).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.intake.adapters.common import labelled_address, preset_for, require_format
from services.intake.adapters.form import decode_form
from services.intake.adapters.json_body import load_json_object
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import FieldMapping, apply_mapping, is_empty, lookup, parse_mapping

SMS_MAPPING: FieldMapping = parse_mapping(
    {
        "citizen_phone": ["phone_number", "from", "sender", "mobile"],
        "content": ["content", "text", "msg"],
        "received_at": ["send_time", "timestamp", "time"],
        "external_id": ["sequence_id", "msg_id", "id"],
    },
    model=TicketDraft,
    where="sms",
)


def _draft(payload: Mapping[str, Any], mapping: FieldMapping, channel: Channel) -> TicketDraft:
    phone_rule = mapping.rule_for("citizen_phone")
    content_rule = mapping.rule_for("content")
    if phone_rule is None or content_rule is None:
        raise ValueError(
            f"channel {channel.code!r}: an SMS mapping needs citizen_phone and content"
        )
    if all(is_empty(lookup(payload, path)) for path in phone_rule.paths):
        raise PayloadError(phone_rule.paths[0], "the sender's number is missing")
    text = next(
        (str(v) for path in content_rule.paths if isinstance(v := lookup(payload, path), str)),
        "",
    )
    preset = preset_for(channel)
    address = labelled_address(text)
    if address:
        preset["address"] = address
    return apply_mapping(
        payload, mapping, model=TicketDraft, channel_code=channel.code, tz=channel.tz, preset=preset
    )


def parse_sms(
    text: str,
    *,
    sender: str,
    channel: Channel,
    received_at: datetime | None = None,
    message_id: str | None = None,
) -> TicketDraft:
    """One appeal from the text of an SMS and its sender's number."""
    require_format(channel, "sms")
    payload: dict[str, Any] = {"phone_number": sender, "content": text}
    if received_at is not None:
        payload["send_time"] = received_at
    if message_id is not None:
        payload["sequence_id"] = message_id
    return _draft(payload, SMS_MAPPING, channel)


def parse_sms_delivery(
    body: bytes | str | Mapping[str, Any],
    channel: Channel,
    *,
    content_type: str | None = None,
    charset: str = "utf-8",
) -> TicketDraft:
    """One appeal from the SMS gateway's push of a mobile-originated message (JSON or form)."""
    require_format(channel, "sms")
    payload: Mapping[str, Any]
    if isinstance(body, Mapping):
        payload = body
    else:
        is_form = content_type is not None and "form-urlencoded" in content_type
        start = body.lstrip()[:1]
        if is_form or start not in (b"{", "{"):
            payload = decode_form(body, charset=charset)
        else:
            payload = load_json_object(body, charset=charset)
    return _draft(payload, SMS_MAPPING.merged(channel.mapping), channel)
