"""Native payload adapters, one module per payload family, and ``adapt`` to pick the right one.

Every adapter is a pure function from a channel's native payload to ``TicketDraft`` (batch
formats: one result per row) and raises ``PayloadError`` naming the field for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.intake.adapters.batch import BatchResult, BatchRow, parse_csv, parse_xlsx
from services.intake.adapters.common import AttachmentBlob, charset_of
from services.intake.adapters.form import parse_form
from services.intake.adapters.json_body import parse_callback, parse_json
from services.intake.adapters.mail import MailResult, parse_email
from services.intake.adapters.open311 import parse_open311
from services.intake.adapters.sms import parse_sms, parse_sms_delivery
from services.intake.canonical import CallbackDraft, TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError

__all__ = [
    "AdapterOutput",
    "AttachmentBlob",
    "BatchResult",
    "BatchRow",
    "MailResult",
    "PayloadError",
    "adapt",
    "adapt_callback",
    "parse_callback",
    "parse_csv",
    "parse_email",
    "parse_form",
    "parse_json",
    "parse_open311",
    "parse_sms",
    "parse_sms_delivery",
    "parse_xlsx",
]


@dataclass(frozen=True, slots=True)
class AdapterOutput:
    """What a channel's body became: numbered drafts (or, for batch rows, errors) and blobs."""

    rows: tuple[BatchRow, ...]
    attachments: tuple[AttachmentBlob, ...] = ()
    batch: bool = False

    @property
    def drafts(self) -> tuple[TicketDraft, ...]:
        """The drafts, in row order."""
        return tuple(r for _, r in self.rows if isinstance(r, TicketDraft))

    @property
    def errors(self) -> tuple[PayloadError, ...]:
        """The bad rows of a batch (single payloads raise instead)."""
        return tuple(r for _, r in self.rows if isinstance(r, PayloadError))


def adapt(channel: Channel, body: bytes, *, content_type: str | None = None) -> AdapterOutput:
    """Run the channel's adapter on its native body.

    Single-appeal formats raise ``PayloadError``; batch formats (csv, xlsx) raise it only for a
    file-level problem and report each bad row in ``rows``.
    """
    if channel.kind != "appeal":
        raise ValueError(f"channel {channel.code!r} takes callbacks, not appeals")
    charset = charset_of(content_type)
    match channel.payload_format:
        case "json":
            return AdapterOutput(rows=((1, parse_json(body, channel, charset=charset)),))
        case "form":
            return AdapterOutput(rows=((1, parse_form(body, channel, charset=charset)),))
        case "sms":
            draft = parse_sms_delivery(body, channel, content_type=content_type, charset=charset)
            return AdapterOutput(rows=((1, draft),))
        case "open311":
            return AdapterOutput(
                rows=((1, parse_open311(body, channel, content_type=content_type)),)
            )
        case "email":
            mail = parse_email(body, channel)
            return AdapterOutput(rows=((1, mail.draft),), attachments=mail.attachments)
        case "csv":
            return AdapterOutput(rows=parse_csv(body, channel).rows, batch=True)
        case "xlsx":
            return AdapterOutput(rows=parse_xlsx(body, channel).rows, batch=True)
    raise ValueError(f"no adapter for payload format {channel.payload_format!r}")


def adapt_callback(
    channel: Channel, body: bytes, *, content_type: str | None = None
) -> CallbackDraft:
    """Run a callback channel's adapter on its native body."""
    return parse_callback(body, channel, charset=charset_of(content_type))
