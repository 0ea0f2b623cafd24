"""The committee's dashboard (``/dashboard``): one page that reads the same JSON API.

Headline rates beside their targets, the ranking with red / yellow marks, a trend chart, a
drill-down from the city to the grid and the hot-spot list; Chinese by default, English on a
toggle. The chart library is plotly.js as the ``plotly`` package ships it, served by this
service: city intranets are offline, so nothing comes from a CDN.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from shared.auth import Role, require_roles

router = APIRouter(
    tags=["dashboard"],
    dependencies=[Depends(require_roles(Role.COMMITTEE))],
    include_in_schema=True,
)


@cache
def _plotly_js() -> bytes:
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()


@cache
def _page() -> str:
    return (
        resources.files("services.evaluation.data")
        .joinpath("dashboard.html")
        .read_text(encoding="utf-8")
    )


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The committee's dashboard page (it reads /figures, /ranking and /hotspots)."""
    return HTMLResponse(_page())


@router.get("/dashboard/plotly.min.js")
async def plotly_js() -> Response:
    """plotly.js, from the installed ``plotly`` package."""
    return Response(
        _plotly_js(),
        media_type="application/javascript",
        headers={"cache-control": "public, max-age=86400"},
    )
