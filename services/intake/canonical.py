"""What every channel adapter produces: a ``TicketDraft`` per appeal, a ``CallbackDraft`` per 回访.

A draft is the channel's appeal in the canonical shape, *before* normalization: contact and ID
numbers are still in clear text here (they never leave intake in clear; see ``pii`` and
``normalize``), the category may be missing (the classifier fills it in), and ``received_at`` may
be missing (the caller stamps the arrival time).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.intake.locate import is_grid_code
from shared import taxonomy

Urgency = Literal["normal", "urgent", "critical"]
Satisfaction = Literal["satisfied", "basically_satisfied", "dissatisfied"]

URGENCIES: tuple[Urgency, ...] = ("normal", "urgent", "critical")
SATISFACTIONS: tuple[Satisfaction, ...] = ("satisfied", "basically_satisfied", "dissatisfied")

TITLE_MAX = 200
CONTENT_MAX = 20_000
CITIZEN_NAME_MAX = 64
TICKET_ID_MAX = 32

_PHONE_CHARS = re.compile(r"^\+?[\d\s\-()（）]+(?:(?:转|ext\.?|x)\s*\d{1,6})?$", re.IGNORECASE)
_ID_NUMBER = re.compile(r"^(\d{17}[\dX]|\d{15})$")
_CHANNEL_CODE = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"


def _check_phone(value: str | None) -> str | None:
    if value is None:
        return None
    if not _PHONE_CHARS.match(value):
        raise ValueError("not a phone number (digits, spaces, dashes, brackets, a leading +)")
    digits = sum(map(str.isdigit, value))
    if not 3 <= digits <= 20:
        raise ValueError("a phone number has 3 to 20 digits")
    return value


def _check_id_number(value: str | None) -> str | None:
    if value is None:
        return None
    compact = re.sub(r"[\s\-]", "", value).upper()
    if not _ID_NUMBER.match(compact):
        raise ValueError(
            "a resident ID number has 18 characters (17 digits + digit or X) or 15 digits"
        )
    return compact


def _check_category(value: str | None) -> str | None:
    if value is not None and not taxonomy.is_known(value):
        raise ValueError(f"unknown category code {value!r}")
    return value


# How far ahead of intake's clock a channel's own clock may run before its time is refused.
CLOCK_SKEW = timedelta(minutes=10)
# The city's clock: ticket numbers are by its day, and the earliest acceptable time is its 1900.
CITY_TZ = ZoneInfo("Asia/Shanghai")
# No appeal predates the hotline by a century; earlier times are typos or probes, and near
# ``datetime.min`` the repeat window's arithmetic overflows.
EARLIEST_RECEIVED_AT = datetime(1900, 1, 1, tzinfo=CITY_TZ)


def is_in_the_future(value: datetime, *, now: datetime | None = None) -> bool:
    """Later than now by more than the clock skew a channel's clock may have."""
    return value > (now or datetime.now(UTC)) + CLOCK_SKEW


BEFORE_1900 = "is before 1900-01-01 (city time): no appeal was received then"


def _check_since_1900(value: datetime | None) -> datetime | None:
    if value is not None and value < EARLIEST_RECEIVED_AT:
        raise ValueError(f"{value.isoformat()} {BEFORE_1900}")
    return value


def _check_received_at(value: datetime | None) -> datetime | None:
    _check_since_1900(value)
    if value is not None and is_in_the_future(value):
        raise ValueError(
            f"{value.isoformat()} is in the future: an appeal is received no later than now "
            f"(clocks may differ by up to {int(CLOCK_SKEW.total_seconds() // 60)} minutes)"
        )
    return value


# C0 control characters other than tab, line feed and carriage return, and DEL. They carry no
# meaning in an appeal, PostgreSQL refuses NUL in text and JSON, and XML 1.0 cannot hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_character(text: str) -> re.Match[str] | None:
    """The first character of ``text`` a draft drops as a control character, if any."""
    return _CONTROL.search(text)


def _may_hold_control(value: dict[Any, Any]) -> bool:
    """Whether any string in a dict (keys, values, nested dicts and lists) may hold a control
    character: its flat strings checked by one search of them joined by a line feed (which is
    no control character here), the rest one by one."""
    flat: list[str] = []
    for k, v in value.items():
        if type(k) is str:
            flat.append(k)
        elif not isinstance(k, int | float | bool | None):
            return True
        if type(v) is str:
            flat.append(v)
        elif isinstance(v, dict):
            if _may_hold_control(v):
                return True
        elif not isinstance(v, int | float | bool | None):
            return True  # lists, tuples, str subclasses, anything else: the full walk decides
    return _CONTROL.search("\n".join(flat)) is not None


