"""Declarative routing: versioned rules (data, not code) decide who handles a ticket, and why.

Rules are tried in priority order; the first whose conditions all hold *and* that names at
least one eligible department fires. Nothing fires → the supervised pool (督着办). The
decision carries an explanation of every rule tried, for ``POST /routing/dry-run``.

A rules file is validated whole against the taxonomy, the area tree, the org chart and the
time-limit profiles: one bad reference refuses the file (``RulesError``) and names the rule
and the field, so a typo can never half-load and silently misroute.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Collection
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from services.dispatch.clocks import ProfileSet, UnknownProfile
from services.dispatch.data import DATA_PACKAGE
from services.dispatch.orgchart import Department, DepartmentFlag, OrgChart
from shared import taxonomy
from shared.datafiles import (
    DataFileError,
    Problem,
    entry_label,
    packaged_text,
    parse_yaml,
    problems_from_validation,
)
from shared.geo import Tier


class RulesError(DataFileError):
    """The rules file was refused as a whole."""

    kind = "routing rules"


class HandlingLine(StrEnum):
    """Which line handles the ticket; supervised_pool only when no rule fired."""

    NORMAL = "normal"
    TASK_FORCE = "task_force"
    JUDICIAL = "judicial"
    MEDIATION = "mediation"
    AID = "aid"
    SUPERVISED_POOL = "supervised_pool"


class HandlingMode(StrEnum):
    """Assigned to named departments (派单), or offered to eligible ones to grab (抢单)."""

    ASSIGN = "assign"
    GRAB = "grab"


Urgency = Literal["normal", "urgent", "critical"]


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
# The rules file's shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_empty(v: list[str] | None) -> list[str] | None:
    if v is not None and not v:
        raise ValueError("an empty list can never match; leave the condition out instead")
    if v is not None and any(not item.strip() for item in v):
        raise ValueError("blank entries are not allowed")
    return v


class Match(_Strict):
    """Conditions of a rule; all that are given must hold. No conditions matches every ticket."""

    categories: list[str] | None = None  # leaf, or top-level meaning any of its leaves
    areas: list[str] | None = None  # the ticket's area lies in one of these subtrees
    channels: list[str] | None = None
    enterprise: bool | None = None
    urgency: list[Urgency] | None = None
    repeat_count_at_least: int | None = Field(None, ge=1)
    keywords: list[str] | None = None  # any one of them in the ticket's text

    _lists = field_validator("categories", "areas", "channels", "keywords")(_non_empty)


class LowestCapable(_Strict):
    """The capable departments on the lowest tier that has any (小事不出村、大事不出镇)."""

    mode: Literal["lowest_capable"]
    min_tier: Tier | None = None  # e.g. district: matters too big for a town


class AllCapable(_Strict):
    """Every capable department covering the area, lowest tier first (for the grab pool)."""

    mode: Literal["capable"]
    min_tier: Tier | None = None


class ByFlag(_Strict):
    """The nearest department carrying a flag: judicial office, task force, aid, mediation."""

    mode: Literal["flag"]
    flag: DepartmentFlag
    min_tier: Tier | None = None


class Explicit(_Strict):
    """Named departments; a template code means its unit covering the ticket's area."""

    mode: Literal["explicit"]
    departments: list[str]

    _lists = field_validator("departments")(_non_empty)


Assign = Annotated[LowestCapable | AllCapable | ByFlag | Explicit, Field(discriminator="mode")]


class Result(_Strict):
    """What a fired rule decides."""

    assign: Assign
    line: HandlingLine = HandlingLine.NORMAL
    handling: HandlingMode = HandlingMode.ASSIGN
    profile: str | None = None  # None: the channel's default, else the file's default
    focus: bool = False  # 重点办 from the start

    @field_validator("line")
    @classmethod
    def _not_pool(cls, v: HandlingLine) -> HandlingLine:
        if v is HandlingLine.SUPERVISED_POOL:
            raise ValueError("the supervised pool is where no rule fires; a rule cannot pick it")
        return v


class Rule(_Strict):
    """One routing rule."""

    id: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    priority: int
    description: str = ""
    match: Match = Match()
    result: Result


class Defaults(_Strict):
    """File-wide defaults."""

    profile: str = "standard"


