"""What departments type is scrubbed of personal data and control characters before dispatch
stores or publishes it; data files that would crash the parser or overflow a column are refused
naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.dispatch.data import DATA_PACKAGE
from services.dispatch.deadlines.profiles import default_profiles
from services.dispatch.organisation.chart import default_org
from services.dispatch.rules import RulesError, load_rules
from services.dispatch.schemas import (
    CompleteBody,
    ContactBody,
    DepartmentCreate,
    DepartmentUpdate,
    ExtensionBody,
    NoteBody,
    ReasonBody,
    RequiredNoteBody,
    TransferBody,
    WhistleBody,
    clean_free_text,
)
from shared.datafiles import packaged_text
from shared.workcalendar import CalendarError, load_overrides

ORG = default_org()
PROFILES = default_profiles()
TYPED = "居民电话13812345678，身份证330106199003072317，邮箱zhang@163.com\x00\x07\x7f\t\n"
CLEAN = "居民电话138****5678，身份证330106********2317，邮箱z***@163.com\t\n"

# Every request body with text someone types, and the field it is in.
FREE_TEXT: list[tuple[type[BaseModel], str, dict[str, Any]]] = [
    (NoteBody, "note", {}),
    (RequiredNoteBody, "note", {}),
    (ReasonBody, "reason", {}),
    (TransferBody, "reason", {"to_department": "CITY-ZF"}),
    (ExtensionBody, "reason", {"working_days": 1}),
    (ContactBody, "note", {}),
    (CompleteBody, "result", {}),
    (WhistleBody, "reason", {"summons": [{"department_code": "CITY-ZF"}]}),
]


@pytest.mark.parametrize(
    ("body", "field", "rest"), FREE_TEXT, ids=lambda v: getattr(v, "__name__", "")
)
def test_free_text_is_scrubbed_and_loses_control_characters(
    body: type[BaseModel], field: str, rest: dict[str, Any]
) -> None:
    parsed = body.model_validate({field: TYPED, **rest})
    assert getattr(parsed, field) == CLEAN


@pytest.mark.parametrize(
    ("body", "field", "rest"), FREE_TEXT, ids=lambda v: getattr(v, "__name__", "")
)
def test_a_text_of_control_characters_only_is_as_short_as_it_looks(
    body: type[BaseModel], field: str, rest: dict[str, Any]
) -> None:
    if body in (NoteBody, ContactBody):
        assert getattr(body.model_validate({field: "\x00\x01", **rest}), field) == ""
        return
    with pytest.raises(ValidationError, match=field):
        body.model_validate({field: "\x00\x01", **rest})


def test_a_mediated_summary_is_cleaned_the_same_way() -> None:
    assert clean_free_text(TYPED) == CLEAN


def test_department_names_lose_control_characters_but_are_not_scrubbed() -> None:
    unit = DepartmentCreate.model_validate(
        {
            "code": "CITY-X",
            "name_zh": "12345\x00热线办",
            "name_en": "Hotline\x1b office",
            "tier": "city",
            "jurisdiction": "339900",
        }
    )
    assert (unit.name_zh, unit.name_en) == ("12345热线办", "Hotline office")
    assert DepartmentUpdate.model_validate({"name_en": "A\x00"}).name_en == "A"
    with pytest.raises(ValidationError, match="name_zh"):
        DepartmentUpdate.model_validate({"name_zh": "\x00"})


@pytest.mark.parametrize("text", ["[" * 6000, "{a: " * 2000, "rules:\n" + "- " * 3000])
def test_a_file_nested_too_deeply_is_refused_naming_it(text: str) -> None:
    with pytest.raises(RulesError, match="nested too deeply"):
        load_rules(text, org=ORG, profiles=PROFILES)
    with pytest.raises(CalendarError, match="nested too deeply"):
        load_overrides(text)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ('"' + "v" * 65 + '"', "at most 64 characters"),
        ('"2026\\x00-r1"', "control characters"),
        ('"2026\\n-r1"', "control characters"),
        ('""', "at least 1 character"),
    ],
)
def test_a_rules_version_the_rule_sets_table_cannot_hold_is_refused(
    version: str, message: str
) -> None:
    text = packaged_text(DATA_PACKAGE, "rules.yaml").replace(
        'version: "2025.11-r1"', f"version: {version}"
    )
    with pytest.raises(RulesError) as refused:
        load_rules(text, org=ORG, profiles=PROFILES)
    (problem,) = refused.value.problems
    assert (problem.entry, problem.field) == (None, "version")
    assert message in problem.message
    longest = packaged_text(DATA_PACKAGE, "rules.yaml").replace("2025.11-r1", "v" * 64)
    assert load_rules(longest, org=ORG, profiles=PROFILES).version == "v" * 64
