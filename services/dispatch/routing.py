"""Declarative routing: the rules in force (``rules.py``, data not code) decide who handles a
ticket, and why.

Rules are tried in priority order; the first whose conditions all hold *and* that names at
least one eligible department fires. Nothing fires → the supervised pool (督着办). The
decision carries an explanation of every rule tried, for ``POST /routing/dry-run``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.dispatch.deadlines.profiles import UnknownProfile
from services.dispatch.organisation.chart import Department, OrgChart
from services.dispatch.rules import (
    AllCapable,
    ByFlag,
    Explicit,
    HandlingLine,
    HandlingMode,
    LowestCapable,
    Match,
    Rule,
    RuleSet,
    Urgency,
    proactive_rules,
)
from shared import taxonomy
from shared.geo import Tier
from shared.nfkc import nfkc


class TicketFacts(BaseModel):
    """What routing looks at; built from intake's ticket (or posted to the dry-run)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticket_id: str | None = None
    category: str
    area_code: str | None = Field(None, description="the deepest area known, a grid at best")
    channel: str
    enterprise: bool = False
    urgency: Urgency = "normal"
    repeat_count: int = Field(0, ge=0, description="earlier appeals on the same matter")
    text: str = Field("", description="title and content, searched by keyword conditions")
    default_profile: str | None = Field(None, description="the channel's default profile")


# --------------------------------------------------------------------------------------------
# Routing


class DepartmentRef(BaseModel):
    """A department as a decision names it."""

    model_config = ConfigDict(frozen=True)

    code: str
    name_zh: str
    name_en: str
    tier: Tier
    jurisdiction: str

    @classmethod
    def of(cls, d: Department) -> DepartmentRef:
        """The reference for an org-chart department."""
        return cls(
            code=d.code,
            name_zh=d.name_zh,
            name_en=d.name_en,
            tier=d.tier,
            jurisdiction=d.jurisdiction,
        )


class ConditionCheck(BaseModel):
    """One condition of a rule, checked against the ticket."""

    model_config = ConfigDict(frozen=True)

    field: str
    passed: bool
    detail: str


Outcome = Literal["fired", "not_matched", "no_department"]


class RuleTrace(BaseModel):
    """How one rule fared: fired, did not match (and why), or matched but found nobody."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    priority: int
    outcome: Outcome
    checks: tuple[ConditionCheck, ...]
    reason: str


class RoutingDecision(BaseModel):
    """Who handles a ticket, on which line and clocks, and the reasoning behind it."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str | None
    category: str
    area_code: str | None
    rules_version: str
    rules_digest: str
    rule_id: str | None  # None: no rule fired, the ticket went to the supervised pool
    departments: tuple[DepartmentRef, ...]
    line: HandlingLine
    handling: HandlingMode
    profile: str
    focus: bool
    supervised: bool  # 督着办: the centre must place it by hand
    excluded: tuple[str, ...]
    explanation: tuple[RuleTrace, ...]
    summary: str


@lru_cache(maxsize=1024)
def _normalise(text: str) -> str:
    """Text as keywords are matched against it (each rule with keywords asks again for the same
    ticket text, and for the same keywords on every ticket: cached)."""
    return nfkc(text).casefold()


Check = tuple[str, bool, str]
"""One condition checked: (field, passed, detail) — a plain tuple, a ``ConditionCheck`` only in
an explanation someone reads."""