def _printable(v: str) -> str:
    if any(unicodedata.category(c) == "Cc" for c in v):
        raise ValueError("must not hold control characters")
    return v


class _RulesDocument(_Strict):
    # Stored in rule_sets.version (VARCHAR(64)), shown in the API and logs.
    version: Annotated[str, AfterValidator(_printable)] = Field(min_length=1, max_length=64)
    defaults: Defaults = Defaults()
    rules: list[Rule]


class RuleSet(BaseModel):
    """A validated rules file: rules in priority order, its version and a content digest."""

    model_config = ConfigDict(frozen=True)

    version: str
    digest: str
    defaults: Defaults
    rules: tuple[Rule, ...]
    # The profiles the file was checked against, so a channel's default can be checked too.
    profile_codes: frozenset[str]


# --------------------------------------------------------------------------------------------
# Loading and validation


def _check_references(
    doc: _RulesDocument,
    raw: Any,
    org: OrgChart,
    profiles: ProfileSet,
    known_channels: Collection[str] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    if doc.defaults.profile not in profiles.profiles:
        problems.append(
            Problem("defaults", "profile", f"unknown time-limit profile {doc.defaults.profile!r}")
        )
    seen_ids: dict[str, int] = {}
    seen_priorities: dict[int, str] = {}
    for index, rule in enumerate(doc.rules):
        label = entry_label(raw, "rules", index, "rule", "id")

        def bad(field: str, message: str, label: str = label) -> None:
            """Record a problem with this rule."""
            problems.append(Problem(label, field, message))

        if rule.id in seen_ids:
            bad("id", f"duplicate id (also rule #{seen_ids[rule.id] + 1})")
        seen_ids.setdefault(rule.id, index)
        if rule.priority in seen_priorities:
            # Equal priorities would leave the order to file position; say it explicitly instead.
            bad(
                "priority",
                f"{rule.priority} is also the priority of {seen_priorities[rule.priority]!r}",
            )
        seen_priorities.setdefault(rule.priority, rule.id)
        for i, code in enumerate(rule.match.categories or ()):
            if not taxonomy.is_known(code):
                bad(f"match.categories[{i}]", f"unknown category code {code!r}")
        for i, code in enumerate(rule.match.areas or ()):
            if code not in org.tree.by_code:
                bad(f"match.areas[{i}]", f"unknown area code {code!r}")
        if known_channels is not None:
            for i, code in enumerate(rule.match.channels or ()):
                if code not in known_channels:
                    bad(f"match.channels[{i}]", f"unknown channel {code!r}")
        assign = rule.result.assign
        if isinstance(assign, Explicit):
            for i, code in enumerate(assign.departments):
                if code not in org.departments and code not in org.templates:
                    bad(f"result.assign.departments[{i}]", f"unknown department code {code!r}")
        if isinstance(assign, ByFlag) and not any(
            d.has(assign.flag) for d in org.departments.values()
        ):
            bad("result.assign.flag", f"no department carries the flag {assign.flag.value!r}")
        if rule.result.profile is not None and rule.result.profile not in profiles.profiles:
            bad("result.profile", f"unknown time-limit profile {rule.result.profile!r}")
    return problems


def rules_from_document(
    raw: dict[str, Any],
    *,
    org: OrgChart,
    profiles: ProfileSet,
    known_channels: Collection[str] | None = None,
) -> RuleSet:
    """Validate a parsed rules document; refuse it whole, naming every rule and field at fault."""
    try:
        doc = _RulesDocument.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(
            problems_from_validation(exc, raw, section="rules", noun="rule", key="id")
        ) from None
    problems = _check_references(doc, raw, org, profiles, known_channels)
    if problems:
        raise RulesError(problems)
    canonical = json.dumps(doc.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return RuleSet(
        version=doc.version,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
        defaults=doc.defaults,
        rules=tuple(sorted(doc.rules, key=lambda r: r.priority)),
        profile_codes=frozenset(profiles.profiles),
    )


def load_rules(
    text: str | None = None,
    *,
    org: OrgChart,
    profiles: ProfileSet,
    known_channels: Collection[str] | None = None,
) -> RuleSet:
    """Load rules from YAML text (default: the packaged rules.yaml)."""
    raw = parse_yaml(
        packaged_text(DATA_PACKAGE, "rules.yaml") if text is None else text, RulesError
    )
    return rules_from_document(raw, org=org, profiles=profiles, known_channels=known_channels)


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


class RuleTrace(BaseModel):
    """How one rule fared: fired, did not match (and why), or matched but found nobody."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    priority: int
    outcome: Literal["fired", "not_matched", "no_department"]
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


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _checks(match: Match, facts: TicketFacts, org: OrgChart) -> list[ConditionCheck]:
    out: list[ConditionCheck] = []
    if match.categories is not None:
        category = taxonomy.get(facts.category)
        hit = next((c for c in match.categories if c in (category.code, category.parent)), None)
        if hit is None:
            detail = f"category {facts.category} is not in {match.categories}"
        elif hit == facts.category:
            detail = f"category {facts.category} is listed"
        else:
            detail = f"category {facts.category} is under {hit}"
        out.append(ConditionCheck(field="categories", passed=hit is not None, detail=detail))
    if match.areas is not None:
        if facts.area_code is None:
            out.append(ConditionCheck(field="areas", passed=False, detail="the ticket has no area"))
        else:
            inside = next((a for a in match.areas if org.tree.is_within(facts.area_code, a)), None)
            out.append(
                ConditionCheck(
                    field="areas",
                    passed=inside is not None,
                    detail=f"area {facts.area_code} "
                    + (f"lies in {inside}" if inside else f"lies outside {match.areas}"),
                )
            )
    if match.channels is not None:
        ok = facts.channel in match.channels
        out.append(
            ConditionCheck(
                field="channels",
                passed=ok,
                detail=f"channel {facts.channel!r} "
                + ("is" if ok else "is not")
                + f" in {match.channels}",
            )
        )
    if match.enterprise is not None:
        ok = facts.enterprise == match.enterprise
        out.append(
            ConditionCheck(
                field="enterprise",
                passed=ok,
                detail=f"enterprise is {facts.enterprise}, rule wants {match.enterprise}",
            )
        )
    if match.urgency is not None:
        ok = facts.urgency in match.urgency
        out.append(
            ConditionCheck(
                field="urgency",
                passed=ok,
                detail=f"urgency {facts.urgency!r} "
                + ("is" if ok else "is not")
                + f" in {match.urgency}",
            )
        )
    if match.repeat_count_at_least is not None:
        ok = facts.repeat_count >= match.repeat_count_at_least
        out.append(
            ConditionCheck(
                field="repeat_count_at_least",
                passed=ok,
                detail=f"repeat count {facts.repeat_count} "
                + (">=" if ok else "<")
                + f" {match.repeat_count_at_least}",
            )
        )
    if match.keywords is not None:
        text = _normalise(facts.text)
        found = [k for k in match.keywords if _normalise(k) in text]
        out.append(
            ConditionCheck(
                field="keywords",
                passed=bool(found),
                detail=f"text mentions {found}"
                if found
                else f"text mentions none of {match.keywords}",
            )
        )
    return out


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


def route(
    facts: TicketFacts,
    rules: RuleSet,
    org: OrgChart,
    *,
    exclude: Collection[str] = (),
) -> RoutingDecision:
    """Route a ticket: the first rule that matches and finds a department decides.

    ``exclude`` lists departments that must not get the ticket again (an approved return).
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
        checks = _checks(rule.match, facts, org)
        failed = [c for c in checks if not c.passed]
        if failed:
            traces.append(
                RuleTrace(
                    rule_id=rule.id,
                    priority=rule.priority,
                    outcome="not_matched",
                    checks=tuple(checks),
                    reason="; ".join(c.detail for c in failed),
                )
            )
            continue
        departments, how = _select(rule.result.assign, facts, org, excluded)
        if not departments:
            traces.append(
                RuleTrace(
                    rule_id=rule.id,
                    priority=rule.priority,
                    outcome="no_department",
                    checks=tuple(checks),
                    reason=how,
                )
            )
            continue
        matched = "; ".join(c.detail for c in checks) or "the rule has no conditions"
        traces.append(
            RuleTrace(
                rule_id=rule.id,
                priority=rule.priority,
                outcome="fired",
                checks=tuple(checks),
                reason=f"{matched}; {how}",
            )
        )
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
        summary=f"no rule fired for {len(traces)} rules tried; supervised pool {pool.name_zh}",
    )
