"""Mediation's HTTP routes: thin — validate, call the domain module in one transaction, wake the
relay. Who may call what is declared on each route (the policy is in ``access.py``).

One router per part of the work; the cases' routes go last, because their catch-all
``/cases/{case_id}/{action}`` must not shadow the literal routes of sessions and agreements."""

from __future__ import annotations

from fastapi import APIRouter

from services.mediation.api import agreements, board, cases, pool, sessions

router = APIRouter()
for part in (sessions, agreements, pool, board, cases):
    router.include_router(part.router)
