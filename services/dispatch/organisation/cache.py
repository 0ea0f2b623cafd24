"""The organisation and the routing rules as the database holds them now, cached in memory and
rebuilt only when their revision in the database moves (an admin change, a new rules file)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.deadlines.profiles import ProfileSet
from services.dispatch.models import MetaEntry, RuleSetRow
from services.dispatch.organisation import store
from services.dispatch.organisation.chart import OrgChart
from services.dispatch.routing import RoutingMemo
from services.dispatch.rules import RuleSet, load_rules


@dataclass(frozen=True)
class ActiveRules:
    """The routing rules in force: the newest activated rules file."""

    id: int
    rules: RuleSet
    text: str
    activated_at: datetime
    activated_by: str


class OrgCache:
    """The active org chart and routing rules, cached by their revision in the database."""

    def __init__(self, profiles: ProfileSet) -> None:
        self.profiles = profiles
        self._org: tuple[int, OrgChart] | None = None
        self._rules: ActiveRules | None = None
        self._memo: RoutingMemo | None = None

    def memo(self, org: OrgChart, rules: RuleSet) -> RoutingMemo:
        """The routing memo of this chart and rule set: kept while both stay in force (a new
        revision of either is a new object, and starts a new memo)."""
        memo = self._memo
        if memo is None or memo.org is not org or memo.rules is not rules:
            memo = self._memo = RoutingMemo(rules, org)
        return memo

    async def chart(self, session: AsyncSession) -> OrgChart:
        """The active org chart as the database holds it now."""
        return await self._chart_at(session, await store.current_revision(session))

    async def rules(self, session: AsyncSession) -> ActiveRules:
        """The active routing rules (the newest rule set), validated against the current org."""
        return (await self.current(session))[1]

    async def current(self, session: AsyncSession) -> tuple[OrgChart, ActiveRules]:
        """The org chart and the routing rules in force, both revisions read in one query (a
        fetched batch of tickets needs both; three look-ups were a third of its statements)."""
        org, rules, _ = await self.current_with(session)
        return org, rules

    async def current_with(
        self, session: AsyncSession, also: ColumnElement[Any] | None = None
    ) -> tuple[OrgChart, ActiveRules, Any]:
        """``current``, and the value of ``also`` (a scalar subquery; None without one) read in
        the same query: a fetch's look-up of its tickets already routed rides with the
        revisions, a round trip a fetch fewer."""
        columns: list[ColumnElement[Any]] = [
            select(col(MetaEntry.value))
            .where(col(MetaEntry.name) == store.ORG_REVISION)
            .scalar_subquery(),
            select(func.max(RuleSetRow.id)).scalar_subquery(),
        ]
        if also is not None:
            columns.append(also)
        read = (await session.execute(select(*columns))).one()
        revision, newest = read[0], read[1]
        value = read[2] if also is not None else None
        if newest is None:
            raise LookupError("no routing rules are loaded; run `fengqiao dispatch load-org`")
        if revision is None:
            raise LookupError("no organisation is loaded; run `fengqiao dispatch load-org`")
        org = await self._chart_at(session, int(revision))
        cached = self._rules
        if cached is None or cached.id != newest:
            row = await session.get(RuleSetRow, newest)
            assert row is not None and row.id is not None
            rules = load_rules(row.text, org=org, profiles=self.profiles)
            cached = ActiveRules(row.id, rules, row.text, row.activated_at, row.activated_by)
            self._rules = cached
        return org, cached, value

    async def _chart_at(self, session: AsyncSession, revision: int) -> OrgChart:
        """The chart of this revision: the cached one, or built again from the tables."""
        if self._org is None or self._org[0] != revision:
            tree = self._org[1].tree if self._org is not None else None
            org = await store.build_org(session, tree=tree)
            self._org = (revision, org)
        return self._org[1]
