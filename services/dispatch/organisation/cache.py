"""The organisation and the routing rules as the database holds them now, cached in memory and
rebuilt only when their revision in the database moves (an admin change, a new rules file)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.deadlines.profiles import ProfileSet
from services.dispatch.models import RuleSetRow
from services.dispatch.organisation import store
from services.dispatch.organisation.chart import OrgChart
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

    async def chart(self, session: AsyncSession) -> OrgChart:
        """The active org chart as the database holds it now."""
        revision = await store.current_revision(session)
        if self._org is None or self._org[0] != revision:
            tree = self._org[1].tree if self._org is not None else None
            org = await store.build_org(session, tree=tree)
            self._org = (revision, org)
        return self._org[1]

    async def rules(self, session: AsyncSession) -> ActiveRules:
        """The active routing rules (the newest rule set), validated against the current org."""
        newest = (await session.execute(select(func.max(RuleSetRow.id)))).scalar_one_or_none()
        if newest is None:
            raise LookupError("no routing rules are loaded; run `fengqiao dispatch load-org`")
        org = await self.chart(session)
        cached = self._rules
        if cached is None or cached.id != newest:
            row = await session.get(RuleSetRow, newest)
            assert row is not None and row.id is not None
            rules = load_rules(row.text, org=org, profiles=self.profiles)
            cached = ActiveRules(row.id, rules, row.text, row.activated_at, row.activated_by)
            self._rules = cached
        return cached
