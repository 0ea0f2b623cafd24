"""The dashboard in headless Chromium (Debian's ``chromium``): after its scripts ran, the page
shows the numbers the API gives — headline rates, the ranking with its red and yellow marks,
the drill-down — in Chinese and in English; a screenshot is kept under the test's tmp dir."""

from __future__ import annotations

import asyncio
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.evaluation.app import create_app
from services.evaluation.handlers import event_handlers
from services.evaluation.settings import EvaluationSettings
from tests.integration.evaluation.committee_fixture import A, B, C, committee_events
from tests.support import isolated_settings, open_database, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
ON = "2026-10-15"


class ById(HTMLParser):
    """Text and class of every element with an id, descendants' text included."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.classes: dict[str, str] = {}
        self._open: list[str | None] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        element_id = found.get("id")
        if element_id:
            self.text[element_id] = ""
            self.classes[element_id] = found.get("class") or ""
        if tag not in ("br", "img", "meta", "link", "input"):
            self._open.append(element_id)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("br", "img", "meta", "link", "input"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._open:
            if element_id:
                self.text[element_id] += data


async def chromium(*args: str) -> str:
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=15000",
        "--window-size=1280,2400",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def pct(value: float) -> str:
    return f"{value * 100:.2f}%"


async def test_the_dashboard_shows_what_the_api_gives(broker: Any, tmp_path: Path) -> None:
    database = await open_database("sqlite", lambda: tmp_path)
    settings = await isolated_settings(
        EvaluationSettings,
        service="evaluation",
        database=database,
        bootstrap=broker.bootstrap,
        ranking_min_sample=2,
        red_bottom_n=1,
        yellow_bottom_n=1,
    )
    app = create_app(settings)
    async with serve("evaluation", app) as running:
        handlers = event_handlers(running.runtime.context)
        for event in committee_events("G"):
            async with running.runtime.sessions() as session, session.begin():
                await handlers[type(event)](event, session=session)
        async with httpx.AsyncClient(base_url=running.url) as client:
            figures = (await client.get("/figures", params={"on": ON})).json()
            ranking = (await client.get("/ranking", params={"on": ON})).json()
            towns = (await client.get("/figures", params={"on": ON, "slice": "area"})).json()
            script = await client.get("/dashboard/plotly.min.js")
        assert script.status_code == 200 and b"plotly" in script.content[:2000].lower()

        dom = await chromium("--dump-dom", f"{running.url}/dashboard?on={ON}")
        page = ById()
        page.feed(dom)
        assert page.body.get("data-ready") == "true", page.body.get("data-error")
        metrics = {m["id"]: m["value"] for m in figures["rows"][0]["metrics"]}
        shown = [k for k in page.text if k.startswith("headline-")]
        assert shown, "no headline card rendered"
        for card in shown:
            metric = card.removeprefix("headline-")
            value = metrics[metric]
            expected = f"{value:.2f}" if metric.endswith("_days") else pct(value)
            assert expected in page.text[card], (metric, page.text[card])
        assert "满意率" in page.text["headline-satisfaction"]
        for row in ranking["ranked"]:
            assert f"{row['composite']:.4f}" in page.text[f"rank-{row['key']}"]
        assert (page.classes[f"rank-{B}"], page.classes[f"rank-{A}"]) == ("red", "yellow")
        assert page.classes[f"rank-{C}"] == ""
        assert "insufficient" not in page.text["insufficient"]  # Chinese by default
        for row in towns["rows"]:
            if row["key"]:
                assert str(row["sample_size"]) in page.text[f"area-{row['key']}"]

        english = ById()
        english.feed(await chromium("--dump-dom", f"{running.url}/dashboard?on={ON}&lang=en"))
        assert "Satisfaction rate" in english.text["headline-satisfaction"]
        assert "Insufficient data" in english.text["insufficient"]

        screenshot = tmp_path / "dashboard.png"
        await chromium(f"--screenshot={screenshot}", f"{running.url}/dashboard?on={ON}")
        assert screenshot.stat().st_size > 10_000
