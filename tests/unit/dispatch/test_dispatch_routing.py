"""Routing: every handling line, lowest capable tier first, explanations, refused rule files."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.dispatch.deadlines.profiles import default_profiles
from services.dispatch.organisation.chart import default_org
from services.dispatch.routing import (
    PROACTIVE_CHANNEL,
    RoutingDecision,
    RoutingMemo,
    TicketFacts,
    route,
    route_for,
)
from services.dispatch.rules import (
    HandlingLine,
    HandlingMode,
    RulesError,
    RuleSet,
    load_rules,
    only_line,
    without_line,
)
from shared import taxonomy

ORG = default_org()
PROFILES = default_profiles()
RULES = load_rules(org=ORG, profiles=PROFILES)

GRID = "339902001001002"  # 越城区 北海街道 石兴社区 第2网格
VILLAGE, TOWN, DISTRICT = GRID[:12], GRID[:9], GRID[:6]
FENGQIAO_VILLAGE = "339921101201"  # a village of 枫桥镇, 枫溪县


def facts(**overrides: object) -> TicketFacts:
    base: dict[str, object] = {
        "ticket_id": "T-1",
        "category": "0204",
        "area_code": GRID,
        "channel": "hotline-12345-phone",
    }
    base.update(overrides)
    return TicketFacts.model_validate(base)


def decide(**overrides: object) -> RoutingDecision:
    return route(facts(**overrides), RULES, ORG)


def codes(decision: RoutingDecision) -> list[str]:
    return [d.code for d in decision.departments]


# ---- the packaged rules ---------------------------------------------------------------------


def test_packaged_rules_load_in_priority_order_with_a_stable_digest() -> None:
    priorities = [r.priority for r in RULES.rules]
    assert priorities == sorted(priorities)
    assert RULES.version == "2025.11-r1"
    assert load_rules(org=ORG, profiles=PROFILES).digest == RULES.digest
    assert len(RULES.digest) == 64


# ---- normal line, lowest capable tier first --------------------------------------------------


def test_normal_line_goes_to_the_grid_worker_when_the_grid_is_known() -> None:
    d = decide()
    assert codes(d) == [f"GRID-WG-{GRID}"]
    assert (d.line, d.handling, d.profile, d.rule_id) == (
        HandlingLine.NORMAL,
        HandlingMode.ASSIGN,
        "standard",
        "default-lowest-tier",
    )
    assert not d.supervised and not d.focus


@pytest.mark.parametrize(
    ("area", "expected"),
    [
        (VILLAGE, f"VIL-JW-{VILLAGE}"),
        (TOWN, f"TOWN-ZZ-{TOWN}"),
        (DISTRICT, f"DIST-ZF-{DISTRICT}"),
        (None, "CITY-ZF"),
    ],
)
def test_the_lowest_capable_tier_depends_on_how_much_of_the_area_is_known(
    area: str | None, expected: str
) -> None:
    assert codes(decide(area_code=area)) == [expected]


def test_matters_the_village_cannot_handle_go_to_the_town_not_higher() -> None:
    assert codes(decide(category="0107")) == [f"TOWN-ZZ-{TOWN}"]  # 物业管理
    assert codes(decide(category="0201")) == [f"DIST-HB-{DISTRICT}"]  # 大气污染


def test_min_tier_keeps_big_matters_at_the_district() -> None:
    d = decide(category="0109")  # 拆迁与征收: town-level units exist but the rule wants a district
    assert codes(d) == [f"DIST-ZJ-{DISTRICT}"]
    assert d.rule_id == "expropriation-district"


# ---- special lines --------------------------------------------------------------------------


def test_task_force_line_for_repeat_appeals_past_the_threshold() -> None:
    d = decide(repeat_count=2)
    assert d.line is HandlingLine.TASK_FORCE
    assert codes(d) == [f"DIST-ZB-{DISTRICT}"]
    assert d.focus


def test_below_the_threshold_a_repeat_appeal_is_routed_normally() -> None:
    d = decide(repeat_count=1)
    assert d.line is HandlingLine.NORMAL
    trace = next(t for t in d.explanation if t.rule_id == "repeat-task-force")
    assert trace.outcome == "not_matched"
    assert trace.reason == "repeat count 1 < 2"


def test_judicial_line_for_law_related_matters() -> None:
    d = decide(category="0805", text="开发商逾期交房，我们准备向法院起诉")
    assert d.line is HandlingLine.JUDICIAL
    assert codes(d) == [f"TOWN-SFS-{TOWN}"]
    fired = d.explanation[-1]
    assert fired.outcome == "fired"
    assert "法院" in fired.reason and "起诉" in fired.reason


def test_mediation_line_for_disputes_nearest_room_first() -> None:
    neighbours = decide(category="1301")
    assert neighbours.line is HandlingLine.MEDIATION
    assert neighbours.profile == "mediation"
    assert codes(neighbours) == [f"VIL-TW-{VILLAGE}"]  # 说事拉理室: 小事不出村
    contract = decide(category="1303")
    assert codes(contract) == [f"TOWN-TW-{TOWN}"]  # the village room does not take it: 大事不出镇


def test_aid_line_by_category_and_by_keywords() -> None:
    by_category = decide(category="1104")
    assert by_category.line is HandlingLine.AID
    assert codes(by_category) == [f"TOWN-SWB-{TOWN}"]
    by_words = decide(category="0503", text="老人独居，生活困难，养老金迟迟未到")
    assert by_words.line is HandlingLine.AID
    assert by_words.rule_id == "hardship-aid-keywords"


def test_urgent_tickets_get_the_urgent_profile() -> None:
    d = decide(category="0105", urgency="critical")
    assert d.profile == "urgent"
    assert d.rule_id == "urgent-safety"
    assert codes(d) == [f"DIST-ZJ-{DISTRICT}"]  # gas: no unit below the district handles it


def test_enterprise_appeals_run_on_2115() -> None:
    assert decide(category="0404", enterprise=True).profile == "enterprise_2115"
    assert decide(category="1403").profile == "enterprise_2115"


def test_grab_mode_offers_every_capable_department() -> None:
    d = decide(category="0102")
    assert d.handling is HandlingMode.GRAB
    assert codes(d) == [f"DIST-ZF-{DISTRICT}", "CITY-ZF"]
    outside = decide(category="0102", area_code="339903")
    assert outside.handling is HandlingMode.ASSIGN


def test_an_explicit_template_names_the_unit_for_the_area() -> None:
    d = decide(category="1304", area_code=FENGQIAO_VILLAGE)
    assert d.rule_id == "fengqiao-homestead"
    assert codes(d) == ["TOWN-TW-339921101"]
    elsewhere = decide(category="1304")
    assert elsewhere.rule_id == "disputes-mediation"
    assert codes(elsewhere) == [f"VIL-TW-{VILLAGE}"]


def test_packaged_rules_name_only_channels_intake_knows() -> None:
    intake = pytest.importorskip("services.intake.channels")
    known = {c.code for c in intake.channels()}
    assert load_rules(org=ORG, profiles=PROFILES, known_channels=known).digest == RULES.digest


def test_every_intake_channel_default_profile_exists() -> None:
    intake = pytest.importorskip("services.intake.channels")
    missing = {c.time_limit_profile for c in intake.channels()} - set(PROFILES.profiles)
    assert missing == set()


def test_channel_rules_match_on_the_channel() -> None:
    assert decide(channel="media-exposure").focus
    assert not decide(channel="hotline-12345-phone").focus


# ---- the supervised pool, exclusions, profiles --------------------------------------------


def test_no_rule_fires_and_the_ticket_goes_to_the_supervised_pool() -> None:
    d = decide(category="1901")
    assert d.supervised
    assert d.rule_id is None
    assert d.line is HandlingLine.SUPERVISED_POOL
    assert codes(d) == ["CITY-12345"]
    assert [t.rule_id for t in d.explanation] == [r.id for r in RULES.rules]
    assert d.explanation
    assert all(t.outcome == "not_matched" for t in d.explanation)
    assert "supervised pool" in d.summary


def test_an_excluded_department_is_skipped_on_re_routing() -> None:
    d = route(facts(), RULES, ORG, exclude={f"GRID-WG-{GRID}"})
    assert codes(d) == [f"VIL-JW-{VILLAGE}"]
    assert d.excluded == (f"GRID-WG-{GRID}",)


def test_when_every_capable_department_is_excluded_the_rule_finds_nobody() -> None:
    everyone = {d.code for d in ORG.capable_departments("0201", GRID)}
    d = route(facts(category="0201"), RULES, ORG, exclude=everyone)
    assert d.supervised
    last = d.explanation[-1]
    assert (last.rule_id, last.outcome) == ("default-lowest-tier", "no_department")
    assert "no department handles 0201" in last.reason


def test_profile_precedence_rule_then_channel_then_file_default() -> None:
    assert decide(default_profile="consultation").profile == "consultation"
    assert decide(category="1701", default_profile="standard").profile == "consultation"
    assert decide(category="1901", default_profile="urgent").profile == "urgent"


def test_the_explanation_lists_each_earlier_rule_and_why_it_did_not_fire() -> None:
    d = decide(category="1301")
    assert [t.rule_id for t in d.explanation][-1] == "disputes-mediation"
    earlier = d.explanation[:-1]
    assert [t.rule_id for t in earlier] == [
        "urgent-safety",
        "repeat-task-force",
        "law-judicial",
        "hardship-aid-category",
        "hardship-aid-keywords",
        "fengqiao-homestead",
    ]
    homestead = earlier[-1]
    assert {c.field: c.passed for c in homestead.checks} == {"categories": False, "areas": False}
    assert "category 1301 is not in ['1304']" in homestead.reason
    assert "lies outside ['339921101']" in homestead.reason
    assert "rule 'disputes-mediation' fired" in d.summary
    assert d.model_dump(mode="json")["explanation"][0]["outcome"] == "not_matched"


def test_unknown_codes_in_the_ticket_are_errors() -> None:
    with pytest.raises(KeyError, match="9999"):
        decide(category="9999")
    with pytest.raises(KeyError, match="339999"):
        decide(area_code="339999")
    with pytest.raises(KeyError, match="leisurely"):
        decide(default_profile="leisurely")


# ---- small rule files ---------------------------------------------------------------------


def rules(body: str, **kwargs: object) -> RuleSet:
    return load_rules('version: "t"\nrules:\n' + body, org=ORG, profiles=PROFILES, **kwargs)  # type: ignore[arg-type]


def test_priority_not_file_position_decides() -> None:
    rs = rules(
        """
  - id: late
    priority: 20
    result: {assign: {mode: explicit, departments: [CITY-ZF]}}
  - id: early
    priority: 10
    result: {assign: {mode: explicit, departments: [CITY-HB]}}