def without_control_characters(value: Any) -> Any:
    """``value`` with control characters removed from every string in it (dicts and lists too)."""
    if isinstance(value, str):
        return _CONTROL.sub("", value) if _CONTROL.search(value) else value
    if type(value) is dict and not _may_hold_control(value):
        return value  # most drafts: nothing to remove, and no copy to make
    if isinstance(value, dict):
        return {
            without_control_characters(k): without_control_characters(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(without_control_characters(v) for v in value)
    return value


def _check_grid_code(value: str | None) -> str | None:
    # The value is not echoed: what arrives here instead of a code is often a phone number.
    if value is not None and not is_grid_code(value):
        raise ValueError(
            "not a grid of the city's registry (a 15-digit grid code, e.g. 339902001001001)"
        )
    return value


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_check_phone)]
IdNumber = Annotated[
    str, StringConstraints(strip_whitespace=True), AfterValidator(_check_id_number)
]
CategoryCode = Annotated[
    str, StringConstraints(strip_whitespace=True), AfterValidator(_check_category)
]
ReceivedAt = Annotated[AwareDatetime, AfterValidator(_check_received_at)]
# A bound of a time filter: from 1900 on, like the times it filters.
TimeBound = Annotated[AwareDatetime, AfterValidator(_check_since_1900)]
GridCode = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=32), AfterValidator(_check_grid_code)
]


class AttachmentMeta(BaseModel):
    """A file that came with an appeal; the bytes go to blob storage under their SHA-256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filename: Annotated[str, BeforeValidator(without_control_characters)] = Field(
        ..., min_length=1, max_length=255
    )
    content_type: str = Field(..., pattern=r"^[\w.+-]+/[\w.+-]+$", max_length=127)
    size: int = Field(..., ge=0)
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")


class TicketDraft(BaseModel):
    """One appeal as a channel delivered it, in the canonical shape (clear text, not normalized)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    channel_code: str = Field(..., pattern=_CHANNEL_CODE, max_length=64)
    external_id: str | None = Field(None, min_length=1, max_length=128)
    received_at: ReceivedAt | None = None
    citizen_name: str | None = Field(None, max_length=CITIZEN_NAME_MAX)
    citizen_phone: Phone | None = Field(None, max_length=32)
    citizen_id_number: IdNumber | None = None
    citizen_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)
    title: str = Field(..., min_length=1, max_length=TITLE_MAX)
    content: str = Field(..., min_length=1, max_length=CONTENT_MAX)
    address: str | None = Field(None, max_length=500)
    longitude: float | None = Field(None, ge=-180, le=180)
    latitude: float | None = Field(None, ge=-90, le=90, validate_default=True)
    grid_code: GridCode | None = None
    category_code: CategoryCode | None = None
    urgency: Urgency = "normal"
    is_enterprise: bool = False
    enterprise_name: ShortText | None = None
    attachments: tuple[AttachmentMeta, ...] = ()
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _blank_optionals_are_missing(cls, data: Any, info: ValidationInfo) -> Any:
        """Channels send ``""`` for "not given"; treat it as missing for the optional fields.
        Control characters are dropped first (a NUL in a title would fail the database).
        Data ``clean_ticket_draft`` has checked needs neither: only the enterprise flag."""
        if info.context is _ALREADY_CLEAN:
            if data.get("enterprise_name") is not None:
                data = {**data, "is_enterprise": True}
            return data
        if isinstance(data, dict):
            data = without_control_characters(data)
            required = {"channel_code", "title", "content"}
            data = {k: (v if k in required else _empty_to_none(v)) for k, v in data.items()}
            if data.get("enterprise_name") is not None:
                data["is_enterprise"] = True  # an appeal that names its enterprise is one
        return data

    @field_validator("latitude")
    @classmethod
    def _coordinates_come_in_pairs(
        cls, latitude: float | None, info: ValidationInfo
    ) -> float | None:
        if "longitude" not in info.data:
            return latitude  # longitude itself was invalid; that error is reported already
        if (info.data["longitude"] is None) != (latitude is None):
            missing = "latitude" if latitude is None else "longitude"
            raise ValueError(f"{missing} is missing: coordinates come as a longitude/latitude pair")
        return latitude


