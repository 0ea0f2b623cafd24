"""Routes: the whistle (吹哨) and its boards."""

from __future__ import annotations

from fastapi import APIRouter, status

from services.dispatch import queries, whistle
from services.dispatch.access import WHISTLE_BLOWERS, WHISTLE_READERS
from services.dispatch.api.common import CallerDep, TicketId, WhistleId
from services.dispatch.schemas import WhistleBoard, WhistleBody
from shared.auth import checks_roles

router = APIRouter(tags=["whistle"])


@router.post(
    "/tickets/{ticket_id}/whistle",
    response_model=WhistleBoard,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=checks_roles(*WHISTLE_BLOWERS),
)
async def blow_whistle(ticket_id: TicketId, body: WhistleBody, caller: CallerDep) -> WhistleBoard:
    """吹哨: summon departments to report on a ticket, each within its deadline (30 minutes by
    default, or ``report_within_minutes``); answers with the board."""
    blown, _ = await caller.act(
        whistle.blow_whistle,
        ticket_id=ticket_id,
        reason=body.reason,
        summons=body.summons,
        source_dispatch_id=body.source_dispatch_id,
    )
    return await whistle_board(blown.whistle_id, caller)


@router.get(
    "/whistles/{whistle_id}",
    response_model=WhistleBoard,
    openapi_extra=checks_roles(*WHISTLE_READERS),
)
async def whistle_board(whistle_id: WhistleId, caller: CallerDep) -> WhistleBoard:
    """The board: who was summoned, who reported on time, who reported late, who is late."""
    return await caller.ask(queries.whistle_board, whistle_id=whistle_id)


@router.get(
    "/tickets/{ticket_id}/whistles",
    response_model=list[WhistleBoard],
    openapi_extra=checks_roles(*WHISTLE_READERS),
)
async def ticket_whistles(ticket_id: TicketId, caller: CallerDep) -> list[WhistleBoard]:
    """Every whistle blown on a ticket, with its board."""
    return await caller.ask(queries.ticket_whistles, ticket_id=ticket_id)
