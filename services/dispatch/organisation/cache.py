"""The organisation and the routing rules as the database holds them now, cached in memory and
rebuilt only when their revision in the database moves (an admin change, a new rules file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.dispatch.deadlines.profiles import ProfileSet
from services.dispatch.models import MetaEntry, RuleSetRow, TicketRecord
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


# The revisions and the tickets already routed among the second parameter, by dialect: what
# ``current`` selects, with a look-up of the fetch's tickets (table names as the models name
# them; the connection's search path holds the service's schema on PostgreSQL).
_REVISIONS = (
    f"SELECT (SELECT value FROM {MetaEntry.__tablename__} WHERE name = {{p1}}),"
    f" (SELECT max(id) FROM {RuleSetRow.__tablename__}),"
    f" (SELECT {{agg}}(ticket_id) FROM {TicketRecord.__tablename__} WHERE ticket_id {{among}})"
)
_ROUTED = {
    "postgresql": _REVISIONS.format(p1="$1", agg="array_agg", among="= ANY($2::VARCHAR[])"),
    "sqlite": _REVISIONS.format(
        p1="?", agg="json_group_array", among="IN (SELECT value FROM json_each(?))"
    ),
}


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
        read = (
            await session.execute(
                select(
                    select(col(MetaEntry.value))
                    .where(col(MetaEntry.name) == store.ORG_REVISION)
                    .scalar_subquery(),
                    select(func.max(RuleSetRow.id)).scalar_subquery(),
                )
            )
        ).one()
        return await self._in_force(session, read[0], read[1])

    async def current_and_routed(
        self, session: AsyncSession, ticket_ids: list[str]
    ) -> tuple[OrgChart, ActiveRules, set[str]]:
        """``current``, and which of these tickets are routed already, in one statement whose
        text is fixed whatever the count (``_ROUTED``: the ids as one array on PostgreSQL, one
        JSON array on SQLite), run as it is on the session's connection. A fetch built,
        compiled and ran its selects through the ORM each time (one on PostgreSQL, an IN list
        of n parameters and the revisions' select on SQLite): ~0.8 ms of the process a fetch on
        PostgreSQL, against ~0.2 ms this way, for the same rows.

        On PostgreSQL it is sent on the driver's connection itself, which opens no transaction:
        it is read in the session's transaction when something before it opened one on the
        connection, else alone — as a fetch of received tickets then writes its rows in one
        statement (``Staged.write``) and the session's commit has nothing to send. The BEGIN
        and COMMIT round trips and SQLAlchemy's cursor were ~0.2–0.3 ms of the process a fetch.
        Nothing needs them: at read committed the read sees what a transaction would, and a
        ticket routed by another transaction meanwhile is refused by its key in the write."""
        conn = await session.connection()
        dialect = conn.dialect.name
        read: Any
        if dialect == "postgresql":
            # On the driver: in the session's transaction if one is open on the connection,
            # else alone (as the batch's one write then is).
            driver: Any = (await conn.get_raw_connection()).driver_connection
            read = await driver.fetchrow(_ROUTED[dialect], store.ORG_REVISION, ticket_ids)
            routed = read[2]
        else:
            read = (
                await conn.exec_driver_sql(
                    _ROUTED[dialect], (store.ORG_REVISION, json.dumps(ticket_ids))
                )
            ).one()
            routed = json.loads(read[2])
        org, rules = await self._in_force(session, read[0], read[1])
        return org, rules, set(routed or ())

    async def _in_force(
        self, session: AsyncSession, revision: str | None, newest: int | None
    ) -> tuple[OrgChart, ActiveRules]:
        """The chart and rules of the revisions read (the cached ones while they stand)."""
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
        return org, cached

    async def _chart_at(self, session: AsyncSession, revision: int) -> OrgChart:
        """The chart of this revision: the cached one, or built again from the tables."""
        if self._org is None or self._org[0] != revision:
            tree = self._org[1].tree if self._org is not None else None
            org = await store.build_org(session, tree=tree)
            self._org = (revision, org)
        return self._org[1]
