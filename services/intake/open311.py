"""Open311 GeoReport v2 as a public API: discovery, services, and service requests.

Service codes are the taxonomy's leaf codes (a two-digit group is no service: 400 on a post,
404 for its definition). Requests are posted on the ``open311-public-api`` channel
(form-encoded as the spec shows, or JSON); the public GET answers for the tickets of the
Open311-format channels (``open311_all_channels`` widens it), with the description, address and
media URL scrubbed of phone and ID numbers, the status mapped from the internal lifecycle onto
``open`` / ``closed`` and ``status_notes`` a fixed public phrase per internal status (never the
departments' own notes, which may name people; those stay in the internal ``GET /tickets``
history). Every resource answers as ``.json`` and ``.xml``; errors take the spec's shape,
``[{"code": 400, "description": "<field>: …"}]``, with the field named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Request, Response

from services.intake import lifecycle, queries, service
from services.intake.adapters import adapt
from services.intake.adapters.open311 import is_web_url, service_code_problem
from services.intake.api import intake_of
from services.intake.bodies import (
    FORM,
    JSON,
    BodyTooLarge,
    UnsupportedMediaType,
    read_body,
    require_media_type,
)
from services.intake.canonical import BEFORE_1900, EARLIEST_RECEIVED_AT
from services.intake.channels import channels, get_channel
from services.intake.errors import PayloadError
from services.intake.ratelimit import client_key
from shared import pii, taxonomy
from shared.auth import public
from shared.events.base import utcnow


async def _count_client(request: Request) -> None:
    """Open311 is public: every route counts against the caller's address's rate limits."""
    intake_of(request).limiter.check(client_key(request))


router = APIRouter(
    prefix="/open311",
    tags=["open311"],
    dependencies=[Depends(_count_client)],
    responses={429: {"description": "The client is over its rate limit; see Retry-After"}},
)

CHANNEL = "open311-public-api"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# When the service list (the taxonomy leaves) last changed; clients re-fetch services after it.
CHANGESET = "2026-11-22T00:00:00+08:00"
CITY_TZ = ZoneInfo("Asia/Shanghai")
FORMATS = {"json": "application/json", "xml": "text/xml; charset=utf-8"}
# What the public reads in ``status_notes``: a fixed phrase per internal status.
PUBLIC_STATUS_NOTES: dict[str, str] = {
    "received": "已受理",
    "dispatched": "已派发",
    "in_progress": "处理中",
    "mediating": "调解中",
    "completed": "已办结",
    "closed": "已关闭",
}
_PLURAL_TO_ITEM = {
    "services": "service",
    "service_requests": "request",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
}


class Open311Error(Exception):
    """An error answered in the spec's shape."""

    def __init__(self, code: int, description: str, field: str | None = None) -> None:
        self.code = code
        self.description = description
        self.field = field
        super().__init__(description)


# --------------------------------------------------------------------------------------------
# Rendering


