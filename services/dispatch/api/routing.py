"""Routes: the routing rules (read, activate, dry-run), the time-limit profiles, the calendar."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from services.dispatch.access import REFERENCE_DATA
from services.dispatch.api.common import ContextDep, OperatorDep, ServiceDep
from services.dispatch.organisation import admin
from services.dispatch.queries import dry_run as dry_run_query
from services.dispatch.routing import RoutingDecision
from services.dispatch.rules import RuleSet, load_rules
from services.dispatch.schemas import DryRunRequest, RulesPublic

router = APIRouter(tags=["routing"])


def _public(
    rule_set_id: int, rules: RuleSet, at: datetime, by: str, text: str | None = None
) -> RulesPublic:
    return RulesPublic(
        rule_set_id=rule_set_id,
        version=rules.version,
        digest=rules.digest,
        activated_at=at,
        activated_by=by,
        rules=[r.model_dump(mode="json") for r in rules.rules],
        text=text,
    )


@router.get("/routing/rules", response_model=RulesPublic, openapi_extra=REFERENCE_DATA)
async def get_rules(
    service: ServiceDep,
    text: Annotated[bool, Query(description="include the YAML source")] = False,
) -> RulesPublic:
    """The active routing rules: version, digest, who activated them and when, in order."""
    active = await service.read(service.ctx.org.rules)
    shown = active.text if text else None
    return _public(active.id, active.rules, active.activated_at, active.activated_by, shown)


@router.put("/routing/rules", response_model=RulesPublic)
async def put_rules(
    caller: OperatorDep,
    response: Response,
    body: Annotated[
        str,
        Body(
            media_type="application/yaml",
            description="the whole rules file (YAML); refused as a whole (422) with every reason",
        ),
    ],
) -> RulesPublic:
    """Activate a new rules file (201), or confirm the active one (200, same content)."""
    ctx = caller.ctx
    row, created = await caller.write(
        lambda s: admin.activate_rules(session=s, ctx=ctx, text=body, actor=caller.actor)
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    rules = load_rules(row.text, org=await caller.read(ctx.org.chart), profiles=ctx.profiles)
    assert row.id is not None
    return _public(row.id, rules, row.activated_at, row.activated_by)


@router.post("/routing/dry-run", response_model=RoutingDecision, openapi_extra=REFERENCE_DATA)
async def dry_run(body: DryRunRequest, service: ServiceDep) -> RoutingDecision:
    """Which rule fires for a ticket and why — every rule tried, each condition checked — with
    the active rules or a candidate rules file; nothing is stored."""
    return await service.read(lambda s: dry_run_query(session=s, ctx=service.ctx, body=body))


@router.get("/profiles", openapi_extra=REFERENCE_DATA)
async def list_profiles(ctx: ContextDep) -> list[dict[str, Any]]:
    """The time-limit profiles and their clocks."""
    return [
        {
            "code": p.code,
            "name_zh": p.name_zh,
            "name_en": p.name_en,
            "description": p.description,
            "clocks": {
                name.value: {
                    "duration": str(spec.duration),
                    "office_hours": spec.office_hours.name,
                    "due": spec.due.value,
                }
                for name, spec in p.clocks.items()
            },
        }
        for p in ctx.profiles.profiles.values()
    ]


@router.get("/calendar", openapi_extra=REFERENCE_DATA)
async def get_calendar(ctx: ContextDep) -> dict[str, Any]:
    """The working calendar: official data years, operators' overrides, where the fallback
    starts."""
    return ctx.deadlines.calendar.describe()
