"""JSON, form, SMS and Open311 adapters and ``adapt``: payloads map, bad ones name the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from services.intake.adapters import (
    PayloadError,
    adapt,
    adapt_callback,
    parse_form,
    parse_json,
    parse_open311,
    parse_sms,
    parse_sms_delivery,
)
from services.intake.adapters.common import charset_of, labelled_address, labelled_phone
from services.intake.channels import get_channel

PHONE = get_channel("hotline-12345-phone")
MAYOR = get_channel("mayor-mailbox")
SMS = get_channel("hotline-12345-sms")
OPEN311 = get_channel("open311-public-api")
URBAN = get_channel("digital-urban-management")
CALLBACK = get_channel("callback-12345-revisit")


def phone_order(**changes: Any) -> dict[str, Any]:
    """A 12345 phone work order in the platform's own field names."""
    order: dict[str, Any] = {
        "workOrderNo": "GD1",
        "acceptTime": "2026-11-03 09:14:52",
        "appealTitle": "路灯不亮",
        "appealContent": "小区门口路灯坏了一周",
        "caller": {"name": "王建国", "phone": "13957123468"},
        "urgentLevel": "0",
    }
    order.update(changes)
    return order


# --- JSON ----------------------------------------------------------------------------------


def test_json_bytes_map_through_the_channel_mapping() -> None:
    draft = parse_json(json.dumps(phone_order()).encode(), PHONE)
    assert draft.channel_code == "hotline-12345-phone"
    assert draft.external_id == "GD1"
    assert draft.citizen_phone == "13957123468"
    assert draft.received_at == datetime(2026, 11, 3, 1, 14, 52, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (json.dumps(phone_order(urgentLevel="9")).encode(), "urgentLevel"),
        (json.dumps(phone_order(acceptTime="yesterday")).encode(), "acceptTime"),
        (json.dumps(phone_order(caller={"phone": "not a phone"})).encode(), "caller.phone"),
        (json.dumps(phone_order(appealContent="", appealTitle="")).encode(), "appealContent"),
        (json.dumps(phone_order(categoryCode="7777")).encode(), "categoryCode"),
        (json.dumps(phone_order(event={"lng": 120.1})).encode(), "event.lat"),
    ],
)
def test_bad_json_payloads_name_the_channel_field(body: bytes, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_json(body, PHONE)
    assert caught.value.field == field
    assert caught.value.as_dict()["field"] == field


def test_json_in_a_declared_legacy_charset() -> None:
    body = json.dumps(phone_order(appealTitle="燃气味很重"), ensure_ascii=False).encode("gb18030")
    assert parse_json(body, PHONE, charset="gb18030").title == "燃气味很重"


def test_wrong_adapter_for_a_channel_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="posts form"):
        parse_json(b"{}", MAYOR)


# --- form ----------------------------------------------------------------------------------


def mayor_letter(**changes: str) -> dict[str, str]:
    """A mayor's-mailbox web form submission."""
    form = {
        "xjbh": "SZ1",
        "zt": "加装电梯审批难",
        "xjnr": "老小区加装电梯要跑很多部门",
        "lxdh": "13588123456",
    }
    form.update(changes)
    return form


def test_form_body_is_decoded_and_mapped() -> None:
    draft = parse_form(urlencode(mayor_letter()).encode(), MAYOR)
    assert (draft.external_id, draft.title, draft.citizen_phone) == (
        "SZ1",
        "加装电梯审批难",
        "13588123456",
    )


def test_form_in_gb18030_needs_its_charset() -> None:
    body = urlencode(mayor_letter(), encoding="gb18030").encode()
    assert parse_form(body, MAYOR, charset="gb18030").title == "加装电梯审批难"
    with pytest.raises(PayloadError) as caught:
        parse_form(body, MAYOR)
    assert caught.value.field == "body"


def test_form_field_errors_name_the_form_field() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_form(urlencode(mayor_letter(xjsj="next tuesday")).encode(), MAYOR)
    assert caught.value.field == "xjsj"


def test_repeated_form_fields_become_lists_in_extra() -> None:
    body = urlencode([*mayor_letter().items(), ("tag", "a"), ("tag", "b")]).encode()
    assert parse_form(body, MAYOR).extra["tag"] == ["a", "b"]


# --- SMS -----------------------------------------------------------------------------------


def test_sms_text_becomes_an_appeal_from_its_sender() -> None:
    draft = parse_sms(
        "小区门口井盖丢了，很危险！地址：临江区文一路100号。请尽快处理",
        sender="+8613812345678",
        channel=SMS,
    )
    assert draft.citizen_phone == "+8613812345678"
    assert draft.title == "小区门口井盖丢了，很危险！"
    assert draft.address == "临江区文一路100号"
    assert draft.content.endswith("请尽快处理")