"""
    )
    d = route(facts(), rs, ORG)
    assert (d.rule_id, codes(d)) == ("early", ["CITY-HB"])


def test_keywords_ignore_width_and_case() -> None:
    rs = rules(
        """
  - id: lawyer
    priority: 1
    match: {keywords: [Lawyer]}
    result: {assign: {mode: flag, flag: judicial}, line: judicial}
"""
    )
    assert route(facts(text="我请了ＬＡＷＹＥＲ"), rs, ORG).line is HandlingLine.JUDICIAL


def test_an_explicit_unit_outside_the_ticket_area_is_not_used() -> None:
    rs = rules(
        """
  - id: keqiao-only
    priority: 1
    result: {assign: {mode: explicit, departments: [DIST-ZF-339903]}}
"""
    )
    d = route(facts(), rs, ORG)
    assert d.supervised
    assert d.explanation[0].outcome == "no_department"


def test_a_rule_without_conditions_matches_every_ticket() -> None:
    rs = rules("  - id: all\n    priority: 1\n    result: {assign: {mode: lowest_capable}}\n")
    d = route(facts(category="1901"), rs, ORG)
    assert d.rule_id == "all"
    assert "the rule has no conditions" in d.explanation[0].reason


# ---- refused rule files -------------------------------------------------------------------

GOOD = """
  - id: good
    priority: 1
    match: {categories: ["0204"]}
    result: {assign: {mode: lowest_capable}}
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '  - id: bad\n    priority: 2\n    match: {categories: ["0204", "9999"]}\n'
            "    result: {assign: {mode: lowest_capable}}\n",
            "rule 'bad' field match.categories[1]: unknown category code '9999'",
        ),
        (
            '  - id: bad\n    priority: 2\n    match: {areas: ["339999"]}\n'
            "    result: {assign: {mode: lowest_capable}}\n",
            "rule 'bad' field match.areas[0]: unknown area code '339999'",
        ),
        (
            "  - id: bad\n    priority: 2\n"
            "    result: {assign: {mode: explicit, departments: [CITY-ZF, CITY-NOPE]}}\n",
            "rule 'bad' field result.assign.departments[1]: unknown department code 'CITY-NOPE'",
        ),
        (
            "  - id: bad\n    priority: 2\n"
            "    result: {assign: {mode: lowest_capable}, profile: leisurely}\n",
            "rule 'bad' field result.profile: unknown time-limit profile 'leisurely'",
        ),
        (
            "  - id: bad\n    priority: 2\n    result: {assign: {mode: flag, flag: mayor}}\n",
            "rule 'bad' field result.assign.flag.flag: Input should be",
        ),
        (
            "  - id: bad\n    priority: 2\n    result: {assign: {mode: lottery}}\n",
            "rule 'bad' field result.assign: Input tag 'lottery' found using 'mode'",
        ),
        (
            "  - id: bad\n    priority: 2\n    match: {categoris: ['0204']}\n"
            "    result: {assign: {mode: lowest_capable}}\n",
            "rule 'bad' field match.categoris: Extra inputs are not permitted",
        ),
        (
            "  - id: bad\n    priority: 2\n    match: {keywords: []}\n"
            "    result: {assign: {mode: lowest_capable}}\n",
            "rule 'bad' field match.keywords: an empty list can never match",
        ),
        (
            "  - id: bad\n    priority: 2\n"
            "    result: {assign: {mode: lowest_capable}, line: supervised_pool}\n",
            "rule 'bad' field result.line: the supervised pool is where no rule fires",
        ),
        (
            "  - id: bad\n    priority: 2\n    match: {repeat_count_at_least: 0}\n"
            "    result: {assign: {mode: lowest_capable}}\n",
            "rule 'bad' field match.repeat_count_at_least: Input should be greater than or equal",
        ),
        (
            "  - id: Bad_Rule\n    priority: 2\n    result: {assign: {mode: lowest_capable}}\n",
            "rule 'Bad_Rule' field id: String should match pattern",
        ),
        (
            "  - id: good\n    priority: 2\n    result: {assign: {mode: lowest_capable}}\n",
            "rule 'good' field id: duplicate id (also rule #1)",
        ),
        (
            "  - id: other\n    priority: 1\n    result: {assign: {mode: lowest_capable}}\n",
            "rule 'other' field priority: 1 is also the priority of 'good'",
        ),
        (
            "  - id: bad\n    priority: 2\n    result: {line: normal}\n",
            "rule 'bad' field result.assign: Field required",
        ),
        (
            "  - priority: 2\n    result: {assign: {mode: lowest_capable}}\n",
            "rule #2 field id: Field required",
        ),
    ],
)
def test_bad_rule_files_are_refused_naming_the_rule_and_field(body: str, expected: str) -> None:
    with pytest.raises(RulesError) as caught:
        rules(GOOD + body)
    assert expected in str(caught.value)
    assert str(caught.value).startswith("routing rules refused: ")


