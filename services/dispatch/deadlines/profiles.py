"""Time-limit profiles: the clocks a dispatch runs, their durations and office hours, as loaded
from ``data/profiles.yaml`` (e.g. ``enterprise_2115``: sign for in 2 hours, contact in 1 working
day, feedback in 1 and resolve in 5). The arithmetic that turns them into deadlines is in
``clocks.py``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from services.dispatch.data import DATA_PACKAGE
from shared.datafiles import (
    DataFileError,
    Problem,
    packaged_text,
    parse_yaml,
    problems_from_validation,
)

_PERIOD = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class ClockName(StrEnum):
    """The clocks a dispatch can run."""

    SIGN_FOR = "sign_for"
    FIRST_CONTACT = "first_contact"
    FEEDBACK = "feedback"
    RESOLUTION = "resolution"
    REPORT = "report"


class Unit(StrEnum):
    """How a clock's amount is counted."""

    MINUTES = "minutes"
    HOURS = "hours"
    WORKING_HOURS = "working_hours"
    WORKING_DAYS = "working_days"


class DueAt(StrEnum):
    """Where on its last working day a working-day clock falls due."""

    CLOSE_OF_BUSINESS = "close_of_business"
    END_OF_DAY = "end_of_day"
    SAME_TIME = "same_time"


@dataclass(frozen=True)
class OfficeHours:
    """The office periods of a working day, e.g. 09:00–12:00 and 13:30–17:30."""

    periods: tuple[tuple[time, time], ...]
    name: str = "standard"

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("office hours need at least one period")
        previous = time.min
        for index, (start, end) in enumerate(self.periods):
            if not start < end:
                raise ValueError(f"period {start}-{end} does not end after it starts")
            if index and start < previous:
                raise ValueError(f"period {start}-{end} overlaps or precedes the one before")
            previous = end

    @classmethod
    def parse(cls, periods: Collection[str], name: str = "standard") -> OfficeHours:
        """Build office hours from strings like ``"09:00-12:00"``."""
        parsed = []
        for text in periods:
            m = _PERIOD.match(text)
            if m is None:
                raise ValueError(f"{text!r} is not a period like 09:00-12:00")
            h1, m1, h2, m2 = map(int, m.groups())
            if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
                raise ValueError(f"{text!r} is not a valid time of day")
            parsed.append((time(h1, m1), time(h2, m2)))
        return cls(tuple(parsed), name)

    @property
    def close(self) -> time:
        """When the last period of the day ends."""
        return self.periods[-1][1]


STANDARD_OFFICE_HOURS = OfficeHours.parse(["09:00-12:00", "13:30-17:30"])


@dataclass(frozen=True)
class Duration:
    """An amount of time in one unit; working days are whole days."""

    amount: float
    unit: Unit

    def __post_init__(self) -> None:
        if self.amount < 0:
            raise ValueError(f"a duration must not be negative, got {self.amount}")
        if self.unit is Unit.WORKING_DAYS and self.amount != int(self.amount):
            raise ValueError(f"working days must be whole, got {self.amount}")

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{amount} {self.unit.value.replace('_', ' ')}"


@dataclass(frozen=True)
class ClockSpec:
    """One clock of a profile: how long, counted how, due when."""

    name: ClockName
    duration: Duration
    office_hours: OfficeHours = STANDARD_OFFICE_HOURS
    due: DueAt = DueAt.CLOSE_OF_BUSINESS  # only read for working-day clocks


@dataclass(frozen=True)
class Profile:
    """A named set of clocks, e.g. standard or enterprise_2115."""

    code: str
    name_zh: str
    name_en: str
    description: str
    clocks: Mapping[ClockName, ClockSpec] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Loading profiles.yaml


class ProfilesError(DataFileError):
    """The profiles file was refused; nothing of it was loaded."""

    kind = "time-limit profiles"


class UnknownProfile(KeyError):
    """A profile code that is not defined."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __str__(self) -> str:
        return f"unknown time-limit profile {self.code!r}"


class _ClockEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    minutes: float | None = None
    hours: float | None = None
    working_hours: float | None = None
    working_days: int | None = None
    due: DueAt | None = None

    @model_validator(mode="after")
    def _one_unit(self) -> _ClockEntry:
        given = [u for u in Unit if getattr(self, u.value) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {[u.value for u in Unit]}")
        if getattr(self, given[0].value) < 0:
            raise ValueError("a clock must not be negative")
        if self.due is not None and given[0] is not Unit.WORKING_DAYS:
            raise ValueError("due applies to working_days clocks only")
        return self

    def duration(self) -> Duration:
        """The clock's amount in its one unit."""
        unit = next(u for u in Unit if getattr(self, u.value) is not None)
        return Duration(float(getattr(self, unit.value)), unit)


class _ProfileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name_zh: str
    name_en: str
    description: str = ""
    office_hours: str = "standard"
    clocks: dict[ClockName, _ClockEntry]

    @field_validator("clocks")
    @classmethod
    def _not_empty(cls, v: dict[ClockName, _ClockEntry]) -> dict[ClockName, _ClockEntry]:
        if not v:
            raise ValueError("a profile needs at least one clock")
        return v


class _ProfilesDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    office_hours: dict[str, list[str]]
    profiles: dict[str, _ProfileEntry]


@dataclass(frozen=True)
class ProfileSet:
    """The loaded profiles and the office-hours sets they use."""

    version: str
    profiles: Mapping[str, Profile]
    office_hours: Mapping[str, OfficeHours]

    def get(self, code: str) -> Profile:
        """The profile with this code; UnknownProfile otherwise."""
        try:
            return self.profiles[code]
        except KeyError:
            raise UnknownProfile(code) from None


def profiles_from_document(raw: dict[str, Any]) -> ProfileSet:
    """Validate a parsed profiles document; refuse it whole, naming every entry at fault."""
    try:
        doc = _ProfilesDocument.model_validate(raw)
    except ValidationError as exc:
        raise ProfilesError(
            problems_from_validation(exc, raw, section="profiles", noun="profile", key="")
        ) from None
    problems: list[Problem] = []
    hours: dict[str, OfficeHours] = {}
    for name, periods in doc.office_hours.items():
        try:
            hours[name] = OfficeHours.parse(periods, name)
        except ValueError as exc:
            problems.append(Problem(f"office hours {name!r}", "", str(exc)))
    profiles: dict[str, Profile] = {}
    for code, entry in doc.profiles.items():
        if entry.office_hours not in doc.office_hours:
            problems.append(
                Problem(f"profile {code!r}", "office_hours", f"unknown set {entry.office_hours!r}")
            )
            continue
        if entry.office_hours not in hours:
            continue
        office = hours[entry.office_hours]
        profiles[code] = Profile(
            code=code,
            name_zh=entry.name_zh,
            name_en=entry.name_en,
            description=entry.description,
            clocks={
                name: ClockSpec(name, c.duration(), office, c.due or DueAt.CLOSE_OF_BUSINESS)
                for name, c in entry.clocks.items()
            },
        )
    if problems:
        raise ProfilesError(problems)
    return ProfileSet(doc.version, profiles, hours)


def load_profiles(text: str | None = None) -> ProfileSet:
    """Load profiles from YAML text (default: the packaged profiles.yaml)."""
    raw = parse_yaml(
        packaged_text(DATA_PACKAGE, "profiles.yaml") if text is None else text, ProfilesError
    )
    return profiles_from_document(raw)


@cache
def default_profiles() -> ProfileSet:
    """The packaged profiles, loaded once per process."""
    return load_profiles()