def _xml_value(parent: ET.Element, tag: str, value: Any) -> None:
    element = ET.SubElement(parent, tag)
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _xml_value(element, str(key), inner)
    elif isinstance(value, list | tuple):
        item = _PLURAL_TO_ITEM.get(tag, "item")
        for inner in value:
            _xml_value(element, item, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


def to_xml(root: str, value: Any) -> bytes:
    """GeoReport's XML: a root named for the collection, one element per item and field."""
    holder = ET.Element("holder")
    _xml_value(holder, root, value)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(holder[0], encoding="utf-8")


def render(fmt: str, root: str, value: Any, status_code: int = 200) -> Response:
    """The value as JSON or XML, per the resource's suffix."""
    if fmt == "xml":
        return Response(to_xml(root, value), status_code, media_type=FORMATS["xml"])
    return Response(orjson.dumps(value), status_code, media_type=FORMATS["json"])


def error_response(fmt: str, error: Open311Error) -> Response:
    entry: dict[str, Any] = {"code": error.code, "description": error.description}
    if error.field is not None:
        entry["field"] = error.field
    return render(fmt if fmt in FORMATS else "json", "errors", [entry], error.code)


def _format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise Open311Error(404, f"format: unknown format {fmt!r}; use .json or .xml", "format")
    return fmt


def _time(value: datetime | None) -> str | None:
    return value.astimezone(CITY_TZ).isoformat(timespec="seconds") if value else None


# --------------------------------------------------------------------------------------------
# Resources


def service_entry(code: str) -> dict[str, Any]:
    """One taxonomy leaf as a GeoReport service."""
    category = taxonomy.get(code)
    group = taxonomy.get(category.top_level)
    return {
        "service_code": category.code,
        "service_name": category.name_zh,
        "description": category.name_en,
        "metadata": False,
        "type": "realtime",
        "keywords": f"{group.name_zh}, {group.name_en}",
        "group": group.name_zh,
    }


def request_entry(row: Any) -> dict[str, Any]:
    """A ticket as a GeoReport service request (no personal data, numbers scrubbed)."""
    extra = row.extra or {}
    media = extra.get("media_url")
    address_id = extra.get("address_id")
    notice = f"重复件，首件 {row.repeat_of}" if row.repeat_of else None
    try:
        service_name: str | None = taxonomy.get(row.category_code).name_zh
    except KeyError:
        service_name = None
    return {
        "service_request_id": row.ticket_id,
        "status": lifecycle.open311_status(row.status),
        "status_notes": PUBLIC_STATUS_NOTES.get(row.status),
        "service_name": service_name,
        "service_code": row.category_code,
        "description": pii.scrub_text(row.content),
        "agency_responsible": row.department_code,
        "service_notice": notice,
        "requested_datetime": _time(row.received_at),
        "updated_datetime": _time(row.status_at or row.accepted_at),
        "expected_datetime": _time(row.due_at),
        "address": pii.scrub_text(row.address) if row.address else None,
        "address_id": address_id if isinstance(address_id, str) else None,
        "zipcode": None,
        "lat": row.latitude,
        "long": row.longitude,
        "media_url": pii.scrub_text(media) if is_web_url(media) else None,
    }


def _public_channels(all_channels: bool) -> tuple[str, ...]:
    if all_channels:
        return ()
    return tuple(c.code for c in channels() if c.payload_format == "open311")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _parse_time(value: str | None, field: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{field}: expected a W3C / ISO 8601 time", field) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CITY_TZ)
    if parsed < EARLIEST_RECEIVED_AT:
        raise Open311Error(400, f"{field}: {BEFORE_1900}", field)
    return parsed


def _check_statuses(statuses: Sequence[str]) -> None:
    for s in statuses:
        if s not in ("open", "closed"):
            raise Open311Error(400, f"status: {s!r} is not open or closed", "status")


# --------------------------------------------------------------------------------------------
# Routes

# GeoReport v2 is the citizens' own API: anyone may file and follow a request (rate-limited per
# address; answers carry no citizen data).
CITIZENS = public("Open311 GeoReport v2 is the public API citizens file and follow requests on")


@router.get("/discovery.{fmt}", openapi_extra=CITIZENS)
async def discovery(fmt: str, request: Request) -> Response:
    """Where the GeoReport v2 endpoint is and what it speaks."""
    try:
        fmt = _format(fmt)
    except Open311Error as exc:
        return error_response("json", exc)
    base = str(request.base_url).rstrip("/") + "/open311/v2/"
    return render(
        fmt,
        "discovery",
        {
            "changeset": CHANGESET,
            "contact": "12345 政务服务便民热线",
            "key_service": "Keys are not required in this deployment.",
            "endpoints": [
                {
                    "specification": SPECIFICATION,
                    "url": base,
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["application/json", "text/xml"],
                }
            ],
        },
    )


@router.get("/v2/services.{fmt}", openapi_extra=CITIZENS)
async def services(fmt: str) -> Response:
    """Every service (taxonomy leaf) a request may be filed under, grouped by top level."""
    try:
        fmt = _format(fmt)
    except Open311Error as exc:
        return error_response("json", exc)
    return render(fmt, "services", [service_entry(c.code) for c in taxonomy.leaves()])


@router.get("/v2/services/{service_code}.{fmt}", openapi_extra=CITIZENS)
async def service_definition(service_code: str, fmt: str) -> Response:
    """A service's definition: its code and (none needed here) extra attributes."""
    try:
        fmt = _format(fmt)
        problem = service_code_problem(service_code)
        if problem is not None:
            raise Open311Error(404, f"service_code: {problem}", "service_code")
    except Open311Error as exc:
        return error_response(fmt, exc)
    return render(fmt, "service_definition", {"service_code": service_code, "attributes": []})


@router.post("/v2/requests.{fmt}", status_code=201, openapi_extra=CITIZENS)
async def post_request(fmt: str, request: Request) -> Response:
    """File a service request (form-encoded per the spec, or JSON); answered once stored."""
    ctx = intake_of(request)
    try:
        fmt = _format(fmt)
        channel = get_channel(CHANNEL)
        try:
            require_media_type(request, (FORM, JSON))
        except UnsupportedMediaType as exc:
            raise Open311Error(415, str(exc), "content-type") from None
        try:
            body = await read_body(request, ctx.settings.ticket_max_bytes)
        except BodyTooLarge as exc:
            raise Open311Error(413, str(exc), exc.field) from None
        try:
            output = adapt(channel, body, content_type=request.headers.get("content-type"))
        except PayloadError as exc:
            raise Open311Error(400, f"{exc.field}: {exc.message}", exc.field) from None
        (draft,) = output.drafts
        accepted = await service.accept_ticket(ctx=ctx, channel=channel, draft=draft)
    except Open311Error as exc:
        return error_response(fmt, exc)
    notice = f"重复件，首件 {accepted.repeat_of}" if accepted.repeat_of else None
    return render(
        fmt,
        "service_requests",
        [{"service_request_id": accepted.ticket_id, "service_notice": notice, "account_id": None}],
        201 if accepted.created else 200,
    )


@router.get("/v2/requests.{fmt}", openapi_extra=CITIZENS)
async def get_requests(
    fmt: str,
    request: Request,
    service_request_id: str | None = None,
    service_code: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    status: str | None = None,
) -> Response:
    """Service requests, newest first: by id (comma-separated; other filters ignored), or by
    service, time range (default the last 90 days) and status; at most 1000."""
    ctx = intake_of(request)
    try:
        fmt = _format(fmt)
        ids = _split(service_request_id)
        codes = _split(service_code)
        statuses = _split(status)
        _check_statuses(statuses)
        start = _parse_time(start_date, "start_date")
        end = _parse_time(end_date, "end_date")
        for code in codes:
            if not taxonomy.is_known(code):
                raise Open311Error(
                    400, f"service_code: unknown service code {code!r}", "service_code"
                )
    except Open311Error as exc:
        return error_response(fmt, exc)
    limit = ctx.settings.open311_max_results
    scope = _public_channels(ctx.settings.open311_all_channels)
    if ids:
        query = queries.TicketQuery(ticket_ids=ids, channels=scope, limit=limit)
        rows = await queries.find_tickets(ctx=ctx, query=query)
    else:
        if start is None and end is None:
            start = utcnow() - timedelta(days=90)
        internal = _internal_statuses(statuses)
        rows = []
        wanted: tuple[str | None, ...] = codes or (None,)
        for wanted_code in wanted:
            query = queries.TicketQuery(
                category=wanted_code,
                statuses=internal,
                received_from=start,
                received_to=end,
                channels=scope,
                limit=limit,
            )
            rows.extend(await queries.find_tickets(ctx=ctx, query=query))
        rows.sort(key=lambda r: (r.received_at, r.ticket_id), reverse=True)
    rows = rows[:limit]
    return render(fmt, "service_requests", [request_entry(r) for r in rows])


def _internal_statuses(statuses: Iterable[str]) -> tuple[str, ...]:
    wanted = set(statuses)
    if not wanted or wanted == {"open", "closed"}:
        return ()
    return tuple(s for s in lifecycle.STATUSES if lifecycle.open311_status(s) in wanted)


@router.get("/v2/requests/{service_request_id}.{fmt}", openapi_extra=CITIZENS)
async def get_request(service_request_id: str, fmt: str, request: Request) -> Response:
    """One service request (a list of one, as the spec has it)."""
    ctx = intake_of(request)
    try:
        fmt = _format(fmt)
        scope = _public_channels(ctx.settings.open311_all_channels)
        query = queries.TicketQuery(ticket_ids=(service_request_id,), channels=scope, limit=1)
        rows = await queries.find_tickets(ctx=ctx, query=query)
        if not rows:
            raise Open311Error(
                404,
                f"service_request_id: no service request {service_request_id!r}",
                "service_request_id",
            )
    except Open311Error as exc:
        return error_response(fmt, exc)
    return render(fmt, "service_requests", [request_entry(rows[0])])