class CallbackDraft(BaseModel):
    """A 回访 result for one ticket: was it resolved, and how satisfied is the citizen."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    channel_code: str = Field(..., pattern=_CHANNEL_CODE, max_length=64)
    ticket_id: str = Field(..., min_length=1, max_length=TICKET_ID_MAX)
    resolved: bool
    satisfaction: Satisfaction
    comment: str | None = Field(None, max_length=2000)
    external_id: str | None = Field(None, min_length=1, max_length=128)
    received_at: ReceivedAt | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _blank_optionals_are_missing(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = without_control_characters(data)
            optional = {"comment", "external_id", "received_at"}
            return {k: (_empty_to_none(v) if k in optional else v) for k, v in data.items()}
        return data


_REQUIRED_DRAFT_TEXT = frozenset({"channel_code", "title", "content"})
# The validation context ``clean_ticket_draft`` passes (by identity: no caller's context is it),
# telling the draft's before-step that the walk would change nothing.
_ALREADY_CLEAN: dict[str, Any] = {}


def _is_clean(data: dict[str, Any]) -> bool:
    """Whether ``data`` is a flat dict of scalars in which no string holds a control character
    and no optional one is blank: the draft's before-step would change nothing but the
    enterprise flag."""
    for key, value in data.items():
        if type(key) is not str or _CONTROL.search(key):
            return False
        if type(value) is str:
            if _CONTROL.search(value) or (key not in _REQUIRED_DRAFT_TEXT and not value.strip()):
                return False
        elif isinstance(value, dict | list | tuple):
            return False
    return True


def clean_ticket_draft(data: dict[str, Any]) -> TicketDraft | None:
    """``TicketDraft.model_validate(data)`` for a flat dict of scalars in which no string holds a
    control character and no optional one is blank (the common case: the draft's before-step
    would change nothing but the enterprise flag), without walking it again; None when ``data``
    is not such a dict or does not validate — the caller validates it the ordinary way, which
    names the fault exactly as always."""
    if not _is_clean(data):
        return None
    try:
        return TicketDraft.model_validate(data, context=_ALREADY_CLEAN)
    except ValueError:  # pydantic's ValidationError is one
        return None


# The fields of a canonical ticket (``models.TicketIn``, its ``channel`` as ``channel_code``).
TICKET_IN_FIELDS = frozenset(
    {
        "channel_code",
        "external_id",
        "title",
        "content",
        "citizen_name",
        "citizen_phone",
        "citizen_id_number",
        "citizen_email",
        "address",
        "longitude",
        "latitude",
        "grid_code",
        "category_code",
        "urgency",
        "is_enterprise",
        "enterprise_name",
        "received_at",
    }
)
_OPTIONAL_TEXT = tuple(
    sorted(
        TICKET_IN_FIELDS
        - _REQUIRED_DRAFT_TEXT
        - {"longitude", "latitude", "is_enterprise", "received_at"}
    )
)
_CHANNEL_CODE_FULL = re.compile(_CHANNEL_CODE.removeprefix("^").removesuffix("$"))
_new_draft = TicketDraft.__new__
_set = object.__setattr__


def draft_of_ticket_in(data: dict[str, Any]) -> TicketDraft | None:
    """``TicketDraft.model_validate(data)`` for the fields of a validated ``TicketIn`` (types,
    lengths, ranges, the urgency, the time and whitespace as the draft takes them, and no blank
    or control character), without validating them a second time: the draft's own checks that
    ``TicketIn`` does not make (the channel code's shape, the phone, the grid, the category,
    coordinates in pairs) are made here. None when ``data`` is not such a set of fields or holds
    a value this does not check (an ID number, an e-mail), or one the draft would refuse: the
    caller validates it the ordinary way, which names the fault exactly as always. A property
    test holds the two equal for every ``TicketIn``."""
    if data.keys() != TICKET_IN_FIELDS:
        return None
    # ``_is_clean`` for these fields: known names, every string in one search for a control
    # character (a line feed, which is none, between them), and the optional ones not blank.
    if _CONTROL.search("\n".join([v for v in data.values() if type(v) is str])):
        return None
    for key in _OPTIONAL_TEXT:
        value = data[key]
        if type(value) is str and not value.strip():
            return None
    if data["citizen_id_number"] is not None or data["citizen_email"] is not None:
        return None
    code = data["channel_code"]
    if len(code) > 64 or not _CHANNEL_CODE_FULL.fullmatch(code):
        return None
    phone, grid, category = data["citizen_phone"], data["grid_code"], data["category_code"]
    try:
        if phone is not None:
            _check_phone(phone)
        if grid is not None:
            _check_grid_code(grid)
        if category is not None:
            _check_category(category)
    except ValueError:
        return None
    if (data["longitude"] is None) != (data["latitude"] is None):
        return None
    fields_set = set(data)
    values = {name: data[name] for name in _DRAFT_ORDER if name in fields_set}
    if values["enterprise_name"] is not None:
        values["is_enterprise"] = True
    values["attachments"] = ()
    values["extra"] = {}
    draft = _new_draft(TicketDraft)
    _set(draft, "__dict__", values)
    _set(draft, "__pydantic_fields_set__", fields_set)
    _set(draft, "__pydantic_extra__", None)
    _set(draft, "__pydantic_private__", None)
    return draft


_DRAFT_ORDER = tuple(TicketDraft.model_fields)
