"""Where "now" comes from: the real time, or a clock tests and demos move by hand.

Every service context takes a ``Clock``; deadlines, escalations, follow-up dates and reporting
periods read it, so a test can move time forward instead of sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from shared.events.base import utcnow


class Clock(Protocol):
    """Where "now" comes from."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that moves only when told: for tests and demos of deadlines."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a clock needs a timezone-aware start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**parts)``; returns the new now."""
        self._now += delta if delta is not None else timedelta(**parts)
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to a moment (forward or back)."""
        if moment.tzinfo is None:
            raise ValueError("naive datetime refused")
        self._now = moment
