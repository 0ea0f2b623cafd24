"""Routing rules as data: a versioned rules file (``data/rules.yaml``, or one an operator
activates) whose rules say which tickets go to whom, on which line and clocks.

A rules file is validated whole against the taxonomy, the area tree, the org chart and the
time-limit profiles: one bad reference refuses the file (``RulesError``) and names the rule
and the field, so a typo can never half-load and silently misroute. The rule sets derived from
the active one (one line's rules, all but one line's, the proactive rule) serve failed
mediations and proposed work. ``routing.py`` applies a rule set to a ticket.
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

from services.dispatch.data import DATA_PACKAGE
from services.dispatch.deadlines.profiles import ProfileSet
from services.dispatch.organisation.chart import DepartmentFlag, OrgChart
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
    """Which line handles the ticket; supervised_pool only when no rule fired, proactive only
    for work evaluation proposes before anyone calls (未诉先办)."""

    NORMAL = "normal"
    TASK_FORCE = "task_force"
    JUDICIAL = "judicial"
    MEDIATION = "mediation"
    AID = "aid"
    SUPERVISED_POOL = "supervised_pool"
    PROACTIVE = "proactive"


class HandlingMode(StrEnum):
    """Assigned to named departments (派单), or offered to eligible ones to grab (抢单)."""

    ASSIGN = "assign"
    GRAB = "grab"


Urgency = Literal["normal", "urgent", "critical"]

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
        if v is HandlingLine.PROACTIVE:
            # Counted apart from appeals: only evaluation's proposals are proactive work.
            raise ValueError("the proactive line is for proposed work; a rule cannot pick it")
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
# Rule sets derived from the active one


def only_line(rules: RuleSet, line: HandlingLine) -> RuleSet:
    """The rules of one line, their conditions on the ticket dropped but for its area: for a
    ticket referred to that line (a failed mediation's referral is the reason, not its text)."""
    kept = tuple(
        r.model_copy(update={"match": Match(areas=r.match.areas)})
        for r in rules.rules
        if r.result.line is line
    )
    return rules.model_copy(update={"rules": kept})


def without_line(rules: RuleSet, line: HandlingLine) -> RuleSet:
    """The rules without those of one line (a failed mediation is not mediated again)."""
    kept = tuple(r for r in rules.rules if r.result.line is not line)
    return rules.model_copy(update={"rules": kept})


def proactive_rules(rules: RuleSet) -> RuleSet:
    """One rule for proposed work: the lowest-tier department responsible for the category in
    the area, on the proactive line, with the file's default profile."""
    rule = Rule(
        id="proactive",
        priority=0,
        description="未诉先办: the department that owns the category in the area",
        result=Result.model_construct(
            assign=LowestCapable(mode="lowest_capable"),
            line=HandlingLine.PROACTIVE,
            handling=HandlingMode.ASSIGN,
            profile=None,
            focus=False,
        ),
    )
    return rules.model_copy(update={"rules": (rule,)})
