"""The one error every adapter raises for bad input: it names the field (and the row of a batch)."""

from __future__ import annotations

from typing import Any

from shared.errors import DomainError


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