def test_sms_delivery_as_form_or_json() -> None:
    envelope = {
        "phone_number": "13812345678",
        "content": "路灯不亮",
        "send_time": "2025-12-19 06:12:33",
    }
    from_form = parse_sms_delivery(urlencode(envelope).encode(), SMS)
    from_json = parse_sms_delivery(
        json.dumps(envelope).encode(), SMS, content_type="application/json"
    )
    assert from_form == from_json
    assert from_form.received_at is not None and from_form.received_at.utcoffset() is not None


def test_sms_without_sender_names_the_sender_field() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_sms_delivery(json.dumps({"content": "路灯不亮"}).encode(), SMS)
    assert caught.value.field == "phone_number"


def test_empty_sms_names_the_text_field() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_sms("   ", sender="13812345678", channel=SMS)
    assert caught.value.field == "content"


# --- Open311 -------------------------------------------------------------------------------


def open311_request(**changes: Any) -> dict[str, Any]:
    """A GeoReport v2 POST /requests form."""
    fields: dict[str, Any] = {
        "service_code": "0102",
        "lat": "30.27",
        "long": "120.15",
        "description": "路灯不亮",
        "first_name": "三",
        "last_name": "张",
        "phone": "13812345678",
        "api_key": "k-123",
        "attribute[pole]": "LD-1",
        "attribute[tags][]": ["a", "b"],
    }
    fields.update(changes)
    return fields


def test_open311_request_maps_to_a_draft() -> None:
    draft = parse_open311(urlencode(open311_request(), doseq=True).encode(), OPEN311)
    assert draft.category_code == "0102"
    assert (draft.longitude, draft.latitude) == (120.15, 30.27)
    assert draft.citizen_name == "张三"
    assert draft.extra["attributes"] == {"pole": "LD-1", "tags": ["a", "b"]}
    assert "api_key" not in json.dumps(draft.extra)


def test_open311_json_body() -> None:
    body = {"service_code": "0304", "address_string": "延安路1号", "attributes": {"n": 2}}
    draft = parse_open311(json.dumps(body).encode(), OPEN311, content_type="application/json")
    assert draft.content == "停车与违停"  # no description: the service's name says what it is
    assert draft.extra["attributes"] == {"n": 2}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"service_code": ""}, "service_code"),
        ({"service_code": "ABC"}, "service_code"),
        ({"lat": "", "long": ""}, "lat"),
        ({"lat": "north"}, "lat"),
        ({"email": "not-an-email"}, "email"),
    ],
)
def test_bad_open311_requests_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_open311(urlencode(open311_request(**changes), doseq=True).encode(), OPEN311)
    assert caught.value.field == field


def test_open311_channel_can_take_its_external_id_from_an_attribute() -> None:
    body = urlencode(open311_request(**{"attribute[case_no]": "SZCG-1"}), doseq=True).encode()
    assert parse_open311(body, URBAN).external_id == "SZCG-1"


# --- dispatch and callbacks ----------------------------------------------------------------


def test_adapt_picks_the_adapter_from_the_registry() -> None:
    out = adapt(PHONE, json.dumps(phone_order()).encode(), content_type="application/json")
    assert not out.batch and out.errors == ()
    assert [d.external_id for d in out.drafts] == ["GD1"]
    sms = adapt(SMS, urlencode({"from": "13812345678", "text": "路灯不亮"}).encode())
    assert sms.drafts[0].citizen_phone == "13812345678"


def test_adapt_refuses_callback_channels_and_adapt_callback_maps_them() -> None:
    with pytest.raises(ValueError):
        adapt(CALLBACK, b"{}")
    body = {"gdbh": "20261103-0000871", "sfjj": "0", "myd": "3", "hfnr": "没解决"}
    callback = adapt_callback(CALLBACK, json.dumps(body).encode())
    assert (callback.resolved, callback.satisfaction) == (False, "dissatisfied")
    with pytest.raises(PayloadError) as caught:
        adapt_callback(CALLBACK, json.dumps({**body, "myd": "5"}).encode())
    assert caught.value.field == "myd"


# --- helpers -------------------------------------------------------------------------------


def test_charset_of() -> None:
    assert charset_of("application/x-www-form-urlencoded; charset=GBK") == "gbk"
    assert charset_of(None) == "utf-8"


def test_labelled_contact_details() -> None:
    assert labelled_phone("我是居民。联系电话：138-1234-5678。") == "13812345678"
    assert labelled_phone("订单号：12345678901234") is None
    assert labelled_address("事发地址：临江区文一路100号，请处理") == "临江区文一路100号"
