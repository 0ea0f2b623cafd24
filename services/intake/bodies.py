"""Request bodies with per-route size limits, and batch files from raw or multipart uploads.

The global middleware refuses anything over the largest route's limit before it is read; each
route then holds its body to its own, smaller limit with a 413 that names the field at fault.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from services.intake.errors import PayloadError
from shared.errors import DomainError


class BodyTooLarge(DomainError):
    """A body, file or attachment is over its limit (413)."""

    def __init__(self, field: str, *, limit: int, size: int | None, unit: str = "bytes") -> None:
        self.field = field
        self.limit = limit
        self.size = size
        self.unit = unit
        over = f"{size} {unit} exceed" if size is not None else "more " + unit + " than"
        super().__init__(f"{field}: {over} the limit of {limit} {unit}")

    def body(self) -> dict[str, Any]:
        return self.as_dict()

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "detail": str(self),
            "field": self.field,
            f"limit_{self.unit}": self.limit,
            f"size_{self.unit}": self.size,
        }


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


class UnsupportedMediaType(DomainError):
    """A body declared (or not declared) as a type the route does not read (415)."""

    def __init__(self, received: str | None, expected: tuple[str, ...]) -> None:
        self.received = received
        self.expected = expected
        sent = f"{received!r}" if received else "no content type"
        super().__init__(f"content-type: {sent} is not read here; send {' or '.join(expected)}")

    def body(self) -> dict[str, Any]:
        return self.as_dict()

    def headers(self) -> dict[str, str]:
        return {"Accept-Post": ", ".join(self.expected)}

    def as_dict(self) -> dict[str, str | list[str] | None]:
        return {
            "detail": str(self),
            "field": "content-type",
            "received": self.received,
            "expected": list(self.expected),
        }


def media_type(request: Request) -> str | None:
    """The body's declared media type, lower-case, without parameters (``; charset=…``)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return None
    return declared.split(";", 1)[0].strip().lower() or None


def require_media_type(request: Request, expected: tuple[str, ...]) -> None:
    """UnsupportedMediaType unless the body is declared as one of ``expected`` (``+json`` types
    count as JSON). A cross-site page can post ``text/plain`` without a CORS preflight, never
    ``application/json``: a JSON route that read any body would take forged posts."""
    declared = media_type(request)
    if declared in expected:
        return
    if JSON in expected and declared is not None and declared.endswith("+json"):
        return
    raise UnsupportedMediaType(declared, expected)


async def read_body(request: Request, limit: int, *, field: str = "body") -> bytes:
    """The request body, or BodyTooLarge when it is (or says it is) over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(field, limit=limit, size=int(declared))
    body = await request.body()
    if len(body) > limit:
        raise BodyTooLarge(field, limit=limit, size=len(body))
    return body


async def batch_file(request: Request, limit: int) -> bytes:
    """A batch file: the raw body (``text/csv``, ``application/vnd…sheet``) or the ``file`` part
    of a ``multipart/form-data`` upload."""
    body = await read_body(request, limit, field="file")
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    form = await request.form(max_files=1, max_fields=20)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise PayloadError("file", "a multipart upload needs its file in a part named 'file'")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        raise BodyTooLarge("file", limit=limit, size=len(data))
    return data
