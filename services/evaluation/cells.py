"""What each fact adds to the pre-aggregated cells every committee query sums.

A *cell* is one combination of dimension values (``models.DIMENSIONS``) in one period (a day, and
the month it lies in): its columns are the counters of ``metrics_registry.COUNTERS``. A fact's
*contribution* is the list of (cell, counters, handling time) it adds; when a fact is refolded,
its old contribution is taken away and the new one added, so the cells always equal the sum over
the current facts whatever order events arrived in (``rebuild`` proves it by recomputing them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.evaluation.facts import FactRow, TicketFold
from services.evaluation.models import DIMENSIONS, CaseFact, DispatchFact, TicketFact
from shared.workcalendar import to_shanghai

# Day cells answer any range; month cells any whole months; "month_coarse" cells keep only the
# dimensions the headline queries and the ranking use (kind, department and its tier, district,
# town, top-level category), so a year of city or department figures sums a few thousand rows.
GRAINS = ("day", "month", "month_coarse")
FINE_DIMENSIONS = frozenset(
    {"village_code", "grid_code", "channel", "category_code", "handling_line", "enterprise"}
)
_FINE_POSITIONS = tuple(i for i, name in enumerate(DIMENSIONS) if name in FINE_DIMENSIONS)
_VILLAGE_TIERS = frozenset({"village", "grid"})
_TOWN_TIERS = frozenset({"town", "village", "grid"})
_SUCCESS = frozenset({"agreed", "fulfilled"})


@dataclass(frozen=True)
class Share:
    """What one fact adds to one cell."""

    cell_key: str
    grain: str
    period_start: date
    dims: tuple[str, ...]
    counters: dict[str, int]
    centidays: int | None = None

    def stored(self) -> list[Any]:
        """The compact form kept in ``eval_contributions`` (enough to take the share away)."""
        return [
            self.cell_key,
            self.counters,
            self.centidays,
            self.grain,
            self.period_start.isoformat(),
        ]


def period_start(grain: str, day: date) -> date:
    """The first day of the period of ``grain`` that ``day`` lies in."""
    return day if grain == "day" else day.replace(day=1)


def cell_key(grain: str, start: date, dims: tuple[str, ...]) -> str:
    """A short stable key for one cell."""
    text = "|".join((grain, start.isoformat(), *dims))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _shares(
    moment: datetime, dims: tuple[str, ...], counters: dict[str, int], centi: int | None
) -> list[Share]:
    counters = {k: v for k, v in counters.items() if v}
    if not counters:
        return []
    day = to_shanghai(moment).date()
    coarse = tuple("" if i in _FINE_POSITIONS else v for i, v in enumerate(dims))
    shares = []
    for grain in GRAINS:
        start = period_start(grain, day)
        at = coarse if grain == "month_coarse" else dims
        shares.append(Share(cell_key(grain, start, at), grain, start, at, counters, centi))
    return shares


def _dims(
    ticket: TicketFact | FactRow, *, department: str | None, tier: str | None, line: str | None
) -> tuple[str, ...]:
    values = {
        "kind": ticket.kind,
        "department_code": department or "",
        "department_tier": tier or "",
        "district_code": ticket.district_code or "",
        "town_code": ticket.town_code or "",
        "village_code": ticket.village_code or "",
        "grid_code": ticket.grid_code or "",
        "channel": ticket.channel or "",
        "category_top": (ticket.category_code or "")[:2],
        "category_code": ticket.category_code or "",
        "handling_line": line or "",
        "enterprise": "1" if ticket.is_enterprise else "0",
    }
    return tuple(values[name] for name in DIMENSIONS)


def ticket_counters(t: TicketFact | FactRow) -> dict[str, int]:
    """A ticket's own counters (its dispatches' are in ``dispatch_counters``)."""
    done = t.completed
    counted = done and t.callback_counted
    tier = t.department_tier or ""
    return {
        "tickets": 1,
        "received": int(t.received_at is not None),
        "dispatched": int(t.dispatched_at is not None),
        "completed": int(done),
        "completed_on_time": int(done and not t.completed_late),
        "callbacks": int(counted),
        "callbacks_on_open": int(t.feedback_revision is not None and not done),
        "resolved": int(counted and bool(t.resolved)),
        "satisfied": int(counted and t.satisfaction == "satisfied"),
        "basically_satisfied": int(counted and t.satisfaction == "basically_satisfied"),
        "dissatisfied": int(counted and t.satisfaction == "dissatisfied"),
        "one_time": int(done and t.returns == 0 and not t.reopened and not t.is_repeat),
        "repeats": int(t.received_at is not None and t.is_repeat),
        "returned": int(t.returns > 0),
        "transferred": int(t.transfers > 0),
        "extended": int(t.extensions > 0),
        "escalated": int(t.escalations > 0),
        "supervised": int(t.supervised),
        "whistled": int(t.whistles > 0),
        "mediated": int(done and t.mediated),
        "closed_village": int(done and tier in _VILLAGE_TIERS),
        "closed_town": int(done and tier in _TOWN_TIERS),
        "handling_centidays": (t.handling_centidays or 0) if done else 0,
    }


def dispatch_counters(r: DispatchFact | FactRow) -> dict[str, int]:
    """One dispatch's counters: its clocks and, for a summons, its report."""
    owning = not r.summoned or r.mode is not None
    signed, contacted = r.signed_at is not None, r.contacted_at is not None
    return {
        "dispatches": int(owning),
        "sign_due": int(owning and (signed or r.sign_escalated)),
        "sign_on_time": int(owning and signed and not r.sign_late),
        "contact_due": int(owning and (contacted or r.contact_escalated)),
        "contact_on_time": int(owning and contacted and not r.contact_late),
        "reports_due": int(r.summoned),
        "reports_on_time": int(r.summoned and bool(r.report_on_time)),
    }


def ticket_shares(fold: TicketFold) -> list[Share]:
    """Everything a ticket and its dispatches add, in the period the ticket was received."""
    t = fold.ticket
    starts = [t.received_at, t.dispatched_at, *(r.assigned_at for r in fold.dispatches)]
    moment = t.received_at or min((s for s in starts if s is not None), default=None)
    if moment is None:
        return []  # nothing dated yet (only a callback or a late step has arrived)
    own = _dims(t, department=t.department_code, tier=t.department_tier, line=t.handling_line)
    centi = t.handling_centidays if t.completed else None
    shares = _shares(moment, own, ticket_counters(t), centi)
    for r in fold.dispatches:
        dims = _dims(
            t,
            department=r.department_code,
            tier=r.department_tier,
            line=r.handling_line or t.handling_line,
        )
        shares += _shares(moment, dims, dispatch_counters(r), None)
    return shares


def case_shares(case: CaseFact) -> list[Share]:
    """A mediation case: opened in the period it opened, its outcome in the period it closed."""
    values = dict.fromkeys(DIMENSIONS, "")
    values.update(
        kind="case",
        district_code=case.district_code or "",
        town_code=case.town_code or "",
        category_top=(case.category_code or "")[:2],
        category_code=case.category_code or "",
        handling_line="mediation",
        enterprise="0",
    )
    dims = tuple(values[name] for name in DIMENSIONS)
    shares: list[Share] = []
    if case.opened_at is not None:
        shares += _shares(case.opened_at, dims, {"cases_opened": 1}, None)
    if case.closed_at is not None and case.outcome is not None:
        closed = {
            "cases_closed": int(case.outcome != "withdrawn"),
            "cases_succeeded": int(case.outcome in _SUCCESS),
        }
        shares += _shares(case.closed_at, dims, closed, None)
    return shares
