"""E-mail channels: an RFC 5322 / MIME message becomes one appeal plus its attachments.

Subject → title (reply/forward prefixes dropped), the text/plain body (or the HTML body as text)
→ content, From → the citizen's name and e-mail, a labelled ``联系电话：…`` in the body → phone,
Message-ID → external id, Date → received time, each attachment → ``AttachmentMeta`` with its
bytes returned alongside for blob storage.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

from services.intake.adapters.common import (
    AttachmentBlob,
    labelled_address,
    labelled_name,
    labelled_phone,
    preset_for,
    require_format,
)
from services.intake.canonical import (
    CITIZEN_NAME_MAX,
    TITLE_MAX,
    AttachmentMeta,
    TicketDraft,
    is_in_the_future,
)
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import derive_title, validate_draft

_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|回复|答复|转发)\s*[:：]\s*)+", re.IGNORECASE)
_BLOCK_TAGS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "table", "blockquote"}
_SKIP_TAGS = {"script", "style", "head", "title"}
_MAX_EXTERNAL_ID = 128


@dataclass(frozen=True, slots=True)
class MailResult:
    """The appeal drafted from a message, and its attachments' bytes."""

    draft: TicketDraft
    attachments: tuple[AttachmentBlob, ...]


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(self._skipping - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: block elements become line breaks."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = (" ".join(line.split()) for line in "".join(extractor.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, IndexError):  # a header the parser could not make sense of
        return None
    return str(value).strip() if value is not None and str(value).strip() else None


def _body(message: EmailMessage) -> tuple[str, EmailMessage | None]:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return "", None
    try:
        text = part.get_content()
    except (LookupError, ValueError):  # unknown charset or broken transfer encoding
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.strip(), part  # type: ignore[return-value]


_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")  # what AttachmentMeta accepts


def _attachments(message: EmailMessage, body: EmailMessage | None) -> tuple[AttachmentBlob, ...]:
    blobs: list[AttachmentBlob] = []
    for index, part in enumerate(message.walk(), start=1):
        if part is body or part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if disposition != "attachment" and not (filename and disposition == "inline"):
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        content_type = part.get_content_type()
        if len(content_type) > 127 or not _MEDIA_TYPE.match(content_type):
            content_type = "application/octet-stream"  # a sender's odd label: keep the bytes
        meta = AttachmentMeta(
            filename=(filename or f"attachment-{index}")[:255],
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        blobs.append(AttachmentBlob(meta=meta, data=data))
    return tuple(blobs)


def _message_id(message: EmailMessage) -> str | None:
    raw = _header(message, "Message-ID")
    if raw is None:
        return None
    value = raw.strip().strip("<>").strip()
    if len(value) > _MAX_EXTERNAL_ID:  # keep it stable and short enough to be an id
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:56]
    return value or None


def parse_email(raw: bytes | str, channel: Channel) -> MailResult:
    """One appeal (and its attachments) from an RFC 5322 / MIME message."""
    require_format(channel, "email")
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    message = BytesParser(policy=policy.default).parsebytes(data)
    if not isinstance(message, EmailMessage) or not message.keys():
        raise PayloadError("message", "not an e-mail message (no headers)")
    sender = _header(message, "From")
    if sender is None:
        raise PayloadError("From", "the message has no sender")
    name, address = getaddresses([sender])[0]
    if "@" not in address:
        raise PayloadError("From", f"no e-mail address in {sender!r}")
    subject = _REPLY_PREFIX.sub("", _header(message, "Subject") or "").strip()[:TITLE_MAX]
    content, body_part = _body(message)
    if not content and not subject:
        raise PayloadError("body", "the message has neither a subject nor any text")
    received_at = None
    date_header = _header(message, "Date")
    if date_header:
        try:
            received_at = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            received_at = None  # a broken Date header is no reason to refuse a citizen's mail
        if received_at is not None and received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=channel.tz)
        if received_at is not None and is_in_the_future(received_at):
            received_at = None  # the sender's clock is wrong: the mail arrived now
    blobs = _attachments(message, body_part)
    recipients = [addr for _, addr in getaddresses([_header(message, "To") or ""]) if addr]
    extra: dict[str, Any] = {"mailbox": recipients} if recipients else {}
    data_fields: dict[str, Any] = {
        **preset_for(channel),
        "channel_code": channel.code,
        "external_id": _message_id(message),
        "received_at": received_at,
        "citizen_name": name.strip()[:CITIZEN_NAME_MAX] or labelled_name(content),
        "citizen_email": address,
        "citizen_phone": labelled_phone(content),
        "address": labelled_address(content),
        "title": subject or derive_title(content),
        "content": content or subject,
        "attachments": tuple(b.meta for b in blobs),
        "extra": extra,
    }
    sources = {
        "external_id": "Message-ID",
        "received_at": "Date",
        "citizen_name": "From",
        "citizen_email": "From",
        "title": "Subject",
        "content": "body",
    }
    draft = validate_draft(TicketDraft, data_fields, sources)
    return MailResult(draft=draft, attachments=blobs)