def _checks(
    match: Match, facts: TicketFacts, org: OrgChart, *, explain: bool = True
) -> list[Check]:
    """The rule's conditions checked against the ticket. Without ``explain`` the checks stop at
    the first that fails and carry no detail: a batch routes every ticket through a dozen rules
    and reads no explanation of those that did not fire."""
    out: list[Check] = []
    if match.categories is not None:
        category = taxonomy.get(facts.category)
        hit = next((c for c in match.categories if c in (category.code, category.parent)), None)
        detail = _category_detail(facts.category, match.categories, hit) if explain else ""
        out.append(("categories", hit is not None, detail))
        if hit is None and not explain:
            return out
    if match.areas is not None:
        area = facts.area_code
        inside = (
            None
            if area is None
            else next((a for a in match.areas if org.tree.is_within(area, a)), None)
        )
        detail = _area_detail(area, match.areas, inside) if explain else ""
        out.append(("areas", inside is not None, detail))
        if inside is None and not explain:
            return out
    if match.channels is not None:
        ok = facts.channel in match.channels
        detail = _among("channel", facts.channel, match.channels, ok) if explain else ""
        out.append(("channels", ok, detail))
        if not (ok or explain):
            return out
    if match.enterprise is not None:
        ok = facts.enterprise == match.enterprise
        detail = (
            f"enterprise is {facts.enterprise}, rule wants {match.enterprise}" if explain else ""
        )
        out.append(("enterprise", ok, detail))
        if not (ok or explain):
            return out
    if match.urgency is not None:
        ok = facts.urgency in match.urgency
        detail = _among("urgency", facts.urgency, list(match.urgency), ok) if explain else ""
        out.append(("urgency", ok, detail))
        if not (ok or explain):
            return out
    if match.repeat_count_at_least is not None:
        least = match.repeat_count_at_least
        ok = facts.repeat_count >= least
        detail = (
            f"repeat count {facts.repeat_count} {'>=' if ok else '<'} {least}" if explain else ""
        )
        out.append(("repeat_count_at_least", ok, detail))
        if not (ok or explain):
            return out
    if match.keywords is not None:
        text = _normalise(facts.text)
        if explain:
            found = [k for k in match.keywords if _normalise(k) in text]
            detail = (
                f"text mentions {found}" if found else f"text mentions none of {match.keywords}"
            )
            out.append(("keywords", bool(found), detail))
        else:
            out.append(("keywords", any(_normalise(k) in text for k in match.keywords), ""))
    return out


def _category_detail(category: str, listed: list[str], hit: str | None) -> str:
    if hit is None:
        return f"category {category} is not in {listed}"
    if hit == category:
        return f"category {category} is listed"
    return f"category {category} is under {hit}"


def _area_detail(area: str | None, listed: list[str], inside: str | None) -> str:
    if area is None:
        return "the ticket has no area"
    return f"area {area} " + (f"lies in {inside}" if inside else f"lies outside {listed}")


def _among(label: str, value: str, allowed: list[str], ok: bool) -> str:
    return f"{label} {value!r} " + ("is" if ok else "is not") + f" in {allowed}"


def _above(departments: list[Department], min_tier: Tier | None) -> list[Department]:
    if min_tier is None:
        return departments
    return [d for d in departments if d.tier.level <= min_tier.level]


def _select(
    assign: LowestCapable | AllCapable | ByFlag | Explicit,
    facts: TicketFacts,
    org: OrgChart,
    exclude: Collection[str],
) -> tuple[list[Department], str]:
    """The departments a rule's assignment yields, and how they were found."""
    area = facts.area_code
    if isinstance(assign, LowestCapable | AllCapable):
        capable = _above(
            org.capable_departments(facts.category, area, exclude=exclude), assign.min_tier
        )
        if not capable:
            return [], f"no department handles {facts.category} in area {area or 'unknown'}"
        if isinstance(assign, AllCapable):
            return capable, f"all {len(capable)} capable departments, lowest tier first"
        lowest = capable[0].tier
        return [d for d in capable if d.tier is lowest], f"lowest capable tier ({lowest})"
    if isinstance(assign, ByFlag):
        flagged = _above(org.with_flag(assign.flag, area, exclude=exclude), assign.min_tier)
        if not flagged:
            return [], f"no {assign.flag.value} department covers area {area or 'unknown'}"
        return flagged[:1], f"nearest {assign.flag.value} department ({flagged[0].tier})"
    chosen: list[Department] = []
    for code in assign.departments:
        d = org.resolve(code, area)
        if d is None or d.code in exclude:
            continue
        if area is not None and not org.tree.is_within(area, d.jurisdiction):
            continue  # a named unit never reaches outside its own jurisdiction
        if area is None and d.tier is not Tier.CITY:
            continue
        chosen.append(d)
    if not chosen:
        return [], f"none of {assign.departments} covers area {area or 'unknown'} (or all excluded)"
    return chosen, "named in the rule"


def _trace(rule: Rule, checks: list[Check], outcome: Outcome, reason: str) -> RuleTrace:
    return RuleTrace(
        rule_id=rule.id,
        priority=rule.priority,
        outcome=outcome,
        checks=tuple(ConditionCheck(field=f, passed=p, detail=d) for f, p, d in checks),
        reason=reason,
    )