def test_a_bad_default_profile_is_refused() -> None:
    text = 'version: "t"\ndefaults: {profile: nope}\nrules:\n' + GOOD
    with pytest.raises(RulesError, match="defaults field profile: unknown time-limit profile"):
        load_rules(text, org=ORG, profiles=PROFILES)


def test_a_file_that_does_not_parse_is_refused_with_its_line() -> None:
    with pytest.raises(RulesError, match="the file does not parse at line 4 column 7"):
        load_rules('version: "t"\nrules:\n  - id: [x\n  - id: y\n', org=ORG, profiles=PROFILES)
    with pytest.raises(RulesError, match="must hold a mapping at the top level"):
        load_rules("- just a list\n", org=ORG, profiles=PROFILES)


def test_a_missing_version_is_refused() -> None:
    with pytest.raises(RulesError, match="field version: Field required"):
        load_rules("rules:\n" + GOOD, org=ORG, profiles=PROFILES)


def test_unknown_channels_are_refused_when_the_registry_is_given() -> None:
    body = (
        "  - id: media\n    priority: 2\n    match: {channels: [media-exposure, fax]}\n"
        "    result: {assign: {mode: lowest_capable}}\n"
    )
    with pytest.raises(
        RulesError, match=r"rule 'media' field match.channels\[1\]: unknown channel"
    ):
        rules(GOOD + body, known_channels={"media-exposure"})
    assert rules(GOOD + body).rules[1].id == "media"  # without a registry, channels are not checked


