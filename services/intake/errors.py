"""The one error every adapter raises for bad input: it names the field (and the row of a batch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import DomainError

if TYPE_CHECKING:
    from services.intake.channels import Channel


class PayloadError(DomainError, ValueError):
    """A payload could not become a draft; ``field`` is the channel's own name for the culprit."""

    def __init__(self, field: str, message: str, *, row: int | None = None) -> None:
        self.field = field
        self.message = message
        self.row = row
        super().__init__(self.location + ": " + message)

    @property
    def location(self) -> str:
        """``field``, or ``row N, field`` for a row of a batch file."""
        return self.field if self.row is None else f"row {self.row}, {self.field}"

    def at_row(self, row: int) -> PayloadError:
        """The same error, located on a row of a batch file."""
        return PayloadError(self.field, self.message, row=row)

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "errors": [self.as_dict()]}

    def as_dict(self) -> dict[str, str | int]:
        """A JSON-ready description for a 4xx body."""
        described: dict[str, str | int] = {"field": self.field, "message": self.message}
        if self.row is not None:
            described["row"] = self.row
        return described


class TicketNotFound(DomainError, LookupError):
    """No ticket has this id."""

    def __init__(self, ticket_id: str) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"no ticket {ticket_id!r}")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "field": "ticket_id"}


class AttachmentNotFound(LookupError):
    """The ticket has no attachment with this SHA-256."""


class ChannelClosed(DomainError):
    """The channel exists but takes no new appeals (merged away, kept for its history)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        super().__init__(f"channel {channel.code!r} is inactive and takes no new appeals")

    def body(self) -> dict[str, Any]:
        return {**super().body(), "field": "code"}


class BadCursor(DomainError, ValueError):
    """The cursor was not one this service handed out."""

    def body(self) -> dict[str, Any]:
        return {"detail": "cursor: not a cursor this service handed out", "field": "cursor"}