def route(
    facts: TicketFacts,
    rules: RuleSet,
    org: OrgChart,
    *,
    exclude: Collection[str] = (),
    explain: bool = True,
) -> RoutingDecision:
    """Route a ticket: the first rule that matches and finds a department decides.

    ``exclude`` lists departments that must not get the ticket again (an approved return).
    Without ``explain`` the decision's explanation is empty (its summary still says why the
    rule fired): what placing a batch of tickets needs, at a fraction of the cost.
    Raises KeyError (UnknownArea, UnknownProfile, an unknown category) for unknown codes.
    """
    taxonomy.get(facts.category)
    if facts.area_code is not None:
        org.tree.area(facts.area_code)
    if facts.default_profile is not None and facts.default_profile not in rules.profile_codes:
        raise UnknownProfile(facts.default_profile)
    excluded = tuple(sorted(set(exclude)))
    traces: list[RuleTrace] = []
    for rule in rules.rules:
        checks = _checks(rule.match, facts, org, explain=explain)
        if not all(passed for _, passed, _ in checks):
            if explain:
                failed = "; ".join(detail for _, passed, detail in checks if not passed)
                traces.append(_trace(rule, checks, "not_matched", failed))
            continue
        departments, how = _select(rule.result.assign, facts, org, excluded)
        if not departments:
            if explain:
                traces.append(_trace(rule, checks, "no_department", how))
            continue
        if not explain:
            checks = _checks(rule.match, facts, org)  # the summary names what matched
        matched = "; ".join(detail for _, _, detail in checks) or "the rule has no conditions"
        if explain:
            traces.append(_trace(rule, checks, "fired", f"{matched}; {how}"))
        profile = rule.result.profile or facts.default_profile or rules.defaults.profile
        names = "、".join(d.name_zh for d in departments)
        return RoutingDecision(
            ticket_id=facts.ticket_id,
            category=facts.category,
            area_code=facts.area_code,
            rules_version=rules.version,
            rules_digest=rules.digest,
            rule_id=rule.id,
            departments=tuple(DepartmentRef.of(d) for d in departments),
            line=rule.result.line,
            handling=rule.result.handling,
            profile=profile,
            focus=rule.result.focus,
            supervised=False,
            excluded=excluded,
            explanation=tuple(traces),
            summary=(
                f"rule {rule.id!r} fired ({matched}); {rule.result.handling.value} to {names} "
                f"by {how}, {rule.result.line.value} line, profile {profile}"
            ),
        )
    pool = org.supervised_pool
    profile = facts.default_profile or rules.defaults.profile
    return RoutingDecision(
        ticket_id=facts.ticket_id,
        category=facts.category,
        area_code=facts.area_code,
        rules_version=rules.version,
        rules_digest=rules.digest,
        rule_id=None,
        departments=(DepartmentRef.of(pool),),
        line=HandlingLine.SUPERVISED_POOL,
        handling=HandlingMode.ASSIGN,
        profile=profile,
        focus=False,
        supervised=True,
        excluded=excluded,
        explanation=tuple(traces),
        summary=f"no rule fired for {len(rules.rules)} rules tried; supervised pool {pool.name_zh}",
    )