def test_one_bad_rule_refuses_the_whole_file_and_all_problems_are_listed() -> None:
    body = (
        '  - id: bad-one\n    priority: 2\n    match: {categories: ["9999"]}\n'
        "    result: {assign: {mode: lowest_capable}}\n"
        "  - id: bad-two\n    priority: 3\n"
        "    result: {assign: {mode: lowest_capable}, profile: nope}\n"
    )
    with pytest.raises(RulesError) as caught:
        rules(GOOD + body)
    assert [(p.entry, p.field) for p in caught.value.problems] == [
        ("rule 'bad-one'", "match.categories[0]"),
        ("rule 'bad-two'", "result.profile"),
    ]


# ---- rule sets derived from the active one (failed mediations, proposed work) ----------------


def test_one_lines_rules_place_a_referred_ticket_whatever_its_text() -> None:
    judicial = only_line(RULES, HandlingLine.JUDICIAL)
    assert judicial.rules
    assert all(r.result.line is HandlingLine.JUDICIAL for r in judicial.rules)
    d = route(facts(category="1301", text="邻里纠纷"), judicial, ORG)
    assert d.line is HandlingLine.JUDICIAL and d.rule_id == "law-judicial"
    assert codes(d) == [f"TOWN-SFS-{TOWN}"]


