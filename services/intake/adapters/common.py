"""Helpers the payload adapters share: decoding bodies, channel presets, labelled free text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from services.intake.canonical import AttachmentMeta
from services.intake.channels import Channel, PayloadFormat
from services.intake.errors import PayloadError
from shared.pii import is_landline, is_mobile, normalize_phone

_LABELLED_PHONE = re.compile(
    r"(?:联系电话|联系方式|手机号码|手机号|手机|电话|Tel|Phone)\s*[:：]?\s*(\+?[\d\-\s()（）]{7,20}\d)",
    re.IGNORECASE,
)
_LABELLED_ADDRESS = re.compile(
    r"(?:详细地址|事发地址|事发地点|住址|地址|位置)\s*[:：]\s*([^\n，,。；;]{4,120})"
)
_LABELLED_NAME = re.compile(r"(?:姓名|联系人|反映人)\s*[:：]\s*([\u4e00-\u9fff·]{2,6})")


@dataclass(frozen=True, slots=True)
class AttachmentBlob:
    """An attachment's metadata (on the draft) and its bytes (for blob storage)."""

    meta: AttachmentMeta
    data: bytes


def require_format(channel: Channel, *formats: PayloadFormat) -> None:
    """Guard against wiring a channel to the wrong adapter (a programming error, not bad input)."""
    if channel.payload_format not in formats:
        raise ValueError(
            f"channel {channel.code!r} posts {channel.payload_format}, not {' or '.join(formats)}"
        )


def preset_for(channel: Channel) -> dict[str, Any]:
    """Draft values implied by the channel itself (enterprise channels' appeals are enterprise)."""
    return {"is_enterprise": True} if channel.is_enterprise_channel else {}


def charset_of(content_type: str | None, default: str = "utf-8") -> str:
    """The ``charset`` parameter of a Content-Type header, or ``default``."""
    if not content_type:
        return default
    message = Message()
    message["content-type"] = content_type
    charset = message.get_content_charset()
    return charset or default


def decode_text(body: bytes | str, charset: str = "utf-8", *, field: str = "body") -> str:
    """Body bytes as text in ``charset``; undecodable bytes are a ``PayloadError``."""
    if isinstance(body, str):
        return body
    try:
        return body.decode(charset)
    except LookupError:
        raise PayloadError(field, f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        raise PayloadError(field, f"not valid {charset} text (byte {exc.start})") from None


def labelled_phone(text: str) -> str | None:
    """A phone number the writer labelled as theirs (``联系电话：…``), if it is a real one."""
    for match in _LABELLED_PHONE.finditer(text):
        digits = normalize_phone(match.group(1))
        if digits and (is_mobile(digits) or is_landline(digits)):
            return digits
    return None


def labelled_address(text: str) -> str | None:
    """An address the writer labelled (``地址：…``)."""
    match = _LABELLED_ADDRESS.search(text)
    return match.group(1).strip() if match else None


def labelled_name(text: str) -> str | None:
    """A name the writer labelled (``姓名：…``)."""
    match = _LABELLED_NAME.search(text)
    return match.group(1) if match else None


def as_object(value: Any, *, field: str = "body") -> Mapping[str, Any]:
    """``value`` if it is a JSON object (dict), else a ``PayloadError``."""
    if not isinstance(value, Mapping):
        raise PayloadError(field, f"expected a JSON object, got {type(value).__name__}")
    return value
