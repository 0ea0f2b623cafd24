"""Open311 GeoReport v2: discovery, services, service definitions, posting and reading requests,
in JSON and XML, with the spec's error shape naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import orjson

from shared import taxonomy
from shared.events import dispatch as d
from tests.integration.intake.support import IntakeEnv
from tests.support import wait_until


async def test_discovery_points_at_the_v2_endpoint(env: IntakeEnv) -> None:
    found = (await env.client.get("/open311/discovery.json")).json()
    (endpoint,) = found["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith("/open311/v2/")
    assert set(endpoint["formats"]) == {"application/json", "text/xml"}
    # A changeset is when the document last changed: never a time still to come.
    for changeset in (found["changeset"], endpoint["changeset"]):
        assert datetime.fromisoformat(changeset) <= datetime.now(UTC)
    xml = await env.client.get("/open311/discovery.xml")
    assert xml.headers["content-type"].startswith("text/xml")
    assert ET.fromstring(xml.content).find("endpoints/endpoint/specification") is not None


async def test_services_are_the_taxonomy_leaves(env: IntakeEnv) -> None:
    services = (await env.client.get("/open311/v2/services.json")).json()
    assert [s["service_code"] for s in services] == [c.code for c in taxonomy.leaves()]
    lamp = next(s for s in services if s["service_code"] == "0102")
    assert set(lamp) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert lamp["metadata"] is False and lamp["type"] == "realtime"
    xml = ET.fromstring((await env.client.get("/open311/v2/services.xml")).content)
    assert xml.tag == "services" and len(xml.findall("service")) == len(services)

    definition = (await env.client.get("/open311/v2/services/0102.json")).json()
    assert definition == {"service_code": "0102", "attributes": []}
    missing = await env.client.get("/open311/v2/services/9999.json")
    assert missing.status_code == 404
    assert missing.json() == [
        {
            "code": 404,
            "description": "service_code: unknown service code '9999'",
            "field": "service_code",
        }
    ]
    bad_format = await env.client.get("/open311/v2/services.yaml")
    assert bad_format.status_code == 404 and bad_format.json()[0]["field"] == "format"


async def test_post_a_request_form_encoded_and_as_json_then_read_it(env: IntakeEnv) -> None:
    address = env.address()
    form = await env.client.post(
        "/open311/v2/requests.json",
        data={
            "service_code": "0204",
            "lat": "29.9",
            "long": "120.6",
            "address_string": address,
            "description": f"垃圾桶满了三天没人清运，联系我13912345678 {env.unique()}",
            "first_name": "小明",
            "last_name": "王",
            "phone": env.phone(),
            "api_key": "not-stored",
            "attribute[bin_id]": "B-17",
        },
    )
    as_json = await env.client.post(
        "/open311/v2/requests.xml",
        content=orjson.dumps(
            {"service_code": "0102", "address_string": env.address(), "description": "路灯"}
        ),
        headers={"content-type": "application/json"},
    )
    assert form.status_code == 201, form.text
    ((posted,),) = [form.json()]
    assert set(posted) == {"service_request_id", "service_notice", "account_id"}
    assert as_json.status_code == 201
    assert ET.fromstring(as_json.content).find("request/service_request_id") is not None

    request_id = posted["service_request_id"]
    (one,) = (await env.client.get(f"/open311/v2/requests/{request_id}.json")).json()
    assert one["service_request_id"] == request_id and one["status"] == "open"
    assert one["service_code"] == "0204" and one["address"] == address
    assert (one["lat"], one["long"]) == (29.9, 120.6)
    assert "13912345678" not in one["description"] and "139****5678" in one["description"]
    assert one["requested_datetime"].endswith("+08:00")
    stored = await env.ticket(request_id)
    assert stored.citizen_name == "王小明" and "api_key" not in stored.extra

    xml = await env.client.get(f"/open311/v2/requests/{request_id}.xml")
    assert ET.fromstring(xml.content).findtext("request/status") == "open"

    listed = (
        await env.client.get(
            "/open311/v2/requests.json", params={"service_code": "0204", "status": "open"}
        )
    ).json()
    assert request_id in {r["service_request_id"] for r in listed}
    closed = (await env.client.get("/open311/v2/requests.json", params={"status": "closed"})).json()
    assert request_id not in {r["service_request_id"] for r in closed}
    by_id = (
        await env.client.get(
            "/open311/v2/requests.json", params={"service_request_id": f"{request_id},nope"}
        )
    ).json()
    assert [r["service_request_id"] for r in by_id] == [request_id]


async def test_bad_requests_answer_in_the_spec_shape_naming_the_field(env: IntakeEnv) -> None:
    no_code = await env.client.post(
        "/open311/v2/requests.json", data={"lat": "29.9", "long": "120.6", "description": "x"}
    )
    unknown = await env.client.post(
        "/open311/v2/requests.xml", data={"service_code": "9999", "address_string": "某地"}
    )
    no_place = await env.client.post(
        "/open311/v2/requests.json", data={"service_code": "0102", "description": "x"}
    )
    bad_status = await env.client.get("/open311/v2/requests.json", params={"status": "pending"})
    bad_date = await env.client.get("/open311/v2/requests.json", params={"start_date": "soon"})
    assert no_code.status_code == 400 and no_code.json()[0]["field"] == "service_code"
    assert unknown.status_code == 400
    assert ET.fromstring(unknown.content).findtext("error/code") == "400"
    assert no_place.status_code == 400 and no_place.json()[0]["field"] == "lat"
    assert bad_status.status_code == 400 and bad_status.json()[0]["field"] == "status"
    assert bad_date.status_code == 400 and bad_date.json()[0]["field"] == "start_date"


async def test_other_channels_tickets_are_not_public(env: IntakeEnv) -> None:
    hotline = await env.client.post(
        "/tickets", json={"title": "信访", "content": "不宜公开的内容", "external_id": env.unique()}
    )
    ticket_id = hotline.json()["ticket_id"]
    one = await env.client.get(f"/open311/v2/requests/{ticket_id}.json")
    listed = await env.client.get(
        "/open311/v2/requests.json", params={"service_request_id": ticket_id}
    )
    assert one.status_code == 404 and one.json()[0]["field"] == "service_request_id"
    assert listed.json() == []


async def test_a_service_group_is_no_service(env: IntakeEnv) -> None:
    group = taxonomy.top_levels()[0].code
    definition = await env.client.get(f"/open311/v2/services/{group}.json")
    definition_xml = await env.client.get(f"/open311/v2/services/{group}.xml")
    posted = await env.client.post(
        "/open311/v2/requests.json",
        data={"service_code": group, "address_string": env.address(), "description": "x"},
    )
    assert definition.status_code == 404
    ((error,),) = [definition.json()]
    assert error["field"] == "service_code" and "not a service" in error["description"]
    assert definition_xml.status_code == 404
    assert ET.fromstring(definition_xml.content).findtext("error/field") == "service_code"
    assert posted.status_code == 400 and posted.json()[0]["field"] == "service_code"


async def test_a_location_is_a_point_or_an_address_we_can_place(env: IntakeEnv) -> None:
    blank = await env.client.post(
        "/open311/v2/requests.json",
        data={"service_code": "0102", "address_string": "   ", "description": "x"},
    )
    id_alone = await env.client.post(
        "/open311/v2/requests.json",
        data={"service_code": "0102", "address_id": "A-17", "description": "x"},
    )
    assert blank.status_code == 400 and blank.json()[0]["field"] == "lat"
    assert id_alone.status_code == 400
    ((error,),) = [id_alone.json()]
    assert error["field"] == "address_id" and "cannot be resolved" in error["description"]

    with_address = await env.client.post(
        "/open311/v2/requests.json",
        data={
            "service_code": "0102",
            "address_string": env.address(),
            "address_id": "A-17",
            "description": f"路灯不亮 {env.unique()}",
        },
    )
    assert with_address.status_code == 201, with_address.text
    request_id = with_address.json()[0]["service_request_id"]
    (one,) = (await env.client.get(f"/open311/v2/requests/{request_id}.json")).json()
    assert one["address_id"] == "A-17" and one["address"]
    assert (await env.ticket(request_id)).extra["address_id"] == "A-17"


async def test_media_url_is_a_web_address_published_scrubbed(env: IntakeEnv) -> None:
    base = {"service_code": "0204", "address_string": env.address(), "description": "垃圾"}
    for url in ("javascript:alert(1)", "ftp://files.example.cn/p.jpg"):
        refused = await env.client.post(
            "/open311/v2/requests.json", data={**base, "media_url": url}
        )
        assert refused.status_code == 400 and refused.json()[0]["field"] == "media_url"

    phone = env.phone()
    url = f"https://ssp.example.cn/p/1.jpg?tel={phone}"
    posted = await env.client.post(
        "/open311/v2/requests.json",
        data={**base, "description": f"垃圾 {env.unique()}", "media_url": url},
    )
    assert posted.status_code == 201, posted.text
    request_id = posted.json()[0]["service_request_id"]
    (one,) = (await env.client.get(f"/open311/v2/requests/{request_id}.json")).json()
    assert phone not in one["media_url"]
    assert one["media_url"].startswith("https://ssp.example.cn/p/1.jpg?tel=139****")


async def test_status_notes_are_a_public_phrase_not_the_departments_notes(env: IntakeEnv) -> None:
    posted = await env.client.post(
        "/open311/v2/requests.json",
        data={
            "service_code": "0102",
            "address_string": env.address(),
            "description": f"路灯坏了 {env.unique()}",
        },
    )
    request_id = posted.json()[0]["service_request_id"]
    (fresh,) = (await env.client.get(f"/open311/v2/requests/{request_id}.json")).json()
    assert fresh["status_notes"] == "已受理"

    dispatch_id = f"D-{request_id}"
    note = "张卫国师傅明早带梯子上门更换灯泡"
    await env.publish(
        d.TicketAssigned(
            ticket_id=request_id,
            dispatch_id=dispatch_id,
            department_code="city-lighting",
            department_tier="district",
            category_code="0102",
            channel="open311-public-api",
        ),
        d.DispatchSigned(
            ticket_id=request_id, dispatch_id=dispatch_id, department_code="city-lighting"
        ),
        d.ProgressNoted(
            ticket_id=request_id,
            dispatch_id=dispatch_id,
            department_code="city-lighting",
            note=note,
        ),
    )

    async def noted() -> bool:
        view = (await env.client.get(f"/tickets/{request_id}")).json()
        return any(note in (h["note"] or "") for h in view["history"])

    await wait_until(noted, timeout=20, what=f"{request_id}'s progress note")
    one = await env.client.get(f"/open311/v2/requests/{request_id}.json")
    assert one.json()[0]["status_notes"] == "处理中"
    assert "张卫国" not in one.text
    xml = await env.client.get(f"/open311/v2/requests/{request_id}.xml")
    assert ET.fromstring(xml.content).findtext("request/status_notes") == "处理中"
