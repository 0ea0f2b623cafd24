"""PII: masking, identity hashes, and scrubbing numbers out of free text (property-tested)."""

from __future__ import annotations

import hmac
import re
from datetime import date

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from shared import pii
from shared.pii import (
    citizen_hash,
    hash_identifier,
    id_check_digit,
    is_valid_id_number,
    mask_email,
    mask_id_number,
    mask_name,
    mask_phone,
    normalize_id_number,
    normalize_phone,
    scrub_text,
    scrub_value,
)

SALT = "test-salt"
CJK = "我家住在小区门口路灯不亮请尽快处理联系电话身份证号码是的了，。！？：；、（）【】"
NO_DIGITS = st.text(alphabet=CJK + "abcXYZ @#*~_", max_size=30)
BOUNDARY = st.sampled_from(list("，。：；、电话号码是为（）【】 abc"))
ANY_TEXT = st.text(alphabet=CJK + "0123456789 -+()xX@.", max_size=60)

# "+86", "0086", "86", bracketed or not, then up to three of " .-/", with no digit before it
COUNTRY_BEFORE = re.compile(r"(?<![0-9])(?:\((?:\+|00)?86\)|(?:\+|00)?86)[ .\-/]{0,3}$")

mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
separators = st.sampled_from(["", " ", "-"])
area_codes = st.sampled_from(["010", "021", "022", "0571", "0574", "0755", "0931"])
locals_ = st.from_regex(r"[2-9][0-9]{6,7}", fullmatch=True)
# What people put between the groups of a phone number (3-4-4, area code and local number).
gaps = st.sampled_from(["", " ", "-", ".", "/", "  ", "   ", " - ", "--", " / ", ". ", "．", "／"])


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    """A valid 18-character resident ID number (region, birth date, sequence, check digit)."""
    region = draw(st.from_regex(r"[1-6][0-9]{5}", fullmatch=True))
    born = draw(st.dates(min_value=date(1930, 1, 1), max_value=date(2020, 12, 31)))
    sequence = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    first17 = f"{region}{born:%Y%m%d}{sequence}"
    return first17 + id_check_digit(first17)


def spaced(digits: str, groups: tuple[int, ...], sep: str) -> str:
    """``digits`` written in groups with a separator, the way people type numbers."""
    parts, start = [], 0
    for size in groups:
        parts.append(digits[start : start + size])
        start += size
    parts.append(digits[start:])
    return sep.join(p for p in parts if p)


# --- phones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("138 1234 5678", "13812345678"),
        ("+86 138-1234-5678", "13812345678"),
        ("(+86)13812345678", "13812345678"),
        ("0086 13812345678", "13812345678"),
        ("8613812345678", "13812345678"),
        ("0571-8765 4321 转 806", "057187654321"),
        ("（0571）87654321", "057187654321"),
        ("１３８１２３４５６７８", "13812345678"),
        ("", None),
    ],
)
def test_normalize_phone(raw: str, digits: str | None) -> None:
    assert normalize_phone(raw) == digits


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"(0086|86|\+86|00|0)?[0-9]{0,14}", fullmatch=True))
def test_bare_digits_normalize_as_the_same_number_written_with_spaces(raw: str) -> None:
    """A phone of bare ASCII digits takes a short cut; the same number with a separator in
    front (which the short cut does not take) must come out the same."""
    assert normalize_phone(raw) == normalize_phone(f" ({raw}")


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138 1234 5678", "138****5678"),
        ("0571-87654321", "0571****4321"),
        ("010-6234567", "010***4567"),
        ("87654321", "****4321"),
        ("138.1234.5678", "138****5678"),
        ("(138)1234-5678", "138****5678"),
        ("0086-138-1234-5678", "138****5678"),
        ("(0571)8765-4321", "0571****4321"),
        ("12345", "***45"),
        (None, None),
    ],
)
def test_mask_phone(raw: str | None, masked: str | None) -> None:
    assert mask_phone(raw) == masked


@given(mobiles, separators)
def test_masked_mobile_keeps_only_first_three_and_last_four(mobile: str, sep: str) -> None:
    masked = mask_phone(spaced(mobile, (3, 4), sep))
    assert masked == f"{mobile[:3]}****{mobile[-4:]}"


# --- ID numbers ----------------------------------------------------------------------------


@given(id_numbers())
def test_generated_ids_are_valid_and_a_wrong_check_digit_is_not(ident: str) -> None:
    assert is_valid_id_number(ident)
    wrong = "0" if ident[-1] != "0" else "1"
    assert not is_valid_id_number(ident[:-1] + wrong)