def test_without_a_line_its_rules_never_fire() -> None:
    assert decide(category="1301").line is HandlingLine.MEDIATION
    rest = without_line(RULES, HandlingLine.MEDIATION)
    assert rest.rules
    assert all(r.result.line is not HandlingLine.MEDIATION for r in rest.rules)
    assert route(facts(category="1301"), rest, ORG).line is HandlingLine.SUPERVISED_POOL


def test_proposed_work_goes_to_the_owner_on_the_proactive_line() -> None:
    d = route_for(facts(ticket_id="P-1", channel=PROACTIVE_CHANNEL), RULES, ORG)
    assert d.line is HandlingLine.PROACTIVE and d.rule_id == "proactive"
    assert codes(d) == [f"GRID-WG-{GRID}"]
    assert decide().line is HandlingLine.NORMAL  # appeals are routed as before


def test_a_rules_file_cannot_pick_the_proactive_line() -> None:
    text = "version: x\nrules:\n  - id: p\n    priority: 1\n    result:\n"
    text += "      assign: {mode: lowest_capable}\n      line: proactive\n"
    with pytest.raises(RulesError, match="proactive line is for proposed work"):
        load_rules(text, org=ORG, profiles=PROFILES)


def _varied_facts() -> list[TicketFacts]:
    """Tickets that reach every packaged rule, the supervised pool and the grab pool: each
    category, on a grid, a village, a town and nowhere, with the flags and texts rules look at."""
    areas = [GRID, VILLAGE, TOWN, DISTRICT, FENGQIAO_VILLAGE, None]
    variants: list[dict[str, object]] = [
        {},
        {"urgency": "urgent"},
        {"repeat_count": 2},
        {"enterprise": True},
        {"channel": "media-exposure"},
        {"text": "邻居要去法院起诉"},
        {"text": "家里生活困难，看不起病"},
    ]
    return [
        facts(category=category.code, area_code=area, **variant)
        for category in taxonomy.leaves()
        for area in areas
        for variant in variants
    ]


