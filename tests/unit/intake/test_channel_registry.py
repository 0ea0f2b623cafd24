"""The channel registry: 72 real channels, validated at load, handed out frozen."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from services.intake.channels import (
    FAMILIES,
    PAYLOAD_FORMATS,
    RegistryError,
    UnknownChannel,
    callback_channels,
    channels,
    get_channel,
    load_registry,
    time_limit_profile_for,
)

MINIMAL = """
channels:
  - code: hotline-12345-phone
    name_zh: 12345热线
    name_en: 12345 hotline
    family: phone
    payload_format: json
    time_limit_profile: standard
    mapping: {content: text}
"""


def test_seventy_two_appeal_channels_with_unique_codes() -> None:
    codes = [c.code for c in channels()]
    assert len(codes) == 72
    assert len(set(codes)) == 72


def test_the_brief_s_channels_are_all_there() -> None:
    codes = {c.code for c in channels()}
    for number in ("12315", "12369", "12333", "12329", "12319", "12358", "12366", "12320"):
        assert f"hotline-{number}" in codes
    for number in ("12348", "12338", "12355", "12351"):
        assert f"hotline-{number}" in codes
    for face in ("phone", "web", "app", "wechat", "miniprogram", "sms", "email"):
        assert f"hotline-12345-{face}" in codes
    for code in (
        "mayor-mailbox",
        "secretary-mailbox",
        "gov-service-platform",
        "internet-plus-supervision",
        "people-daily-leaders-board",
        "petition-letters",
        "petition-visits",
        "petition-online",
        "leaders-reception-day",
        "grid-worker-app",
        "snapshot-suishoupai",
        "village-talk-room",
        "mediation-room",
        "hotline-12345-enterprise",
        "media-exposure",
        "npc-deputy-proposal",
        "cppcc-proposal",
        "police-110-linkage",
    ):
        assert code in codes


def test_every_family_and_format_is_used() -> None:
    assert set(Counter(c.family for c in channels())) == set(FAMILIES)
    assert set(Counter(c.payload_format for c in channels())) == set(PAYLOAD_FORMATS)


def test_profiles_follow_the_channel_kind() -> None:
    by_code = {c.code: c for c in channels()}
    assert by_code["hotline-12345-enterprise"].time_limit_profile == "enterprise_2115"
    assert by_code["enterprise-service-platform"].is_enterprise_channel
    assert by_code["grid-whistle"].time_limit_profile == "whistle"
    assert by_code["center-whistle"].time_limit_profile == "whistle"
    assert by_code["police-110-linkage"].time_limit_profile == "urgent"
    assert by_code["hotline-12345-phone"].time_limit_profile == "standard"


def test_json_and_form_channels_have_mappings() -> None:
    assert any(c.payload_format in ("json", "form") for c in channels())
    for channel in channels():
        if channel.payload_format in ("json", "form"):
            assert channel.mapping is not None, channel.code
            assert channel.mapping.rule_for("content") is not None, channel.code
        if channel.payload_format == "email":
            assert channel.mapping is None


def test_channels_are_frozen_and_public_view_hides_the_mapping() -> None:
    channel = get_channel("hotline-12345-phone")
    with pytest.raises(dataclasses.FrozenInstanceError):
        channel.active = False  # type: ignore[misc]
    public = channel.public()
    assert public["code"] == "hotline-12345-phone"
    assert "mapping" not in public


def test_unknown_code_raises_a_key_error_naming_it() -> None:
    with pytest.raises(UnknownChannel) as caught:
        get_channel("hotline-99999")
    assert isinstance(caught.value, KeyError)
    assert "hotline-99999" in str(caught.value)


def test_the_callback_channel_is_separate() -> None:
    (callback,) = callback_channels()
    assert callback.kind == "callback"
    assert callback.code not in {c.code for c in channels()}
    assert get_channel(callback.code) is callback


def test_a_merged_line_is_kept_but_inactive() -> None:
    assert get_channel("hotline-12358").active is False
    assert sum(not c.active for c in channels()) == 1


def test_minimal_registry_loads() -> None:
    registry = load_registry(MINIMAL, appeal_count=1)
    assert registry.get("hotline-12345-phone").tz.key == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("family: phone", "family: telepathy"), "family"),
        (("payload_format: json", "payload_format: fax"), "payload_format"),
        (("time_limit_profile: standard", "time_limit_profile: eventually"), "time_limit_profile"),
        (("code: hotline-12345-phone", "code: Hotline_12345"), "slug"),
        (("mapping: {content: text}", "mapping: {colour: text}"), "colour"),
        (("mapping: {content: text}", "mapping: {title: text}"), "content"),
        (("    mapping: {content: text}\n", ""), "mapping"),
        (("name_zh: 12345热线", "name_zh: ''"), "name_zh"),
        (("family: phone", "family: phone\n    timezone: Mars/Olympus"), "timezone"),
        (("family: phone", "family: phone\n    colour: red"), "unknown keys"),
    ],
)
def test_malformed_registries_are_refused_with_the_reason(
    change: tuple[str, str], message: str
) -> None:
    text = MINIMAL.replace(*change)
    with pytest.raises(RegistryError, match=message):
        load_registry(text, appeal_count=1)


def test_duplicate_codes_and_wrong_counts_are_refused() -> None:
    twice = MINIMAL + MINIMAL.split("channels:\n", 1)[1]
    with pytest.raises(RegistryError, match="twice"):
        load_registry(twice, appeal_count=2)
    with pytest.raises(RegistryError, match="expected 72 appeal channels, found 1"):
        load_registry(MINIMAL)


@pytest.mark.parametrize(
    ("code", "enterprise", "urgency", "profile"),
    [
        ("hotline-12345-phone", False, "normal", "standard"),
        ("hotline-12345-phone", True, "normal", "enterprise_2115"),
        ("hotline-12345-phone", True, "critical", "urgent"),
        ("hotline-12345-enterprise", False, "normal", "enterprise_2115"),
        ("grid-whistle", True, "critical", "whistle"),
        ("police-110-linkage", False, "normal", "urgent"),
    ],
)
def test_time_limit_profile_for(code: str, enterprise: bool, urgency: str, profile: str) -> None:
    channel = get_channel(code)
    assert time_limit_profile_for(channel, is_enterprise=enterprise, urgency=urgency) == profile