@given(id_numbers())
def test_mask_id_number_hides_the_birth_date(ident: str) -> None:
    masked = mask_id_number(ident)
    assert masked == ident[:6] + "*" * 8 + ident[-4:]
    assert ident[6:14] not in (masked or "")


def test_fifteen_digit_ids_are_upgraded_to_eighteen() -> None:
    upgraded = normalize_id_number("330106550430081")
    assert upgraded == "33010619550430081X"
    assert upgraded is not None and is_valid_id_number(upgraded)
    assert mask_id_number("330106550430081") == "330106******081"


def test_id_check_digit_needs_seventeen_digits() -> None:
    with pytest.raises(ValueError):
        id_check_digit("12345")


# --- names and e-mail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("欧阳娜娜", "欧***"),
        ("张", "张*"),
        (" 王女士 ", "王**"),
        ("", None),
        (None, None),
    ],
)
def test_mask_name(name: str | None, masked: str | None) -> None:
    assert mask_name(name) == masked


def test_mask_email() -> None:
    assert mask_email("zhangsan@163.com") == "z***@163.com"
    assert mask_email("nonsense") is None


# --- hashes --------------------------------------------------------------------------------


def test_citizen_hash_is_stable_across_ways_of_writing_the_number() -> None:
    forms = ["13812345678", "138 1234 5678", "+86-138-1234-5678", "１３８１２３４５６７８"]
    hashes = {citizen_hash(phone=form, salt=SALT) for form in forms}
    assert len(hashes) == 1
    assert re.fullmatch(r"[0-9a-f]{64}", hashes.pop() or "")


def test_citizen_hash_depends_on_the_salt_and_the_kind() -> None:
    phone = citizen_hash(phone="13812345678", salt=SALT)
    assert phone != citizen_hash(phone="13812345678", salt="other")
    assert hash_identifier("phone", "330106199003072317", salt=SALT) != hash_identifier(
        "id", "330106199003072317", salt=SALT
    )


@settings(max_examples=300)
@given(
    st.sampled_from(["phone", "id"]),
    st.text(max_size=40),
    st.text(min_size=1, max_size=100) | st.sampled_from(["s" * 64, "s" * 65, "盐" * 30]),
)
def test_identity_hash_is_the_hmac_of_kind_and_value(kind: str, value: str, salt: str) -> None:
    """Each hash is HMAC-SHA256 of ``kind:value`` alone, whatever was hashed before under the
    salt (keys longer than a block included), in a fresh key schedule and in a kept one."""
    expected = hmac.digest(salt.encode(), f"{kind}:{value}".encode(), "sha256").hex()
    assert hash_identifier(kind, value, salt=salt) == expected  # type: ignore[arg-type]
    assert hash_identifier(kind, value, salt=salt) == expected  # type: ignore[arg-type]


def test_citizen_hash_prefers_the_phone_then_the_id() -> None:
    by_id = citizen_hash(id_number="330106550430081", salt=SALT)
    assert by_id == citizen_hash(id_number="33010619550430081x", salt=SALT)
    assert by_id != citizen_hash(phone="13812345678", id_number="330106550430081", salt=SALT)
    assert citizen_hash(phone="110", salt=SALT) is None  # a service number identifies nobody
    assert citizen_hash(salt=SALT) is None


def test_citizen_hash_refuses_an_empty_salt() -> None:
    with pytest.raises(ValueError):
        citizen_hash(phone="13812345678", salt="")


# --- scrubbing free text -------------------------------------------------------------------

# Digits, full-width digits, every separator the patterns allow and a few that end a number.
NUMBERISH = st.text(alphabet="0123456789０１８９ .-/()（）－—–．／＋+@＠xX号楼a", max_size=80)


@settings(max_examples=1000)
@given(NUMBERISH)
@example("(138)   1234 5678")
@example("（0571）   8765 4321")
@example("+86   (139) - 1234 - 5678")
@example("０５７１－８７６５４３２１")
@example("0013811110012")
@example("(010)   2345678")
@example("a@b.cn")
def test_the_quick_probe_never_skips_text_a_pattern_would_mask(text: str) -> None:
    assert scrub_text(text) == pii._scrub_all(text)


WIDE_TEXT = st.text(alphabet=CJK + pii._WIDE_FORMS + "0123456789 -+()@.abc", max_size=80)


@settings(max_examples=1000)
@given(WIDE_TEXT)
@example("（0571）８７６５－４３２１ ＠ x．y")
def test_folding_by_search_equals_the_table(text: str) -> None:
    assert pii._half_width(text) == text.translate(pii._HALF_WIDTH)


