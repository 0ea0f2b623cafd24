"""抢着办: an eligible department takes a pooled dispatch. (A grab window that runs out is
enforced by the scheduler: ``deadlines/grab_expiry.py``.)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.deadlines.rows import start_clocks, stop_clocks
from services.dispatch.models import Dispatch
from services.dispatch.placement import assigned_event, mediation_requested
from services.dispatch.rules import HandlingLine
from services.dispatch.transitions import offers_of, step
from services.dispatch.workflow import Action
from shared.auth import Principal
from shared.errors import Invalid
from shared.events.dispatch import DispatchSigned


async def grab(
    *,
    session: AsyncSession,
    ctx: DispatchContext,
    dispatch_id: str,
    principal: Principal,
    note: str | None = None,
) -> Dispatch:
    """抢着办: an eligible department takes a pooled dispatch; its clocks start now."""
    if not principal.department_code:
        raise Invalid("grabbing needs the grabbing department (X-Fengqiao-Department)")
    s = await step(
        session, ctx, dispatch_id=dispatch_id, action=Action.GRAB, principal=principal, note=note
    )
    offered = await offers_of(session, dispatch_id)
    if principal.department_code not in offered:
        raise Invalid(f"department {principal.department_code} is not offered this dispatch")
    unit = s.org.department(principal.department_code)
    s.d.department_code = unit.code
    due = start_clocks(session, ctx, s.d, s.now)
    await session.flush()
    # The clocks did not exist when the step was applied: the grab stops sign-for now.
    await stop_clocks(session, s.d, Action.GRAB, s.now)
    await ctx.outbox.add(
        session,
        assigned_event(s.d, unit, due, mode="grab"),
        DispatchSigned(
            ticket_id=s.d.ticket_id,
            dispatch_id=s.d.dispatch_id,
            department_code=unit.code,
            via="grab",
        ),
    )
    if s.d.handling_line == HandlingLine.MEDIATION:
        await ctx.outbox.add(session, mediation_requested(s.d, by="routing", reason=None))
    return s.d
