"""What callers type reaches the database and the bus only in a form both can hold: path and query
parameters that cannot name anything answer 4xx (never a 500 from PostgreSQL refusing a NUL),
free text is scrubbed of personal data and control characters before it is stored or published,
and a rules file nested deeply enough to exhaust the parser is refused like any other bad file."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from services.dispatch.models import DepartmentRow, DispatchAction
from shared.events.dispatch import ReturnRequested
from tests.integration.dispatch.support import CENTRE, DispatchEnv, dept

pytestmark = pytest.mark.timeout(60)

NUL = "a\x00b"
LONG = "x" * 5000


@pytest.fixture(autouse=True)
def _tickets_through_the_handler(env: DispatchEnv) -> None:
    env.bus = False


# ---- path and query parameters ---------------------------------------------------------------

_GETS: list[tuple[str, dict[str, str]]] = [
    ("/dispatches/{v}", {}),
    ("/tickets/{v}/dispatches", {}),
    ("/tickets/{v}/whistles", {}),
    ("/whistles/{v}", {}),
    ("/departments/{v}", {}),
    ("/departments/{v}/history", {}),
    ("/departments", {"q": "{v}"}),
    ("/departments", {"tier": "{v}"}),
    ("/departments", {"flag": "{v}"}),
    ("/departments", {"within": "{v}"}),
    ("/areas", {"parent": "{v}"}),
    ("/areas", {"tier": "{v}"}),
    ("/inbox", {"line": "{v}"}),
    ("/inbox", {"mode": "{v}"}),
    ("/inbox", {"ticket_id": "{v}"}),
    ("/inbox", {"department": "{v}"}),
    ("/grab-pool", {"department": "{v}"}),
    ("/escalations", {"target": "{v}"}),
]
_POSTS = [
    "/dispatches/{v}/sign-for",
    "/dispatches/{v}/focus",
    "/departments/{v}/deactivate",
]


@pytest.mark.parametrize("value", [NUL, LONG], ids=["nul", "long"])
@pytest.mark.parametrize(("path", "params"), _GETS)
async def test_a_parameter_that_cannot_name_anything_is_a_4xx(
    env: DispatchEnv, path: str, params: dict[str, str], value: str
) -> None:
    response = await env.client.get(
        path.format(v=quote(value)), params={k: v.format(v=value) for k, v in params.items()}
    )
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("value", [NUL, LONG], ids=["nul", "long"])
@pytest.mark.parametrize("path", _POSTS)
async def test_an_action_on_an_id_that_cannot_exist_is_a_4xx(
    env: DispatchEnv, path: str, value: str
) -> None:
    response = await env.client.post(path.format(v=quote(value)), json=None)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("value", [NUL, LONG], ids=["nul", "long"])
async def test_a_whistle_on_a_ticket_that_cannot_exist_is_a_4xx(
    env: DispatchEnv, value: str
) -> None:
    body = {"reason": "需要会商", "summons": [{"department_code": "CITY-ZF"}]}
    response = await env.client.post(f"/tickets/{quote(value)}/whistle", json=body, headers=CENTRE)
    assert 400 <= response.status_code < 500, response.text


# ---- free text -----------------------------------------------------------------------------


async def test_free_text_is_scrubbed_and_cleaned_before_it_is_stored_or_published(
    env: DispatchEnv,
) -> None:
    grid = env.place()
    ticket = await env.ticket(category="0204", grid=grid)
    d = await env.one(ticket)
    did, me = d["dispatch_id"], f"GRID-WG-{grid}"
    await env.act(did, "sign-for", dept(me), {"note": "收到，居民电话 138 1234 5678\x00"})
    asked = await env.act(
        did,
        "return",
        dept(me),
        {"reason": "非本单位职责，联系人13812345678，身份证330106199003072317"},
    )
    assert asked["dispatch"]["status"] == "return_requested"
    (requested,) = [e for e in await env.events(ticket) if isinstance(e, ReturnRequested)]
    assert "13812345678" not in requested.reason and "138****5678" in requested.reason
    assert "330106199003072317" not in requested.reason
    assert "330106********2317" in requested.reason
    async with env.runtime.sessions() as session:
        notes = list(
            (
                await session.execute(
                    select(DispatchAction.note)  # type: ignore[call-overload]
                    .where(DispatchAction.dispatch_id == did)
                    .order_by(DispatchAction.id)  # type: ignore[arg-type]
                )
            ).scalars()
        )
    assert notes[1] == "收到，居民电话 138****5678"  # no NUL, which PostgreSQL would refuse
    assert "13812345678" not in notes[2]
    # A text that is only control characters is as empty as it looks.
    empty = await env.act(did, "return/deny", CENTRE, {"note": "\x00"})
    assert empty["dispatch"]["status"] == "signed"
    short = await env.act(did, "complete", dept(me), {"result": "\x00\x01\x02"}, expect=422)
    assert "result" in short["detail"]


async def test_department_names_lose_their_control_characters(env: DispatchEnv) -> None:
    body: dict[str, Any] = {
        "code": "TEST-CTRL-NAME",
        "name_zh": "测试\x00单位",
        "name_en": "Test\x07 unit",
        "tier": "district",
        "jurisdiction": "339902",
        "responsibilities": ["0204"],
    }
    created = await env.client.post("/departments", json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["name_zh"], created.json()["name_en"]) == ("测试单位", "Test unit")
    renamed = await env.client.patch("/departments/TEST-CTRL-NAME", json={"name_en": "\x00"})
    assert renamed.status_code == 422, renamed.text
    async with env.runtime.sessions() as session:
        row = await session.get(DepartmentRow, "TEST-CTRL-NAME")
        assert row is not None and row.name_en == "Test unit"


# ---- rules files -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[" * 6000, "{a: " * 2000], ids=["lists", "mappings"])
async def test_a_rules_file_nested_too_deeply_is_refused_not_a_500(
    env: DispatchEnv, text: str
) -> None:
    facts = {"category": "0204", "channel": "hotline-12345-phone", "rules_text": text}
    dry = await env.client.post("/routing/dry-run", json=facts)
    assert dry.status_code == 422, dry.text
    assert "nested too deeply" in dry.json()["detail"]
    put = await env.client.put(
        "/routing/rules", content=text, headers={"content-type": "application/yaml"}
    )
    assert put.status_code == 422, put.text
    assert "nested too deeply" in put.json()["detail"]


@pytest.mark.parametrize(
    ("version", "message"),
    [("v" * 65, "at most 64 characters"), ("2026\x00-r1", "control characters")],
    ids=["long", "nul"],
)
async def test_a_rules_version_that_rule_sets_cannot_hold_is_refused(
    env: DispatchEnv, version: str, message: str
) -> None:
    active = (await env.client.get("/routing/rules", params={"text": "true"})).json()
    old = f'version: "{active["version"]}"'
    assert old in active["text"]
    text = active["text"].replace(old, f"version: {version!r}".replace("'", '"'))
    put = await env.client.put(
        "/routing/rules", content=text.encode(), headers={"content-type": "application/yaml"}
    )
    assert put.status_code == 422, put.text
    assert put.json()["problems"][0]["field"] == "version"
    assert message in put.json()["detail"]