@settings(max_examples=1000)
@given(st.one_of(NUMBERISH, ANY_TEXT, WIDE_TEXT.map(pii._half_width)))
@example("联系电话13812345678，(0571)8765-4321，+86 139-1234-5678，0013811110012")
@example("身份证330106199003072317或33010690030723x，邮箱 zhang.san@163.com")
@example("电话8613812345678或0086 13812345678")
def test_a_led_pattern_finds_what_it_finds_unled(text: str) -> None:
    """The look-ahead before each pattern (``_led``) asserts only what every match's first
    character is, so each finds exactly the matches it finds without it."""
    assert len(pii._UNLED) == 6
    for led, unled in pii._UNLED.items():
        assert [m.span() for m in led.finditer(text)] == [
            m.span() for m in re.finditer(unled, text)
        ], unled


def _general_mask(masker: object, span: str) -> str | None:
    """What a span's masker gives through the general normalizers (full-width folding,
    extensions, every kind of space), as it did before the maskers read spans directly."""
    if masker is pii._phone_mask:
        digits = normalize_phone(span)
        return pii._mask_digits(digits) if digits else None
    compact = pii._compact_id(span)
    if masker is pii._id18_mask:
        return mask_id_number(compact) if pii._plausible_birth_date(compact[6:14]) else None
    return mask_id_number(compact) if pii._plausible_birth_date("19" + compact[6:12]) else None


@settings(max_examples=1000)
@given(NUMBERISH)
@example("B1765100000-1-23-00001")
@example("330106199003072317 33010619900307231x 330106900307231")
@example("+86 138.1234.5678 (0086)13812345678 8613812345678 (0571)8765-4321")
@example("188000101012345678 210013310112345678")
def test_a_span_s_masker_equals_the_general_normalizers(text: str) -> None:
    probe = pii._half_width(text)
    for pattern, masker in pii._SCRUBBERS:
        if masker in (pii._id18_mask, pii._id15_mask, pii._phone_mask):
            for match in pattern.finditer(probe):
                assert masker(match.group()) == _general_mask(masker, match.group()), match


@settings(max_examples=300)
@given(NO_DIGITS, mobiles, separators, st.sampled_from([(3, 4), (4, 4), (3, 3, 3), ()]), NO_DIGITS)
def test_scrub_masks_any_mobile_in_text(
    before: str, mobile: str, sep: str, groups: tuple[int, ...], after: str
) -> None:
    text = before + spaced(mobile, groups, sep) + after
    scrubbed = scrub_text(text)
    assert mobile not in re.sub(r"\D", "", scrubbed)
    assert f"{mobile[:3]}****{mobile[-4:]}" in scrubbed
    assert scrubbed.startswith(before) and scrubbed.endswith(after)


@settings(max_examples=200)
@given(ANY_TEXT, BOUNDARY, mobiles, separators, BOUNDARY, ANY_TEXT)
def test_scrub_masks_a_mobile_next_to_other_numbers(
    before: str, left: str, mobile: str, sep: str, right: str, after: str
) -> None:
    # A country code written right before the number ("0086 ", "(+86)") is the number's own and
    # is masked with it: then ``left`` is part of the phone, not text beside it.
    assume(not COUNTRY_BEFORE.search(before + left))
    written = spaced(mobile, (3, 4), sep)
    scrubbed = scrub_text(before + left + written + right + after)
    assert written not in scrubbed
    assert f"{left}{mobile[:3]}****{mobile[-4:]}{right}" in scrubbed


@given(
    NO_DIGITS,
    st.sampled_from(["+86", "0086", "86", "(86)", "(+86)", "(0086)"]),
    st.sampled_from(["", " ", "-", " - ", ".", "/"]),
    mobiles,
)
def test_a_country_code_before_a_mobile_is_masked_with_it(
    head: str, country: str, gap: str, mobile: str
) -> None:
    scrubbed = scrub_text(head + country + gap + mobile)
    assert scrubbed == f"{head}{mobile[:3]}****{mobile[-4:]}"


@given(NO_DIGITS, mobiles, NO_DIGITS)
def test_scrub_handles_country_codes(before: str, mobile: str, after: str) -> None:
    for prefix in ("+86", "+86 ", "0086-", "86"):
        scrubbed = scrub_text(f"{before}{prefix}{mobile}{after}")
        assert mobile not in re.sub(r"\D", "", scrubbed)


