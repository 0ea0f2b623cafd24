"""What each fact adds to the pre-aggregated cells every committee query sums.

A *cell* is one combination of dimension values (``models.DIMENSIONS``) in one period (a day, or
the month it lies in): its columns are the counters of ``metrics_registry.COUNTERS`` and the
handling-time buckets (``metrics_registry.BUCKETS``). Cells are kept in several *grains*: roll-ups
that keep some dimensions (the others hold "") over a day or a month, so that each question sums
the fewest rows (``grain_for``). A fact's *contribution* is the list of shares it adds, one per
part (the ticket, each dispatch) and grain; when a fact is refolded, its old contribution is taken
away and the new one added, so the cells always equal the sum over the current facts whatever
order events arrived in (``rebuild`` proves it by recomputing them).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
from scipy.sparse import coo_array, csr_array

from services.evaluation.facts import Draft, TicketFold
from services.evaluation.metrics_registry import bucket
from services.evaluation.models import (
    CELL_COLUMNS,
    DIMENSIONS,
    CaseFact,
    DispatchFact,
    TicketFact,
)
from shared.workcalendar import to_shanghai

_TOWN = frozenset({"kind", "district_code", "town_code"})
_CATEGORY = _TOWN | {"category_top", "category_code"}


@dataclass(frozen=True)
class Grain:
    """One roll-up: the dimensions it keeps, over days or months."""

    name: str
    period: str  # "day", "week" (from Monday) or "month"
    dimensions: frozenset[str]

    @property
    def project(self) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
        """Dimension values → this grain's (the dropped ones ""), given the values + ("",)."""
        blank = len(DIMENSIONS)
        return itemgetter(*(i if n in self.dimensions else blank for i, n in enumerate(DIMENSIONS)))


ALL = frozenset(DIMENSIONS)
# Per period, smallest first: a query sums the first grain over its own period that keeps every
# dimension it filters or slices on, else the first such grain over days (``grain_for``). The
# full grain ("day") answers any combination; the others are there so the common questions (the
# city, districts and towns; departments; categories and hot spots; grids; channels and lines)
# sum hundreds or thousands of rows, not one per ticket. Every grain is a cell that each applied
# event moves, so a question another grain answers at its size has none of its own: whole
# months with filters no roll-up keeps sum the month's days of ``day`` (as many rows as a month
# grain of every dimension would hold: about a cell per ticket either way), and the city's,
# districts' and towns' months ``month_service`` (~150 cells a month at 10 M facts) and
# ``month_category`` (~1,600) (``DROPPED``).
GRAINS: tuple[Grain, ...] = (
    Grain("day_town", "day", _TOWN),
    # a week by department would sum seven days of ``day_coarse`` (~15,000 rows at 10 M facts)
    Grain("week_coarse", "week", _TOWN | {"department_code", "department_tier", "category_top"}),
    Grain("day_coarse", "day", _TOWN | {"department_code", "department_tier", "category_top"}),
    Grain("day", "day", ALL),
    Grain("month_service", "month", frozenset({"kind", "channel", "handling_line", "enterprise"})),
    Grain("month_category", "month", _CATEGORY),
    Grain("month_coarse", "month", _TOWN | {"department_code", "department_tier", "category_top"}),
    Grain("month_place", "month", _CATEGORY | {"village_code", "grid_code"}),
)
# Grains kept before, no longer written or read; migration 0012 deleted their cells.
DROPPED = ("month_town", "month")
BY_NAME = {g.name: g for g in GRAINS}
_PROJECT = tuple((g.name, g.period, g.project) for g in GRAINS)
_VILLAGE_TIERS = frozenset({"village", "grid"})
_TOWN_TIERS = frozenset({"town", "village", "grid"})
_SUCCESS = frozenset({"agreed", "fulfilled"})
_COUNTED = frozenset(CELL_COLUMNS)


# The periods whose cells sum to a period's, in order of preference: whole weeks from week
# cells or days, whichever grain is first in ``GRAINS`` (a week's town days are fewer rows than
# its department weeks), whole months from month cells, else from days.
_SUMMED_FROM = {"day": ({"day"},), "week": ({"day", "week"},), "month": ({"month"}, {"day"})}


def grain_for(period: str, needed: Iterable[str]) -> Grain:
    """The smallest grain over ``period`` ("day", "week" or "month") keeping every dimension
    needed: whole weeks are summed from week cells or from days, whichever is first in
    ``GRAINS``, and whole months from month cells, else (no month grain keeps what the question
    needs) from their days."""
    wanted = frozenset(needed)
    return next(
        g
        for over in _SUMMED_FROM[period]
        for g in GRAINS
        if g.period in over and wanted <= g.dimensions
    )


