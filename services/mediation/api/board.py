"""Routes: the backlog board (揭榜挂帅) — posts, claims, progress notes, clearing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import board, queries
from services.mediation.api.common import (
    AUTH_RESPONSES,
    MAX_OFFSET,
    Anyone,
    ItemId,
    MediationDep,
    Official,
    read,
    write,
)
from services.mediation.context import MediationContext
from services.mediation.models import BoardPost
from services.mediation.schemas import (
    BoardPostPublic,
    BoardStats,
    ClaimBody,
    ClearBody,
    NoteBody,
)
from shared.errors import NotFound

router = APIRouter(responses=AUTH_RESPONSES)  # type: ignore[arg-type]


@router.get("/board", response_model=list[BoardPostPublic], tags=["board"])
async def list_board(
    ctx: MediationDep,
    _principal: Anyone,
    status: Annotated[Literal["posted", "claimed", "cleared", "abandoned"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[dict[str, Any]]:
    """The public board: posts with claims, deadlines, progress and outcome; no parties."""
    return await read(
        ctx, lambda s: queries.list_board(session=s, status=status, limit=limit, offset=offset)
    )


@router.get("/board/stats", response_model=BoardStats, tags=["board"])
async def board_stats(ctx: MediationDep, _principal: Anyone) -> BoardStats:
    """Posted, claimed and cleared counts and the clearance rate."""
    return await read(ctx, lambda s: board.stats(session=s))


async def _post_view(ctx: MediationContext, board_id: str) -> dict[str, Any]:
    async def work(s: AsyncSession) -> dict[str, Any]:
        post = await s.get(BoardPost, board_id)
        if post is None:
            raise NotFound(f"no board post {board_id}")
        return await queries.board_view(session=s, post=post)

    return await read(ctx, work)


async def _board_act(
    ctx: MediationContext, act: Callable[..., Awaitable[Any]], *, board_id: str, **fields: Any
) -> dict[str, Any]:
    """One claimant's act on a post (claim, note, clear) in one transaction; the post after it."""
    await write(ctx, lambda s: act(session=s, ctx=ctx, board_id=board_id, **fields))
    return await _post_view(ctx, board_id)


@router.get("/board/{board_id}", response_model=BoardPostPublic, tags=["board"])
async def get_post(ctx: MediationDep, _principal: Anyone, board_id: ItemId) -> dict[str, Any]:
    """One post with its claims, deadline, progress notes and outcome."""
    return await _post_view(ctx, board_id)


@router.post("/board/{board_id}/claim", response_model=BoardPostPublic, tags=["board"])
async def claim(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: ClaimBody
) -> dict[str, Any]:
    """Claim a post (one lead; a second lead claim is a 409) or join as a co-claimant."""
    return await _board_act(ctx, board.claim, principal=principal, board_id=board_id, body=body)


@router.post("/board/{board_id}/notes", response_model=BoardPostPublic, tags=["board"])
async def add_note(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: NoteBody
) -> dict[str, Any]:
    """A claimant's progress note."""
    return await _board_act(ctx, board.add_note, principal=principal, board_id=board_id, body=body)


@router.post("/board/{board_id}/clear", response_model=BoardPostPublic, tags=["board"])
async def clear(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: ClearBody
) -> dict[str, Any]:
    """The lead claimant reports the post cleared or abandoned."""
    return await _board_act(ctx, board.clear, principal=principal, board_id=board_id, body=body)