def test_a_decision_without_its_explanation_is_the_same_decision() -> None:
    # Placing a batch routes without the explanation; who gets the ticket, on which line and
    # clocks, and the summary stored with the dispatch must not depend on it.
    for ticket in _varied_facts():
        explained = route(ticket, RULES, ORG)
        quick = route(ticket, RULES, ORG, explain=False)
        assert quick.explanation == ()
        assert quick == explained.model_copy(update={"explanation": ()}), ticket


_KEYWORDS = sorted({k for rule in RULES.rules for k in rule.match.keywords or ()})
_CHANNELS = sorted(
    {c for rule in RULES.rules for c in rule.match.channels or ()} | {"hotline-12345-phone"}
)
_FILLER = ["路灯不亮", "噪音扰民", "ＦＵＬＬ-width ", "法", "生活", "困 难", "\n", "院"]


@st.composite
def _memo_batch(draw: st.DrawFn) -> list[TicketFacts]:
    """A batch as a fetch brings it: one or two values of each field routing reads (category,
    area depth, a channel a rule names, flags, repeat count, profile) mixed ticket by ticket,
    with texts mixing the rules' keywords (some split or full-width) into filler — tickets
    often share all but their text and id, when the memo answers, and differ in one field."""

    def few(values: list[Any]) -> Any:
        return draw(st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True))

    fields = {
        "category": few([c.code for c in taxonomy.leaves()]),
        "area_code": few([GRID, VILLAGE, TOWN, DISTRICT, FENGQIAO_VILLAGE, None]),
        "channel": few(_CHANNELS),
        "enterprise": few([False, True]),
        "urgency": few(["normal", "urgent", "critical"]),
        "repeat_count": few([0, 1, 2, 3]),
        "default_profile": few([None, *sorted(RULES.profile_codes)]),
    }
    texts = st.lists(st.sampled_from(_KEYWORDS + _FILLER), max_size=5).map("".join)
    return [
        TicketFacts(
            ticket_id=f"T-{n}",
            text=draw(texts),
            **{name: draw(st.sampled_from(values)) for name, values in fields.items()},
        )
        for n in range(draw(st.integers(1, 40)))
    ]


@settings(max_examples=200, deadline=None)
@given(
    tickets=_memo_batch(),
    exclude=st.lists(st.sampled_from(sorted(ORG.departments)), max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_a_remembered_decision_is_the_decision_routing_makes(
    tickets: list[TicketFacts], exclude: list[str], order: object
) -> None:
    # A batch routes through a memo keyed on what routing reads (the text only through the
    # keywords): whatever the order and repetition, each answer must be what routing decides.
    memo = RoutingMemo(RULES, ORG)
    again = tickets + [t.model_copy(update={"ticket_id": f"{t.ticket_id}-b"}) for t in tickets]
    order.shuffle(again)  # type: ignore[attr-defined]
    for ticket in tickets + again:
        for excluded in ((), exclude):
            expected = route(ticket, RULES, ORG, exclude=excluded, explain=False)
            assert memo.route(ticket, exclude=excluded) == expected, ticket
    # A fetch routes the facts as the JSON values it stores, through the same memory.
    for ticket in again:
        expected = route(ticket, RULES, ORG, explain=False)
        assert memo.route_values(ticket.model_dump(mode="json")) == expected, ticket
        shared = memo.route_values(ticket.model_dump(mode="json"), with_id=False)
        assert shared.model_copy(update={"ticket_id": ticket.ticket_id}) == expected, ticket


@pytest.mark.parametrize(
    "bad", [{"repeat_count": -1}, {"urgency": "whenever"}, {"text": None}, {"ticket_id": 7}]
)
def test_facts_routed_as_values_are_refused_as_the_model_refuses_them(
    bad: dict[str, Any],
) -> None:
    # Values are validated whenever routing must run: what the model refuses is refused every
    # time, never remembered, and the valid values beside it route as before.
    memo = RoutingMemo(RULES, ORG)
    good = TicketFacts(ticket_id="T-1", category="0204", area_code=GRID, channel="hotline-12345")
    values = {**good.model_dump(mode="json"), **bad}
    for _ in range(2):
        with pytest.raises(ValidationError):
            memo.route_values(values)
    assert memo.route_values(good.model_dump(mode="json")) == route(good, RULES, ORG, explain=False)