@dataclass(frozen=True)
class Share:
    """What one part of a fact (the ticket, one dispatch, a case) adds to one cell."""

    cell_key: str
    grain: str
    period_start: date
    dims: tuple[str, ...]
    counters: dict[str, int]


Part = tuple[date, tuple[str, ...], dict[str, int]]
"""What one part of a fact (the ticket, one dispatch, a case's opening or closing) adds: its
day, its dimension values and its counters, before they are spread over the grains."""


def stored(parts: Iterable[Part]) -> list[Any]:
    """The compact form kept in ``eval_contributions``: each part once (``from_stored`` gives
    every share back)."""
    return [[day.isoformat(), list(dims), counters] for day, dims, counters in parts]


def from_stored(contribution: Iterable[Any]) -> list[Share]:
    """Every share of a stored contribution."""
    return shares(from_stored_parts(contribution))


def from_stored_parts(contribution: Iterable[Any]) -> list[Part]:
    """The parts of a stored contribution."""
    return [
        (date.fromisoformat(day), tuple(dims), counters) for day, dims, counters in contribution
    ]


def period_start(grain: str, day: date) -> date:
    """The first day of the period of ``grain`` that ``day`` lies in."""
    return _starts(day)[BY_NAME[grain].period]


def _starts(day: date) -> dict[str, date]:
    """The first day of the day, week (Monday) and month ``day`` lies in."""
    return {"day": day, "week": day - timedelta(days=day.weekday()), "month": day.replace(day=1)}


def cell_key(grain: str, start: date, dims: tuple[str, ...]) -> str:
    """A short stable key for one cell: its period's first day (``YYYYMMDD``), then 24 hex
    digits of a digest of where it is. Keys sort by period, so the cells the live apply moves
    (this week's and month's) sit together in the key index, in memory, however many years of
    cells lie before them; a digest alone spread them over the whole index, and beside 10 M
    facts most moves read a page the database did not hold (migration 0012_period_keys)."""
    day = start.isoformat()
    digest = hashlib.blake2b("|".join((grain, day, *dims)).encode(), digest_size=16).hexdigest()
    return day.replace("-", "") + digest[:24]  # 96 bits: no collision among billions


Place = tuple[str, date, tuple[str, ...]]
"""Where a cell is: its grain, period start and kept dimension values (the others "")."""


@lru_cache(maxsize=1 << 17)  # ~0.4 KB an entry: ~50 MB; room for ``_places``' finer keys
def _cell_key(grain: str, start: date, dims: tuple[str, ...]) -> str:
    """``cell_key``, remembered: the coarse cells are named again for every ticket in them."""
    return cell_key(grain, start, dims)


# As many finest cells as ``service.FOLDED`` keeps tickets (a ticket's parts share one, mostly):
# a miss names a cell of each grain, a few of them new (a digest each). ~3 KB an entry: ~100 MB.
@lru_cache(maxsize=1 << 15)
def _places(day: date, dims: tuple[str, ...]) -> tuple[tuple[str, Place], ...]:
    """The key and place of each grain's cell of one finest cell, remembered: the live path
    moves a ticket's finest cell again at each of its events."""
    return tuple((_cell_key(*place), place) for place in _spread(day, dims))


def named(grain: str, start: date, dims: tuple[str, ...]) -> dict[str, Any]:
    """A cell's key, grain, period start and the dimension values that are not "", as a row."""
    row: dict[str, Any] = {"cell_key": _cell_key(grain, start, dims), "grain": grain}
    row["period_start"] = start
    row.update((name, value) for name, value in zip(DIMENSIONS, dims, strict=True) if value)
    return row


Delta = dict[tuple[date, tuple[str, ...]], dict[str, int]]
"""Counter differences by day and full dimensions (the finest cell), before the spread."""


def add_parts(delta: Delta, parts: Iterable[Part], sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) what ``parts`` add to the finest cells."""
    for day, dims, counters in parts:
        at = delta.get((day, dims))
        if at is None:
            delta[day, dims] = at = {}
        for name, value in counters.items():
            at[name] = at.get(name, 0) + sign * value


@dataclass
class Moves:
    """The cells a batch's differences move, each once: by cell key, a row of the key and
    only the counters that change (``changes``), and where the cell is (``places``: grain,
    period start, kept dimension values) — needed only to insert a cell that does not exist."""

    changes: dict[str, dict[str, Any]]
    places: dict[str, Place]

    def names(self, key: str) -> dict[str, Any]:
        """The cell's key, grain, period start and dimension values that are not ""."""
        return named(*self.places[key])

    def rows(self) -> dict[str, dict[str, Any]]:
        """Whole rows: ``names`` and the changes."""
        return {key: self.names(key) | row for key, row in self.changes.items()}


