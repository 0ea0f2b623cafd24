"""Open311 GeoReport v2: ``POST /requests`` fields become one appeal.

Fields (per the spec): ``service_code`` (required; our service codes are taxonomy codes),
a location (``lat`` + ``long``, or ``address_string``, or ``address_id``), ``description``,
``email``, ``phone``, ``first_name``, ``last_name``, ``media_url``, ``device_id``,
``account_id``, ``jurisdiction_id`` and ``attribute[CODE]`` values (``attribute[CODE][]`` for
multi-valued ones). The body is form-encoded as the spec shows, or JSON with an ``attributes``
object. ``api_key`` is checked by the API layer and never stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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


def parse_open311(
    body: bytes | str | Mapping[str, Any], channel: Channel, *, content_type: str | None = None
) -> TicketDraft:
    """One appeal from a GeoReport v2 service request."""
    require_format(channel, "open311")
    fields = open311_fields(body, content_type=content_type)
    service_code = str(fields.get("service_code") or "").strip()
    if not service_code:
        raise PayloadError("service_code", "required")
    if not taxonomy.is_known(service_code):
        raise PayloadError("service_code", f"unknown service code {service_code!r}")
    has_point = not is_empty(fields.get("lat")) and not is_empty(fields.get("long"))
    if not (has_point or fields.get("address_string") or fields.get("address_id")):
        raise PayloadError(
            "lat", "a location is required: lat and long, address_string or address_id"
        )
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
