"""未诉先办: evaluation's hot-spot analysis proposes work before anyone calls; dispatch turns each
proposal into a proactive dispatch to the department that owns the category in that area.

A proposal has no intake ticket: its own id (``P-`` and the proposal id) stands for one, so the
dispatch, its clocks, its events and its inbox entries work as for any ticket, while the
``proactive`` line and channel keep it apart from citizens' appeals in every count. A proposal is
placed once, however often it is delivered.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch.context import DispatchContext
from services.dispatch.models import Dispatch, TicketRecord
from services.dispatch.placement import place
from services.dispatch.routing import PROACTIVE_CHANNEL, TicketFacts, route_for
from shared.events.evaluation import ProactiveWorkProposed

PREFIX = "P-"


# ``tickets.ticket_id`` is VARCHAR(32).
MAX_ID = 32


def ticket_id_for(proposal_id: str) -> str:
    """The id a proposal's work goes by where a ticket id is expected."""
    ticket_id = proposal_id if proposal_id.startswith(PREFIX) else PREFIX + proposal_id
    if len(ticket_id) > MAX_ID:
        raise ValueError(
            f"proposal id {proposal_id!r} is longer than a ticket id can be ({MAX_ID})"
        )
    return ticket_id


async def place_proposal(
    *, session: AsyncSession, ctx: DispatchContext, proposal: ProactiveWorkProposed
) -> list[Dispatch]:
    """Create the proactive dispatch a proposal calls for (once per proposal)."""
    ticket_id = ticket_id_for(proposal.proposal_id)
    if await session.get(TicketRecord, ticket_id) is not None:
        return []
    org, active = await ctx.org.current(session)
    act_by = f"\n(act by {proposal.act_by.isoformat()})" if proposal.act_by else ""
    facts = TicketFacts(
        ticket_id=ticket_id,
        category=proposal.category_code,
        area_code=proposal.area_code,
        channel=PROACTIVE_CHANNEL,
        text=proposal.reason + act_by,
    )
    decision = route_for(facts, active.rules, org)
    now = ctx.now()
    stored = TicketRecord(
        ticket_id=ticket_id,
        channel=PROACTIVE_CHANNEL,
        category_code=proposal.category_code,
        area_code=proposal.area_code,
        title=f"未诉先办: {proposal.reason}"[:200],
        facts=facts.model_dump(mode="json"),
        excluded=[],
        received_at=proposal.occurred_at,
        routed_at=now,
    )
    session.add(stored)
    created = await place(session, ctx, ticket=stored, decision=decision, org=org, now=now)
    if ctx.metrics is not None:
        ctx.metrics.proactive.inc(len(created))
    return created