def moves(delta: Delta) -> Moves:
    """The cells a batch's differences move (a cell whose changes cancel out is left out, as
    is a finest cell whose do)."""
    rows: dict[str, dict[str, Any]] = {}
    places: dict[str, Place] = {}
    summed: set[str] = set()  # rows with changes from several finest cells: they may cancel
    for (day, dims), counters in delta.items():
        changes = {name: value for name, value in counters.items() if value}
        if not changes:
            continue
        for key, place in _places(day, dims):
            row = rows.get(key)
            if row is None:
                rows[key] = row = dict(changes)
                row["cell_key"] = key
                places[key] = place
                continue
            summed.add(key)
            for counter, value in changes.items():
                row[counter] = row.get(counter, 0) + value
    for key in summed:
        row = rows[key]
        cancelled = [name for name in _COUNTED.intersection(row) if not row[name]]
        if cancelled:
            for name in cancelled:
                del row[name]
            if _COUNTED.isdisjoint(row):
                del rows[key]
    return Moves(rows, places)


def spread(delta: Delta) -> dict[str, dict[str, Any]]:
    """The cells a batch's differences move, each once, as whole rows keyed by cell key: the
    key, grain, period start, the dimension values that are not "" and only the counters that
    change (``moves``)."""
    return moves(delta).rows()


def _spread(day: date, dims: tuple[str, ...]) -> Iterator[tuple[str, date, tuple[str, ...]]]:
    """The cell (grain, period start, kept dimensions) of each grain a part counts in."""
    starts, values = _starts(day), (*dims, "")
    for name, period, project in _PROJECT:
        yield name, starts[period], project(values)


def shares(parts: Iterable[Part]) -> list[Share]:
    """Every share of some parts: one per part and grain."""
    return [
        Share(cell_key(name, start, at), name, start, at, counters)
        for day, dims, counters in parts
        for name, start, at in _spread(day, dims)
    ]


ROW_COLUMNS = ("cell_key", "grain", "period_start", *DIMENSIONS, *CELL_COLUMNS)
_COLUMN = {name: i for i, name in enumerate(CELL_COLUMNS)}


Fine = tuple[list[tuple[date, tuple[str, ...]]], csr_array]
"""Counters summed by day and full dimensions (the finest cell): the distinct (day, dimensions)
and a sparse matrix of their sums, a row each, in ``CELL_COLUMNS`` order. Additive: the sums of
some facts and of others add up to those of all (``add_fine``)."""


def roll_up(parts: Iterable[Part], *, block: int = 20_000) -> Iterator[list[tuple[Any, ...]]]:
    """The cells of many parts summed at once, as rows in ``ROW_COLUMNS`` order, in blocks of
    ``block`` (the rebuild). The sums are two sparse matrix products, not a Python addition per
    counter: parts → their day and full dimensions (a ticket and its one dispatch usually share
    them, ``fine_sums``) → every grain's cell (``grain_rows``)."""
    return grain_rows(fine_sums(parts), block=block)


def fine_sums(parts: Iterable[Part]) -> Fine:
    """What ``parts`` add to each finest cell."""
    fine: dict[tuple[date, tuple[str, ...]], int] = {}
    rows: array[int] = array("q")
    columns: array[int] = array("q")
    values: array[int] = array("q")
    for day, dims, counters in parts:
        at = fine.setdefault((day, dims), len(fine))
        rows.extend(repeat(at, len(counters)))
        columns.extend(map(_COLUMN.__getitem__, counters))
        values.extend(counters.values())
    return list(fine), _summed(len(fine), rows, columns, values)


def add_fine(sums: Iterable[Fine]) -> Fine:
    """Several ``fine_sums`` added up (of disjoint sets of facts, e.g. folded apart)."""
    fine: dict[tuple[date, tuple[str, ...]], int] = {}
    rows: array[int] = array("q")
    columns: list[Any] = []
    values: list[Any] = []
    for keys, matrix in sums:
        coo = matrix.tocoo()
        at = np.fromiter((fine.setdefault(key, len(fine)) for key in keys), np.int64, len(keys))
        rows.extend(at[coo.row].tolist())
        columns.append(coo.col)
        values.append(coo.data)
    return list(fine), _summed(
        len(fine),
        rows,
        np.concatenate(columns) if columns else array("q"),
        np.concatenate(values) if values else array("q"),
    )