@settings(max_examples=200)
@given(NO_DIGITS, id_numbers(), st.sampled_from(["", " ", "-"]), st.booleans(), NO_DIGITS)
def test_scrub_masks_any_id_number_in_text(
    before: str, ident: str, sep: str, lower_x: bool, after: str
) -> None:
    written = spaced(ident, (6, 8), sep)
    if lower_x:
        written = written.replace("X", "x")
    scrubbed = scrub_text(before + written + after)
    assert ident[6:14] not in re.sub(r"\D", "", scrubbed)
    assert f"{ident[:6]}********{ident[-4:]}" in scrubbed


@settings(max_examples=200)
@given(NO_DIGITS, area_codes, locals_, separators, st.booleans(), NO_DIGITS)
def test_scrub_masks_landlines_with_area_codes(
    before: str, area: str, local: str, sep: str, brackets: bool, after: str
) -> None:
    written = f"({area}){local}" if brackets else f"{area}{sep}{local}"
    scrubbed = scrub_text(before + written + after)
    # Not "local not in the digits left": 0755 + 7550000 leaves "0755***0000", digits 07550000.
    assert scrubbed == f"{before}{area}{'*' * (len(local) - 4)}{local[-4:]}{after}"


@settings(max_examples=300)
@given(
    NO_DIGITS,
    mobiles,
    gaps,
    gaps,
    st.booleans(),
    st.sampled_from(["", "+86", "+86 ", "0086-", "86 ", "(+86)", "（+86） ", "(0086) "]),
    NO_DIGITS,
)
def test_scrub_masks_mobiles_with_wider_gaps_and_brackets(
    before: str,
    mobile: str,
    gap1: str,
    gap2: str,
    bracketed: bool,
    prefix: str,
    after: str,
) -> None:
    head = f"（{mobile[:3]}）" if bracketed else mobile[:3]
    text = f"{before}{prefix}{head}{gap1}{mobile[3:7]}{gap2}{mobile[7:]}{after}"
    scrubbed = scrub_text(text)
    assert scrubbed == f"{before}{mobile[:3]}****{mobile[-4:]}{after}"


