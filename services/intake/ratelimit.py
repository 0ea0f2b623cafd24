"""Per-client rate limits on intake's public routes (posting appeals and callbacks, Open311).

A client is its authenticated subject (role and subject), or its address when it names none:
one channel platform or one citizen's app cannot crowd out the others. Limits are counted in
this process's memory with the ``limits`` library's sliding-window counter, so each worker
process allows the configured rate on its own (two workers: up to twice it in all).
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from shared.errors import DomainError

ANONYMOUS = "anonymous"


class RateLimited(DomainError):
    """The client is over one of its limits (429, retry after ``retry_after`` seconds)."""

    def __init__(self, limit: RateLimitItem, retry_after: int) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"rate limit of {limit} requests exceeded for this client; retry after {retry_after} s"
        )

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "retry_after": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def parse_limits(spec: str) -> tuple[RateLimitItem, ...]:
    """``"50/second;1500/minute"`` as limit items (empty: no limit); ValueError if malformed."""
    return tuple(parse_many(spec)) if spec.strip() else ()


def client_key(request: Request, subject: str | None = None) -> str:
    """Who is counted: the authenticated subject, else the client's address."""
    if subject and subject != ANONYMOUS:
        return f"subject:{subject}"
    return f"address:{request.client.host if request.client else 'unknown'}"


class ClientLimiter:
    """Counts each client's requests against every configured limit."""

    def __init__(self, spec: str) -> None:
        self.limits = parse_limits(spec)
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    def check(self, key: str) -> None:
        """Count one request of ``key``; RateLimited if that takes it over a limit."""
        for limit in self.limits:
            if not self._limiter.hit(limit, "intake", key):
                reset_at = self._limiter.get_window_stats(limit, "intake", key).reset_time
                raise RateLimited(limit, max(1, math.ceil(reset_at - time.time())))