def _summed(n: int, rows: Any, columns: Any, values: Any) -> csr_array:
    # duplicate (row, column) entries are summed by the conversion
    return coo_array(
        (
            np.asarray(values, np.int64),
            (np.asarray(rows, np.int64), np.asarray(columns, np.int64)),
        ),
        shape=(n, len(CELL_COLUMNS)),
    ).tocsr()


def grain_rows(
    sums: Fine, *, grains: Iterable[str] | None = None, block: int = 20_000
) -> Iterator[list[tuple[Any, ...]]]:
    """The cells of ``grains`` (all by default) that the finest cells' ``sums`` add up to, as
    rows in ``ROW_COLUMNS`` order, in blocks of ``block``."""
    fine, by_fine = sums
    wanted = None if grains is None else frozenset(grains)
    project = [p for p in _PROJECT if wanted is None or p[0] in wanted]
    cells: dict[tuple[str, date, tuple[str, ...]], int] = {}
    into: array[int] = array("q")
    for day, dims in fine:
        starts, values = _starts(day), (*dims, "")
        into.extend(
            cells.setdefault((name, starts[period], at(values)), len(cells))
            for name, period, at in project
        )
    spread = csr_array(
        (
            np.ones(len(into), np.int64),
            (np.frombuffer(into, np.int64), np.repeat(np.arange(len(fine)), len(project))),
        ),
        shape=(len(cells), len(fine)),
    )
    summed = (spread @ by_fine).tocsr()
    keys = iter(cells)
    for first in range(0, len(cells), block):
        out = []
        # the block's sums first: zip stops on them before taking a key too many
        for row_sums, (name, start, dims) in zip(
            summed[first : first + block].toarray().tolist(), keys, strict=False
        ):
            out.append((cell_key(name, start, dims), name, start, *dims, *row_sums))
        yield out


def _part(moment: datetime, dims: tuple[str, ...], counters: dict[str, int]) -> list[Part]:
    counters = {k: v for k, v in counters.items() if v}
    if not counters:
        return []
    return [(to_shanghai(moment).date(), dims, counters)]


def _dims(
    ticket: TicketFact | Draft, *, department: str | None, tier: str | None, line: str | None
) -> tuple[str, ...]:
    # The tuple made directly, in ``DIMENSIONS`` order (test_cells.py holds each value under
    # its name): made for every part of every refolded fact, at each of the fact's events.
    category = ticket.category_code or ""
    return (
        ticket.kind,
        department or "",
        tier or "",
        ticket.district_code or "",
        ticket.town_code or "",
        ticket.village_code or "",
        ticket.grid_code or "",
        ticket.channel or "",
        category[:2],
        category,
        line or "",
        "1" if ticket.is_enterprise else "0",
    )


def ticket_counters(t: TicketFact | Draft) -> dict[str, int]:
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


def dispatch_counters(r: DispatchFact | Draft) -> dict[str, int]:
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
    """Every share of a ticket and its dispatches."""
    return shares(ticket_parts(fold))


def case_shares(case: CaseFact) -> list[Share]:
    """Every share of a mediation case."""
    return shares(case_parts(case))


def ticket_parts(fold: TicketFold) -> list[Part]:
    """What a ticket and its dispatches add, in the period the ticket was received."""
    t = fold.draft
    starts = [t.received_at, t.dispatched_at, *(r.assigned_at for r in fold.dispatch_drafts)]
    moment = t.received_at or min((s for s in starts if s is not None), default=None)
    if moment is None:
        return []  # nothing dated yet (only a callback or a late step has arrived)
    own = _dims(t, department=t.department_code, tier=t.department_tier, line=t.handling_line)
    counters = ticket_counters(t)
    if t.completed and t.handling_centidays is not None:
        counters[bucket(t.handling_centidays)] = 1
    parts = _part(moment, own, counters)
    for r in fold.dispatch_drafts:
        dims = _dims(
            t,
            department=r.department_code,
            tier=r.department_tier,
            line=r.handling_line or t.handling_line,
        )
        parts += _part(moment, dims, dispatch_counters(r))
    return parts


def case_parts(case: CaseFact) -> list[Part]:
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
    parts: list[Part] = []
    if case.opened_at is not None:
        parts += _part(case.opened_at, dims, {"cases_opened": 1})
    if case.closed_at is not None and case.outcome is not None:
        closed = {
            "cases_closed": int(case.outcome != "withdrawn"),
            "cases_succeeded": int(case.outcome in _SUCCESS),
        }
        parts += _part(case.closed_at, dims, closed)
    return parts