@settings(max_examples=200)
@given(NO_DIGITS, area_codes, locals_, gaps, gaps, st.booleans(), NO_DIGITS)
def test_scrub_masks_landlines_with_wider_gaps(
    before: str, area: str, local: str, gap1: str, gap2: str, brackets: bool, after: str
) -> None:
    head = f"({area})" if brackets else area
    split = len(local) - 4
    text = f"{before}{head}{gap1}{local[:split]}{gap2}{local[split:]}{after}"
    scrubbed = scrub_text(text)
    assert scrubbed == f"{before}{area}{'*' * split}{local[-4:]}{after}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("电话138.1234.5678，谢谢", "电话138****5678，谢谢"),
        ("电话(138)1234-5678，谢谢", "电话138****5678，谢谢"),
        ("电话（138）1234-5678，谢谢", "电话138****5678，谢谢"),
        ("电话138  1234  5678，谢谢", "电话138****5678，谢谢"),
        ("电话138 - 1234 - 5678，谢谢", "电话138****5678，谢谢"),
        ("电话138/1234/5678，谢谢", "电话138****5678，谢谢"),
        ("电话１３８．１２３４．５６７８，谢谢", "电话138****5678，谢谢"),
        ("电话+86 138 1234 5678，谢谢", "电话138****5678，谢谢"),
        ("电话+86 (138) 1234 5678，谢谢", "电话138****5678，谢谢"),
        ("电话(+86)138.1234.5678，谢谢", "电话138****5678，谢谢"),
        ("电话0086-138-1234-5678，谢谢", "电话138****5678，谢谢"),
        ("电话(0571)8765-4321，谢谢", "电话0571****4321，谢谢"),
        ("电话（0571）8765 4321，谢谢", "电话0571****4321，谢谢"),
        ("电话（区号0571）87654321", "电话（区号0571****4321"),
        ("电话0571.8765.4321，谢谢", "电话0571****4321，谢谢"),
        ("电话010 - 6234 - 5678，谢谢", "电话010****5678，谢谢"),
        ("电话0571-87654321 转 123", "电话0571****4321 转 123"),
        ("电话0571-87654321转123", "电话0571****4321转123"),
        # Brackets around the whole number are the sentence's: they stay.
        ("联系方式（13812345678）", "联系方式（138****5678）"),
        ("联系方式（057187654321）", "联系方式（0571****4321）"),
        ("联系方式(0571 87654321", "联系方式(0571****4321"),
    ],
)
def test_scrub_masks_the_ways_people_write_phone_numbers(text: str, expected: str) -> None:
    assert scrub_text(text) == expected
    assert scrub_text(expected) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("身份证330106199003072317", "身份证330106********2317"),
        ("身份证 330106 19900307 2317", "身份证 330106********2317"),
        (
            "身份证330106-19900307-231X，电话138.1234.5678",
            "身份证330106********231X，电话138****5678",
        ),
        ("身份证330106550430081", "身份证330106******081"),
    ],
)
def test_scrub_masks_id_numbers_as_id_numbers(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_scrub_handles_full_width_digits() -> None:
    assert scrub_text("电话：１３８１２３４５６７８。") == "电话：138****5678。"


def test_scrub_handles_a_full_width_at_sign() -> None:
    assert scrub_text("邮箱zhang＠qq.com，请回复") == "邮箱z***@qq.com，请回复"


@given(NO_DIGITS)
def test_text_without_numbers_or_addresses_is_unchanged(text: str) -> None:
    if "@" not in text:
        assert scrub_text(text) == text


@settings(max_examples=300)
@given(ANY_TEXT)
def test_scrub_is_idempotent(text: str) -> None:
    once = scrub_text(text)
    assert scrub_text(once) == once


@pytest.mark.parametrize(
    "text",
    [
        "2026年11月3日上午9点，3号楼2单元1201室",
        "花了1200元，拖欠工资共计42万元",
        "打12345热线，也打了110",
        "快递单号773012345678901还没到",  # 15 digits that are no ID (no real birth date)
        "订单号202405011234567890",  # 18 digits that are no ID
        "2026-11-03 09:14:52",
        "2026-11-29",
        "2026.11.29",
        "2026/11/29 13:58",
        "2026.11.29 13.58",
        "2026-11-29T13:58:07.123+08:00",
        "09:14:52",
        "13:00-14:00, 15:00-16:00",
        "13.00-14.00 15.00-16.00",
        "金额12,345.67元",
        "电费138.12元、水费1234.56元",
        "共计138 1234.56元",
        "1,380,000.00元",
        "工单号20261129-0000123",
        "工单号20261129-0000123-01",
        "3号楼2单元501室",
        "13幢2单元1501室",
        "1301/1302/1303室",
        "13-2-1501室",
        "订单号1381234567890",  # 13 contiguous digits: no phone inside
        "订单号 13812345678901234",
        "运单号SF1381234567890",
        "坐标120.1234567,30.1234567",
        "IP 139.16.100.200",
        "第13.14.15条",
        "(2026)浙0106民初1234号",
        "杭政办〔2026〕138号",
    ],
)
def test_scrub_leaves_ordinary_numbers_alone(text: str) -> None:
    assert scrub_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "来电人王先生（电话13957123468，身份证330106198503120415）反映楼道积水",
            "来电人王先生（电话139****3468，身份证330106********0415）反映楼道积水",
        ),
        ("请回电 0571-8765 4321 或 (010)62345678", "请回电 0571****4321 或 010****5678"),
        ("请回电0755 7550000", "请回电0755***0000"),
        ("联系我 zhang.san@163.com 谢谢", "联系我 z***@163.com 谢谢"),
        ("电话13812345678 3幢", "电话138****5678 3幢"),
    ],
)
def test_scrub_examples(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("工单号0013811110012", "工单号00138****0012"),  # a zero-padded field: still a phone
        ("编号0000000013811110012已受理", "编号00000000138****0012已受理"),
        ("来电0１３８１１１１００１２", "来电0138****0012"),
    ],
)
def test_scrub_masks_a_mobile_glued_to_zero_padding(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # Digits that carry meaning before a phone-shaped tail make an id, not a padded phone:
        # order and trade numbers, bank cards, tracking numbers, this city's ticket numbers.
        "订单号2026120413811110012",
        "卡号6222113811110012",
        "订单号1213811110012",
        "流水号00120261204138111100",
        "工单号20261204-0013811",
    ],
)
def test_scrub_leaves_long_ids_with_a_phone_shaped_tail_alone(text: str) -> None:
    assert scrub_text(text) == text


@given(NO_DIGITS, st.integers(min_value=1, max_value=8), mobiles, NO_DIGITS)
def test_scrub_masks_any_zero_padded_mobile(
    before: str, zeros: int, mobile: str, after: str
) -> None:
    scrubbed = scrub_text(f"{before}{'0' * zeros}{mobile}{after}")
    assert mobile not in scrubbed
    assert f"{'0' * zeros}{mobile[:3]}****{mobile[-4:]}" in scrubbed


def test_scrub_value_walks_nested_structures() -> None:
    value = {
        "gridman": {"name": "小吴", "phone": "13957100001"},
        "tags": ["13812345678", 3],
        "n": 1,
    }
    assert scrub_value(value) == {
        "gridman": {"name": "小吴", "phone": "139****0001"},
        "tags": ["138****5678", 3],
        "n": 1,
    }
