"""Open311 GeoReport v2: ``POST /requests`` fields become one appeal.

Fields (per the spec): ``service_code`` (required; our services are the taxonomy's leaf codes,
a two-digit group is refused), a location (``lat`` + ``long`` or ``address_string``; an
``address_id`` is kept in ``extra`` and echoed back, but we cannot resolve one, so it is refused
on its own), ``description``, ``email``, ``phone``, ``first_name``, ``last_name``,
``media_url`` (an http or https URL), ``device_id``, ``account_id``, ``jurisdiction_id`` and
``attribute[CODE]`` values (``attribute[CODE][]`` for multi-valued ones). The body is
form-encoded as the spec shows, or JSON with an ``attributes`` object.

``api_key`` is accepted and dropped here, never stored; nothing checks it. The Open311 routes
are public (discovery says keys are not required) and call no ``shared.auth`` role check in
either auth mode, so a deployment that wants keys or any other authentication of Open311
clients enforces it at its gateway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from services.intake.adapters.common import preset_for, require_format
from services.intake.adapters.form import decode_form
from services.intake.adapters.json_body import load_json_object
from services.intake.canonical import TicketDraft
from services.intake.channels import Channel
from services.intake.errors import PayloadError
from services.intake.mapping import FieldMapping, apply_mapping, is_empty, parse_mapping
from shared import taxonomy

_ATTRIBUTE = re.compile(r"^attribute\[([^\]]+)\](\[\])?$")
_NEVER_STORED = ("api_key",)
_WEB_SCHEMES = ("http", "https")

OPEN311_MAPPING: FieldMapping = parse_mapping(
    {
        "category_code": "service_code",
        "latitude": "lat",
        "longitude": "long",
        "address": "address_string",
        "content": "description",
        "citizen_email": "email",
        "citizen_phone": "phone",
        "citizen_name": "name",
    },
    model=TicketDraft,
    where="open311",
)


def _attributes(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``attribute[CODE]`` fields from the rest."""
    attributes: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in fields.items():
        match = _ATTRIBUTE.match(key)
        if match is None:
            rest[key] = value
        elif match.group(2):
            attributes[match.group(1)] = value if isinstance(value, list) else [value]
        else:
            attributes[match.group(1)] = value
    nested = rest.pop("attributes", None) or rest.pop("attribute", None)
    if isinstance(nested, Mapping):
        attributes = {**nested, **attributes}
    elif nested is not None:
        raise PayloadError("attributes", "expected an object of attribute codes to values")
    return attributes, rest


def open311_fields(
    body: bytes | str | Mapping[str, Any], *, content_type: str | None = None
) -> dict[str, Any]:
    """The request's fields as one object, with attributes gathered under ``attributes``."""
    if isinstance(body, Mapping):
        raw: Mapping[str, Any] = body
    elif content_type is not None and "json" in content_type:
        raw = load_json_object(body)
    else:
        raw = decode_form(body)
    attributes, fields = _attributes(raw)
    for key in _NEVER_STORED:
        fields.pop(key, None)
    if attributes:
        fields["attributes"] = attributes
    return fields


def _full_name(fields: dict[str, Any]) -> str | None:
    first = str(fields.pop("first_name", "") or "").strip()
    last = str(fields.pop("last_name", "") or "").strip()
    if not first and not last:
        return None
    if any("\u4e00" <= ch <= "\u9fff" for ch in first + last):
        # A Chinese name is family name first, with no space: last_name + first_name.
        return last + first
    return " ".join(part for part in (first, last) if part)


def service_code_problem(code: str) -> str | None:
    """Why ``code`` is no GeoReport service, or None: the services are the taxonomy's leaves."""
    if not taxonomy.is_known(code):
        return f"unknown service code {code!r}"
    if not taxonomy.get(code).is_leaf:
        services = ", ".join(c.code for c in taxonomy.children(code))
        return f"{code!r} is a group of services, not a service; use one of {services}"
    return None


def is_web_url(value: object) -> TypeGuard[str]:
    """An absolute http or https URL with a host and no blanks: all a ``media_url`` may be."""
    if not isinstance(value, str) or any(ch.isspace() or ch < " " for ch in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. a malformed IPv6 host or port
        return False
    return parts.scheme.lower() in _WEB_SCHEMES and bool(host)


def _stripped(fields: dict[str, Any], name: str) -> Any:
    """The field with its surrounding blanks stripped; a blank one is dropped (None)."""
    value = fields.get(name)
    if isinstance(value, str):
        value = value.strip()
    if is_empty(value):
        fields.pop(name, None)
        return None
    fields[name] = value
    return value


def _check_location(fields: dict[str, Any]) -> None:
    """A point or an address; an ``address_id`` is kept but cannot stand for the place."""
    lat, long = _stripped(fields, "lat"), _stripped(fields, "long")
    has_point = lat is not None and long is not None
    has_address = _stripped(fields, "address_string") is not None
    address_id = _stripped(fields, "address_id")
    if address_id is not None and not isinstance(address_id, str):
        raise PayloadError("address_id", "expected one text value")
    if has_point or has_address:
        return
    if address_id is not None:
        raise PayloadError(
            "address_id",
            "address_id cannot be resolved here: give lat and long or address_string as well",
        )
    raise PayloadError("lat", "a location is required: lat and long, or address_string")


def parse_open311(
    body: bytes | str | Mapping[str, Any], channel: Channel, *, content_type: str | None = None
) -> TicketDraft:
    """One appeal from a GeoReport v2 service request."""
    require_format(channel, "open311")
    fields = open311_fields(body, content_type=content_type)
    service_code = str(fields.get("service_code") or "").strip()
    if not service_code:
        raise PayloadError("service_code", "required")
    problem = service_code_problem(service_code)
    if problem is not None:
        raise PayloadError("service_code", problem)
    _check_location(fields)
    media_url = _stripped(fields, "media_url")
    if media_url is not None and not is_web_url(media_url):
        raise PayloadError("media_url", "expected an http or https URL")
    name = _full_name(fields)
    if name:
        fields["name"] = name
    if is_empty(fields.get("description")):
        # The spec lets a request have no description; the service's name says what it is.
        fields["description"] = taxonomy.get(service_code).name_zh
    return apply_mapping(
        fields,
        OPEN311_MAPPING.merged(channel.mapping),
        model=TicketDraft,
        channel_code=channel.code,
        tz=channel.tz,
        preset=preset_for(channel),
    )