class RoutingMemo:
    """Decisions of one rule set on one org chart, remembered by everything routing reads.

    Routing reads a ticket's category, area, channel, flags, repeat count and default profile,
    and its text only through the keyword conditions of the rules that could apply to its
    category: a decision is a function of those, so a ticket whose values and keyword hits were
    seen before gets the decision made then, with its own ticket id. A batch of a few hundred
    tickets holds a few dozen such keys. Build one per org revision and rule set (``OrgCache``
    does); decisions are routed without the explanation.
    """

    def __init__(self, rules: RuleSet, org: OrgChart, *, size: int = 4096) -> None:
        self.rules, self.org = rules, org
        self._size = size
        self._decisions: dict[tuple[object, ...], RoutingDecision] = {}
        self._keywords: dict[str, tuple[str, ...]] = {}

    def _keywords_for(self, category: str) -> tuple[str, ...]:
        """The keywords (normalised) of the rules whose category condition admits
        ``category``: the only ones routing may look for in its text."""
        found = self._keywords.get(category)
        if found is None:
            node = taxonomy.get(category)
            kept: dict[str, None] = {}
            for rule in self.rules.rules:
                match = rule.match
                if match.keywords is None:
                    continue
                if match.categories is not None and not any(
                    c in (node.code, node.parent) for c in match.categories
                ):
                    continue
                kept.update((_normalise(k), None) for k in match.keywords)
            found = self._keywords[category] = tuple(kept)
        return found

    def route(self, facts: TicketFacts, *, exclude: Collection[str] = ()) -> RoutingDecision:
        """``route(facts, rules, org, exclude=exclude, explain=False)``, from memory when a
        ticket with the same values and keyword hits was routed before."""
        key = self._key(
            facts.category,
            facts.area_code,
            facts.channel,
            facts.enterprise,
            facts.urgency,
            facts.repeat_count,
            facts.default_profile,
            facts.text,
            exclude,
        )
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(key, facts, exclude)
        if decision.ticket_id == facts.ticket_id:
            return decision
        return decision.model_copy(update={"ticket_id": facts.ticket_id})

    def route_values(self, values: Mapping[str, Any], *, with_id: bool = True) -> RoutingDecision:
        """``route(TicketFacts.model_validate(values))`` for a ticket's facts as their JSON
        values (``TicketFacts.model_dump(mode="json")``, its keys and no others): the model is
        validated (and refuses what it refuses) only when routing must run. A remembered key's
        values were valid when it was routed; the id and the text, outside the key, are checked
        to be text here. ``with_id=False`` gives a remembered decision as it is, its
        ``ticket_id`` the one it was made for: for a caller that never reads it (placing a
        fetch), without a copy of the decision per ticket."""
        ticket_id, text = values["ticket_id"], values["text"]
        if type(text) is not str or (ticket_id is not None and type(ticket_id) is not str):
            return self.route(TicketFacts.model_validate(values))
        key = self._key(
            values["category"],
            values["area_code"],
            values["channel"],
            values["enterprise"],
            values["urgency"],
            values["repeat_count"],
            values["default_profile"],
            text,
            (),
        )
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(key, TicketFacts.model_validate(values), ())
        if not with_id or decision.ticket_id == ticket_id:
            return decision
        return decision.model_copy(update={"ticket_id": ticket_id})

    def _key(
        self,
        category: str,
        area_code: str | None,
        channel: str,
        enterprise: bool,
        urgency: str,
        repeat_count: int,
        default_profile: str | None,
        text: str,
        exclude: Collection[str],
    ) -> tuple[object, ...]:
        """What a decision depends on: the values routing reads, the exclusions and the
        keywords of the category's rules that the text holds (normalised)."""
        keywords = self._keywords_for(category)
        hits: tuple[str, ...] = ()
        if keywords:
            # Not through ``_normalise``'s cache: each ticket's text is its own (hashing a
            # kilobyte and evicting a cached one for nothing); routing on a miss caches it.
            normal = _normalise.__wrapped__(text)
            hits = tuple(k for k in keywords if k in normal)
        return (
            category,
            area_code,
            channel,
            enterprise,
            urgency,
            repeat_count,
            default_profile,
            tuple(sorted(set(exclude))),
            hits,
        )

    def _decide(
        self, key: tuple[object, ...], facts: TicketFacts, exclude: Collection[str]
    ) -> RoutingDecision:
        """Route afresh and remember the decision under ``key``."""
        decision = route(facts, self.rules, self.org, exclude=exclude, explain=False)
        if len(self._decisions) >= self._size:
            self._decisions.clear()
        self._decisions[key] = decision
        return decision


# The channel of work nobody called about: evaluation's proposals (未诉先办).
PROACTIVE_CHANNEL = "proactive"


def route_for(
    facts: TicketFacts,
    rules: RuleSet,
    org: OrgChart,
    *,
    exclude: Collection[str] = (),
    explain: bool = True,
) -> RoutingDecision:
    """Route a ticket, or proposed work: that goes to the department that owns the category in
    the area (``rules.proactive_rules``) and stays on the proactive line even when nobody owns
    it there and the supervised pool must place it."""
    if facts.channel != PROACTIVE_CHANNEL:
        return route(facts, rules, org, exclude=exclude, explain=explain)
    decision = route(facts, proactive_rules(rules), org, exclude=exclude, explain=explain)
    return decision.model_copy(update={"line": HandlingLine.PROACTIVE})
