"""Intake's HTTP routes: thin — read the body within its limit, adapt, call the service, answer.

Domain errors are mapped to HTTP answers in ``app.py`` (422 naming the field or row, 404, 410,
413). The hot routes read the runtime from the app state and check the caller's role inline:
an async dependency costs a measurable share of a small request's CPU.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from services.intake import callbacks, errors, queries, service
from services.intake.adapters import adapt, adapt_callback, parse_csv, parse_xlsx
from services.intake.bodies import (
    FORM,
    JSON,
    BodyTooLarge,
    batch_file,
    read_body,
    require_media_type,
)
from services.intake.canonical import (
    TICKET_ID_MAX,
    CallbackDraft,
    TicketDraft,
    TimeBound,
    clean_ticket_draft,
    draft_of_ticket_in,
)
from services.intake.channels import (
    Channel,
    UnknownChannel,
    callback_channels,
    channels,
    get_channel,
)
from services.intake.context import IntakeContext
from services.intake.errors import PayloadError
from services.intake.mapping import validate_draft
from services.intake.models import (
    BatchAccepted,
    BatchResult,
    CallbackAccepted,
    CallbackIn,
    TicketAccepted,
    TicketIn,
    TicketPage,
    TicketView,
)
from services.intake.ratelimit import client_key
from shared.auth import (
    AuthConfig,
    Principal,
    Role,
    checks_roles,
    principal_from_request,
    public,
)
from shared.fastjson import body_openapi, json_response, parse_body

router = APIRouter()

POSTERS = frozenset({Role.HOTLINE, Role.GRID_WORKER, Role.CENTRE, Role.OPERATOR})
CALLERS_BACK = frozenset({Role.HOTLINE, Role.CENTRE, Role.OPERATOR})
READERS = frozenset({Role.HOTLINE, Role.CENTRE, Role.COMMITTEE, Role.OPERATOR})
PUBLISHED = public("the channel registry is published reference data: no ticket, no citizen")


def intake_of(request: Request) -> IntakeContext:
    """The app's intake context."""
    return request.app.state.runtime.context  # type: ignore[no-any-return]


def authorize(
    request: Request,
    ctx: IntakeContext,
    allowed: frozenset[Role],
    settings: AuthConfig | None = None,
) -> Principal:
    """403 unless the caller's role is allowed (401 without one in ``header`` mode); ``settings``:
    the runtime's, when the caller holds them."""
    principal = principal_from_request(request, mode=ctx.settings.auth_mode, settings=settings)
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"role {principal.role.value} may not do this; needs {names}"
        )
    return principal


def admit(
    request: Request,
    ctx: IntakeContext,
    allowed: frozenset[Role],
    settings: AuthConfig | None = None,
) -> None:
    """``authorize``, then count the request against its client's rate limits (429 over)."""
    principal = authorize(request, ctx, allowed, settings)
    if ctx.limiter.limits:  # none configured: nothing to count, no client to name
        ctx.limiter.check(client_key(request, principal.subject))


def _created(accepted: TicketAccepted | CallbackAccepted) -> Response:
    return json_response(
        accepted, status.HTTP_201_CREATED if accepted.created else status.HTTP_200_OK
    )


def draft_from(ticket: TicketIn) -> tuple[Channel, TicketDraft]:
    """The appeal channel and the draft of a canonical ticket; PayloadError naming the field."""
    data = dict(ticket.__dict__)  # flat scalars: what ``model_dump`` gives, without the copy walk
    code = data.pop("channel")
    try:
        channel = service.appeal_channel(code)
    except UnknownChannel:
        raise PayloadError("channel", f"unknown channel code {code!r}") from None
    data["channel_code"] = channel.code
    # Checked fields straight into the draft; else one validation without the walk; else the
    # ordinary one, which names what is wrong.
    draft = draft_of_ticket_in(data) or clean_ticket_draft(dict(data))
    if draft is None:
        draft = validate_draft(TicketDraft, data, {"channel_code": "channel"})
    return channel, draft


_ACCEPTED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Already accepted: the same channel sent the same external id"},
    404: {"description": "Unknown channel"},
    410: {"description": "The channel is inactive and takes no new appeals"},
    413: {"description": "The body (or a file or attachment) is over its limit"},
    415: {"description": "The body's content type is not one this route reads"},
    422: {"description": "A field is missing or invalid; the detail names it"},
    429: {"description": "The client is over its rate limit; see Retry-After"},
}


@router.post(
    "/tickets",
    tags=["tickets"],
    status_code=status.HTTP_201_CREATED,
    response_model=TicketAccepted,
    responses=_ACCEPTED_RESPONSES,
    openapi_extra=checks_roles(*POSTERS, **body_openapi(TicketIn)),
)
async def post_ticket(request: Request) -> Response:
    """Accept one ticket in the canonical 12345 JSON; answered once stored with its event."""
    ctx = intake_of(request)
    admit(request, ctx, POSTERS)
    require_media_type(request, (JSON,))
    await read_body(request, ctx.settings.ticket_max_bytes)
    ticket = await parse_body(request, TicketIn)
    channel, draft = draft_from(ticket)
    return _created(await service.accept_ticket(ctx=ctx, channel=channel, draft=draft))


