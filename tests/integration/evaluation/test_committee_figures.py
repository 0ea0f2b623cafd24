"""The committee fixture (committee_fixture.py) against numbers computed by hand: every rate,
slice and the ranking, to the last digit. The events are folded in a shuffled order with
duplicates and replays, so the same numbers also prove the fold order-independent.

Rates are rounded to 6 decimals, handling days to 2; the satisfaction weight w is 0.8. The p90
handling time is the upper edge of the published bucket (a quarter of a working day up to 10,
edges inclusive) holding the nearest-rank ticket: ⌈0.9 × n⌉-th in handling-time order, then
rounded up to the next quarter day.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.evaluation.committee_fixture import (
    BEIHAI,
    BH1,
    BH2,
    DISTRICT,
    SHIXING,
    TASHAN,
    A,
    B,
    C,
    D,
    committee_events,
)
from tests.integration.evaluation.support import COMMITTEE, EvaluationEnv, running
from tests.support import open_database

W = 0.8


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def env(
    request: pytest.FixtureRequest, broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EvaluationEnv]:
    """One evaluation app holding exactly the fixture (min sample 2, one red, one yellow)."""
    database = await open_database(request.param, lambda: tmp_path_factory.mktemp("committee"))
    try:
        async with running(
            database,
            broker.bootstrap,
            auth_mode="header",
            ranking_min_sample=2,
            red_bottom_n=1,
            yellow_bottom_n=1,
        ) as running_env:
            events = committee_events("F")
            rng = random.Random(10)
            extra = [
                e.model_copy(update={"event_id": uuid.uuid4()}) for e in rng.sample(events, 15)
            ]
            mixed = events + extra + rng.sample(events, 10)  # replays and redeliveries
            rng.shuffle(mixed)
            await running_env.fold(*mixed)
            yield running_env
    finally:
        await database.drop()


async def get(env: EvaluationEnv, path: str, **params: Any) -> Any:
    response = await env.client.get(path, params=params, headers=COMMITTEE)
    assert response.status_code == 200, response.text
    return response.json()


def values(row: dict[str, Any]) -> dict[str, Any]:
    return {m["id"]: m["value"] for m in row["metrics"]}


OCTOBER: dict[str, Any] = {
    # signed dispatches A1 A2 A3 B3 B4 C5 C6 D6 C7 C8; A2 late
    "sign_for_on_time": round(9 / 10, 6),
    # contacts A1 A2 B3 B4 C5 D6 C7; B4 late
    "first_contact_on_time": round(6 / 7, 6),
    # completed T1–T7; T4 late
    "on_time_completion": round(6 / 7, 6),
    # counted callbacks T1–T7 (T3's second revision: unresolved); T8's is on an open ticket
    "resolution": round(6 / 7, 6),
    # satisfied T1 T4 T5 T6, basically T2 T7, dissatisfied T3
    "satisfaction": round((4 + W * 2) / 7, 6),
    # T3 was returned
    "one_time_resolution": round(6 / 7, 6),
    "repeat_rate": round(1 / 8, 6),
    "return_rate": round(1 / 8, 6),
    "transfer_rate": round(1 / 8, 6),
    "extension_rate": round(1 / 8, 6),
    "escalation_rate": round(1 / 8, 6),
    # closed by B (village): T3 T4; at town or below: T1 T2 T3 T4 T5 T7 (T6 by D, district)
    "village_resolution": round(2 / 7, 6),
    "town_resolution": round(6 / 7, 6),
    # summonses: D on time, C late
    "whistle_report_on_time": 0.5,
    # K1 agreed, K2 failed (K3 withdrawn: not counted)
    "mediation_success": 0.5,
    # 1.25 + 3 + 4 + 4 + 2 + 2.29 + 4 = 20.54 working days over 7
    "average_handling_days": round(20.54 / 7, 2),
    # nearest rank ⌈0.9 × 7⌉ = 7th of 1.25 2 2.29 3 4 4 4: 4.00, in the bucket (3.75, 4.00]
    "p90_handling_days": 4.0,
}


async def test_october_city_figures_match_the_hand_computation(env: EvaluationEnv) -> None:
    answer = await get(env, "/figures", period="month", on="2026-10-15")
    assert answer["period"] == {
        "kind": "month",
        "label": "2026-10",
        "start": "2026-10-01",
        "end": "2026-10-31",
    }
    assert answer["filters"] == {"kind": "appeal"}
    assert answer["sample_size"] == 8
    assert values(answer["rows"][0]) == OCTOBER
    counters = answer["rows"][0]["counters"]
    assert counters["callbacks_on_open"] == 1 and counters["handling_centidays"] == 2054


async def test_november_and_the_quarter(env: EvaluationEnv) -> None:
    november = values((await get(env, "/figures", period="month", on="2026-11-02"))["rows"][0])
    assert november["satisfaction"] == round((2 + W * 1) / 4, 6)
    assert november["resolution"] == 1.0
    assert november["average_handling_days"] == 1.25  # 1 + 2 + 1 + 1 over 4
    # ⌈0.9 × 4⌉ = 4th of 1 1 1 2: 2.00, in the bucket (1.75, 2.00]
    assert november["p90_handling_days"] == 2.0
    assert november["mediation_success"] is None  # no case closed in November
    quarter = await get(env, "/figures", period="quarter", on="2026-11-02")
    assert quarter["period"]["label"] == "2026-Q4" and quarter["sample_size"] == 12
    q = values(quarter["rows"][0])
    assert q["satisfaction"] == round((6 + W * 3) / 11, 6)
    assert q["resolution"] == round(10 / 11, 6)
    # ⌈0.9 × 11⌉ = 10th of 1 1 1 1.25 2 2 2.29 3 4 4 4: 4.00, in the bucket (3.75, 4.00]
    assert q["p90_handling_days"] == 4.0
    assert q["average_handling_days"] == round(25.54 / 11, 2)


async def test_the_trend_by_month(env: EvaluationEnv) -> None:
    trend = await get(env, "/figures", period="quarter", on="2026-10-01", slice="period")
    rows = {r["key"]: values(r) for r in trend["rows"]}
    assert list(rows) == ["2026-10-01", "2026-11-01"]
    assert rows["2026-10-01"]["satisfaction"] == OCTOBER["satisfaction"]
    assert rows["2026-11-01"]["satisfaction"] == round((2 + W * 1) / 4, 6)


async def test_towns_roll_up_their_villages_and_grids(env: EvaluationEnv) -> None:
    towns = await get(env, "/figures", period="month", on="2026-10-01", area=DISTRICT, slice="area")
    assert towns["filters"] == {"area": DISTRICT, "kind": "appeal"}
    rows = {r["key"]: r for r in towns["rows"]}
    assert set(rows) == {BEIHAI, TASHAN}
    beihai, tashan = values(rows[BEIHAI]), values(rows[TASHAN])
    assert rows[BEIHAI]["sample_size"] == 4 and rows[TASHAN]["sample_size"] == 4
    assert rows[BEIHAI]["label_zh"] and rows[BEIHAI]["label_en"] == "Beihai Subdistrict"
    assert beihai["on_time_completion"] == 0.75  # T1 T2 T3 on time, T4 late
    assert beihai["resolution"] == 0.75
    assert beihai["satisfaction"] == round((2 + W * 1) / 4, 6)
    assert tashan["on_time_completion"] == 1.0
    assert tashan["satisfaction"] == round((2 + W * 1) / 3, 6)
    assert tashan["mediation_success"] == 0.5 and beihai["mediation_success"] is None
    # One town alone, by its code: the same numbers.
    alone = await get(env, "/figures", period="month", on="2026-10-01", area=BEIHAI)
    assert values(alone["rows"][0]) == beihai
    grids = await get(env, "/figures", period="month", on="2026-10-01", area=SHIXING, slice="area")
    assert {r["key"]: r["sample_size"] for r in grids["rows"]} == {BH1: 2, BH2: 2}


async def test_slices_by_department_category_channel_and_combined_filters(
    env: EvaluationEnv,
) -> None:
    month = {"period": "month", "on": "2026-10-01"}
    departments = await get(env, "/figures", slice="department", **month)
    rows = {r["key"]: r for r in departments["rows"] if r["key"]}
    assert {k: r["sample_size"] for k, r in rows.items()} == {A: 2, B: 2, C: 3, D: 1}
    assert values(rows[A])["sign_for_on_time"] == round(2 / 3, 6)
    assert values(rows[C])["whistle_report_on_time"] == 0.0  # C reported late
    assert values(rows[D])["whistle_report_on_time"] == 1.0
    # D closed only T6, in 2.29 working days: the bucket (2.25, 2.50], so the p90 reads 2.5
    assert values(rows[D])["p90_handling_days"] == 2.5
    assert values(rows[D])["average_handling_days"] == 2.29
    tiers = await get(env, "/figures", slice="tier", **month)
    assert {r["key"]: r["counters"]["completed"] for r in tiers["rows"] if r["key"]} == {
        "town": 4,
        "village": 2,
        "district": 1,
    }
    categories = await get(env, "/figures", slice="category", **month)
    assert {r["key"]: r["sample_size"] for r in categories["rows"] if r["key"]} == {
        "0102": 1,
        "0103": 7,
    }
    top = await get(env, "/figures", slice="category_top", **month)
    assert [(r["key"], r["sample_size"]) for r in top["rows"] if r["key"]] == [("01", 8)]
    channels = await get(env, "/figures", slice="channel", **month)
    assert {r["key"]: r["sample_size"] for r in channels["rows"] if r["key"]} == {
        "hotline-12345-phone": 7,
        "hotline-12345-web": 1,
    }
    both = await get(env, "/figures", department=B, category="0102", **month)
    assert both["sample_size"] == 1 and values(both["rows"][0])["on_time_completion"] == 0.0
    enterprise = await get(env, "/figures", enterprise=True, **month)
    assert enterprise["sample_size"] == 1
    assert enterprise["rows"][0]["counters"]["callbacks_on_open"] == 1
    weekly = await get(env, "/figures", period="week", on="2026-10-14")
    assert weekly["period"]["label"] == "2026-W42" and weekly["sample_size"] == 8
    day = await get(env, "/figures", period="day", on="2026-10-12")
    assert day["sample_size"] == 3  # T1 T2 T3


async def test_proactive_work_is_counted_apart(env: EvaluationEnv) -> None:
    proactive = await get(env, "/figures", period="month", on="2026-10-01", kind="proactive")
    assert proactive["sample_size"] == 1
    assert proactive["rows"][0]["counters"]["dispatches"] == 1


async def test_the_ranking_and_the_red_and_yellow_lists(env: EvaluationEnv) -> None:
    ranking = await get(env, "/ranking", period="month", on="2026-10-01", unit="department")
    assert ranking["weights"]["version"] == "2026.1" and ranking["min_sample"] == 2
    composite = {
        # response (sign-for), resolution, satisfaction — each rounded to 6 decimals first
        C: round((30 * 1.0 + 35 * 1.0 + 35 * round((1 + W) / 2, 6)) / 100, 6),
        A: round((30 * round(2 / 3, 6) + 35 * 1.0 + 35 * round((1 + W) / 2, 6)) / 100, 6),
        B: round((30 * 1.0 + 35 * 0.5 + 35 * 0.5) / 100, 6),
    }
    assert [(r["rank"], r["key"], r["composite"]) for r in ranking["ranked"]] == [
        (1, C, composite[C]),
        (2, A, composite[A]),
        (3, B, composite[B]),
    ]
    assert composite == {C: 0.965, A: 0.865, B: 0.65}
    assert (ranking["red"], ranking["yellow"]) == ([B], [A])
    assert [(u["key"], u["sample_size"], u["reason"]) for u in ranking["insufficient"]] == [
        (D, 1, "insufficient data"),
    ]


async def test_csv_exports_carry_the_same_numbers(env: EvaluationEnv) -> None:
    response = await env.client.get(
        "/figures.csv", params={"period": "month", "on": "2026-10-01"}, headers=COMMITTEE
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = response.text.lstrip("\ufeff").splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    assert header[:4] == ["period", "start", "end", "filters"]
    assert float(row[header.index("satisfaction")]) == OCTOBER["satisfaction"]
    assert int(row[header.index("sample_size")]) == 8
    ranking = await env.client.get("/ranking.csv", params={"on": "2026-10-01"}, headers=COMMITTEE)
    assert ranking.status_code == 200
    assert [line.split(",")[4] for line in ranking.text.splitlines()[1:]] == [C, A, B, D]
    facts = await env.client.get(
        "/exports/ticket-facts.csv",
        params={"start": "2026-10-01", "end": "2026-11-30"},
        headers=COMMITTEE,
    )
    assert facts.status_code == 200
    assert len(facts.text.splitlines()) == 1 + 12  # the proactive dispatch was not received
    assert "content" not in facts.text.splitlines()[0]


async def test_bad_requests_name_the_problem(env: EvaluationEnv) -> None:
    for params, field in (
        ({"slice": "colour"}, "slice"),
        ({"area": "123"}, "area"),
        ({"category": "9999"}, "category"),
        ({"start": "2026-10-05"}, "start"),
        ({"on": "0001-01-01", "period": "week"}, "on"),
        ({"on": "9999-12-31", "period": "year"}, "on"),
    ):
        response = await env.client.get("/figures", params=params, headers=COMMITTEE)
        assert response.status_code == 422, (params, response.text)
        assert field in response.text
    response = await env.client.get("/ranking", params={"weights": "1999"}, headers=COMMITTEE)
    assert response.status_code == 422 and "weights" in response.text


async def test_the_gauges_carry_the_headline_rates_per_district_and_department(
    env: EvaluationEnv,
) -> None:
    from datetime import datetime

    from services.evaluation.gauges import refresh
    from shared.workcalendar import SHANGHAI

    ctx = env.runtime.context
    now = datetime(2026, 10, 20, 12, tzinfo=SHANGHAI)
    await refresh(ctx.gauges, engine=ctx.reader, now=now, settings=ctx.settings)
    response = await env.client.get("/metrics", headers=COMMITTEE)
    assert response.status_code == 200
    lines = response.text.splitlines()

    def sample(name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        found = [ln for ln in lines if ln.startswith(f"{name}{{{wanted}}} ")]
        assert len(found) == 1, (name, labels)
        return float(found[0].split()[-1])

    assert sample("fengqiao_evaluation_city_rate", metric="satisfaction") == OCTOBER["satisfaction"]
    assert (
        sample("fengqiao_evaluation_district_rate", district=DISTRICT, metric="resolution")
        == OCTOBER["resolution"]
    )
    assert sample("fengqiao_evaluation_department_rate", department=B, metric="satisfaction") == 0.5
    assert sample("fengqiao_evaluation_folds_total", kind="refolded") > 0
    # Only headline metrics are exported: the label sets stay bounded.
    assert not [ln for ln in lines if 'metric="repeat_rate"' in ln]