@router.get(
    "/tickets", tags=["tickets"], response_model=TicketPage, openapi_extra=checks_roles(*READERS)
)
async def list_tickets(
    request: Request,
    channel: str | None = None,
    category: Annotated[str | None, Query(pattern=r"^\d{2}(\d{2})?$")] = None,
    status_: Annotated[
        list[str] | None, Query(alias="status", description="one or more, or comma-separated")
    ] = None,
    received_from: TimeBound | None = None,
    received_to: TimeBound | None = None,
    repeat: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Response:
    """Tickets newest first, filtered by channel, category, status, receipt time and repeat."""
    ctx = intake_of(request)
    authorize(request, ctx, READERS)
    statuses = tuple(s.strip() for raw in status_ or () for s in raw.split(",") if s.strip())
    query = queries.TicketQuery(
        channel=channel,
        category=category,
        statuses=statuses,
        received_from=received_from,
        received_to=received_to,
        repeat=repeat,
        limit=limit,
        cursor=cursor,
    )
    return json_response(await queries.list_tickets(ctx=ctx, query=query))


@router.get(
    "/tickets/{ticket_id}",
    tags=["tickets"],
    response_model=TicketView,
    responses={404: {"description": "No such ticket"}},
    openapi_extra=checks_roles(*READERS),
)
async def get_ticket(ticket_id: str, request: Request) -> Response:
    """One ticket as the hotline sees it: status and history, no clear-text numbers."""
    ctx = intake_of(request)
    authorize(request, ctx, READERS)
    return json_response(await queries.get_ticket(ctx=ctx, ticket_id=ticket_id))


@router.get(
    "/tickets/{ticket_id}/attachments/{sha256}",
    tags=["tickets"],
    response_class=Response,
    responses={404: {"description": "No such ticket or attachment"}},
    openapi_extra=checks_roles(*READERS),
)
async def get_attachment(ticket_id: str, sha256: str, request: Request) -> Response:
    """An attachment's bytes, as the channel sent them."""
    ctx = intake_of(request)
    authorize(request, ctx, READERS)
    try:
        meta, data = await queries.get_attachment(ctx=ctx, ticket_id=ticket_id, sha256=sha256)
    except errors.AttachmentNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"ticket {ticket_id} has no attachment {sha256}"
        ) from None
    # Always a download, never rendered: a citizen's HTML or SVG must not run in the
    # operator's browser session.
    return Response(
        data,
        media_type=meta.get("content_type") or "application/octet-stream",
        headers={
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.post(
    "/tickets/{ticket_id}/callbacks",
    tags=["callbacks"],
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackAccepted,
    responses={
        200: {"description": "Already recorded: same channel and external id"},
        404: {"description": "No such ticket"},
        415: {"description": "The body is not declared as JSON"},
        422: {"description": "A field is missing or invalid; the detail names it"},
    },
    openapi_extra=checks_roles(*CALLERS_BACK, **body_openapi(CallbackIn)),
)
async def post_callback(ticket_id: str, request: Request) -> Response:
    """Record a 回访 result; a later one for the same ticket replaces the earlier in effect."""
    ctx = intake_of(request)
    admit(request, ctx, CALLERS_BACK)
    if len(ticket_id) > TICKET_ID_MAX:  # longer than any id intake gives: no such ticket
        raise errors.TicketNotFound(ticket_id[:TICKET_ID_MAX] + "…")
    require_media_type(request, (JSON,))
    await read_body(request, ctx.settings.ticket_max_bytes)
    callback = await parse_body(request, CallbackIn)
    data = callback.model_dump()
    channel = service.callback_channel(data.pop("channel"))
    data.update(channel_code=channel.code, ticket_id=ticket_id)
    draft = validate_draft(CallbackDraft, data, {"channel_code": "channel"})
    return _created(await callbacks.record_callback(ctx=ctx, channel=channel, draft=draft))


# --------------------------------------------------------------------------------------------
# Channels


@router.get("/channels", tags=["channels"], openapi_extra=PUBLISHED)
async def list_channels(
    kind: Annotated[str | None, Query(pattern="^(appeal|callback)$")] = None,
    family: str | None = None,
    active: bool | None = None,
) -> list[dict[str, Any]]:
    """The registry: the 72 appeal channels and the callback channel(s), in registry order."""
    listed = [*channels(), *callback_channels()]
    return [
        _channel_entry(c)
        for c in listed
        if (kind is None or c.kind == kind)
        and (family is None or c.family == family)
        and (active is None or c.active == active)
    ]


@router.get(
    "/channels/{code}",
    tags=["channels"],
    responses={404: {"description": "Unknown"}},
    openapi_extra=PUBLISHED,
)
async def get_channel_entry(code: str) -> dict[str, Any]:
    """One channel: names, family, payload format, time-limit profile, where to post."""
    return _channel_entry(get_channel(code))


_CONTENT_TYPES: dict[str, tuple[str, ...]] = {
    "json": (JSON,),
    "form": (FORM,),
    "email": ("message/rfc822",),
    "sms": (JSON, FORM),
    "csv": ("text/csv", "multipart/form-data"),
    "xlsx": (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "multipart/form-data",
    ),
    "open311": (FORM, JSON),
}
# The formats whose bodies are read as JSON: their content type is required, not guessed.
_JSON_FORMATS = frozenset({"json", "sms", "open311"})


def _require_channel_media_type(request: Request, payload_format: str) -> None:
    if payload_format in _JSON_FORMATS:
        require_media_type(request, _CONTENT_TYPES[payload_format])


def _channel_entry(channel: Any) -> dict[str, Any]:
    entry: dict[str, Any] = channel.public()
    path = "callbacks" if channel.kind == "callback" else "tickets"
    entry["post_url"] = f"/channels/{channel.code}/{path}"
    entry["content_types"] = list(_CONTENT_TYPES[channel.payload_format])
    entry["batch"] = channel.payload_format in ("csv", "xlsx")
    if channel.mapping is not None:
        entry["fields"] = {rule.target: list(rule.paths) for rule in channel.mapping.rules}
    return entry


_NATIVE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The channel's native payload (see GET /channels/{code}).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


@router.post(
    "/channels/{code}/tickets",
    tags=["channels"],
    status_code=status.HTTP_201_CREATED,
    response_model=TicketAccepted | BatchAccepted,
    responses={
        **_ACCEPTED_RESPONSES,
        207: {"model": BatchAccepted, "description": "A batch with some bad rows"},
    },
    openapi_extra=checks_roles(*POSTERS, **_NATIVE_BODY),
)
async def post_channel_ticket(code: str, request: Request) -> Response:
    """Accept a channel's appeal in its native payload: JSON with its own field names, a form,
    an e-mail with attachments, an SMS push, Open311 fields, or a CSV / XLSX batch file.

    A batch answers per row: 201 when every row was stored (or already was), 207 when some rows
    were bad (each reported with its row number and field), 422 when none was good.
    """
    ctx = intake_of(request)
    admit(request, ctx, POSTERS)
    channel = service.appeal_channel(code)
    settings = ctx.settings
    content_type = request.headers.get("content-type")
    if channel.payload_format in ("csv", "xlsx"):
        data = await batch_file(request, settings.batch_max_bytes)
        try:
            # Off the event loop, on the process's parsing thread (``IntakeContext.parse``).
            if channel.payload_format == "csv":
                parsed = await ctx.parse(parse_csv, data, channel, max_rows=settings.batch_max_rows)
            else:
                parsed = await ctx.parse(
                    parse_xlsx,
                    data,
                    channel,
                    max_rows=settings.batch_max_rows,
                    max_unzipped_bytes=settings.batch_max_unzipped_bytes,
                    max_cells=settings.batch_max_cells,
                )
        except PayloadError as exc:
            if exc.field == "file" and exc.message.startswith("more than"):
                raise BodyTooLarge(
                    "file", limit=settings.batch_max_rows, size=None, unit="rows"
                ) from None
            raise
        result = await service.accept_batch(ctx=ctx, channel=channel, rows=parsed.rows)
        return Response(
            result.json(), status_code=_batch_status(result), media_type="application/json"
        )
    _require_channel_media_type(request, channel.payload_format)
    limit = (
        settings.mail_max_bytes if channel.payload_format == "email" else settings.ticket_max_bytes
    )
    body = await read_body(request, limit)
    output = adapt(channel, body, content_type=content_type)
    for blob in output.attachments:
        if blob.meta.size > settings.attachment_max_bytes:
            raise BodyTooLarge(
                f"attachment {blob.meta.filename}",
                limit=settings.attachment_max_bytes,
                size=blob.meta.size,
            )
    (draft,) = output.drafts
    accepted = await service.accept_ticket(
        ctx=ctx, channel=channel, draft=draft, blobs=output.attachments
    )
    return _created(accepted)


def _batch_status(result: BatchResult) -> int:
    if result.rejected == 0:
        return status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    if result.created or result.existing:
        return status.HTTP_207_MULTI_STATUS
    return status.HTTP_422_UNPROCESSABLE_CONTENT


@router.post(
    "/channels/{code}/callbacks",
    tags=["callbacks"],
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackAccepted,
    responses={
        200: {"description": "Already recorded: same channel and external id"},
        404: {"description": "Unknown channel or ticket"},
        415: {"description": "The body's content type is not one this channel sends"},
        422: {"description": "A field is missing or invalid; the detail names it"},
    },
    openapi_extra=checks_roles(*CALLERS_BACK, **_NATIVE_BODY),
)
async def post_channel_callback(code: str, request: Request) -> Response:
    """Accept a callback channel's 回访 result in its native payload (it names the ticket)."""
    ctx = intake_of(request)
    admit(request, ctx, CALLERS_BACK)
    channel = get_channel(code)
    channel = service.callback_channel(channel.code)
    _require_channel_media_type(request, channel.payload_format)
    body = await read_body(request, ctx.settings.ticket_max_bytes)
    draft = adapt_callback(channel, body, content_type=request.headers.get("content-type"))
    return _created(await callbacks.record_callback(ctx=ctx, channel=channel, draft=draft))
