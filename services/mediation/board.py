"""The backlog board (揭榜挂帅): hard cases posted publicly for officials to claim and clear.

Posted automatically: mediation cases open past ``board_open_working_days`` or breached
``board_breaches`` times, and tickets dispatch escalated to the city tier or re-routed
``board_reroutes`` times. One post per case or ticket (unique keys back the check).

A post has one lead claimant and any number of co-claimants. The lead claim is a conditional
UPDATE (``WHERE lead_claimant IS NULL``), so of two officials claiming at once exactly one wins;
the other gets a 409 naming the winner and may join as a co-claimant.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation.context import MediationContext
from services.mediation.models import BoardClaim, BoardNote, BoardPost, Case
from services.mediation.schemas import BoardStats, ClaimBody, ClearBody, NoteBody
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.events.mediation import BoardClaimed, BoardCleared, BoardPosted
from shared.workcalendar import to_shanghai

B: object = BoardPost


async def _post(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    case_id: str | None,
    ticket_id: str | None,
    origin: Literal["mediation", "dispatch"],
    reason: str,
    area_code: str | None,
) -> BoardPost | None:
    """Post once per case / ticket; None when it is already on the board."""
    conditions = []
    if case_id is not None:
        conditions.append(col(BoardPost.case_id) == case_id)
    if ticket_id is not None:
        conditions.append(col(BoardPost.ticket_id) == ticket_id)
    from sqlalchemy import or_

    if (await session.execute(select(col(BoardPost.board_id)).where(or_(*conditions)))).first():
        return None
    post = BoardPost(
        board_id=f"B-{uuid.uuid4().hex[:12].upper()}",
        case_id=case_id,
        ticket_id=ticket_id,
        origin=origin,
        reason=reason,
        area_code=area_code,
        posted_at=ctx.now(),
    )
    try:
        async with session.begin_nested():
            session.add(post)
            await session.flush()
    except IntegrityError:  # posted by a concurrent pass: once is enough
        return None
    await ctx.outbox.add(
        session,
        BoardPosted(
            board_id=post.board_id,
            case_id=case_id,
            ticket_id=ticket_id,
            reason=reason,
            origin=origin,
            area_code=area_code,
            occurred_at=ctx.now(),
        ),
    )
    return post


async def post_case(
    *, session: AsyncSession, ctx: MediationContext, case: Case, reason: str
) -> BoardPost | None:
    """Put a mediation case on the board (once)."""
    return await _post(
        session=session,
        ctx=ctx,
        case_id=case.case_id,
        ticket_id=case.ticket_id,
        origin="mediation",
        reason=reason,
        area_code=case.area_code,
    )


async def post_ticket(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    ticket_id: str,
    reason: str,
    area_code: str | None,
) -> BoardPost | None:
    """Put a dispatch ticket on the board (once)."""
    return await _post(
        session=session,
        ctx=ctx,
        case_id=None,
        ticket_id=ticket_id,
        origin="dispatch",
        reason=reason,
        area_code=area_code,
    )


async def _load(session: AsyncSession, board_id: str) -> BoardPost:
    post = await session.get(BoardPost, board_id)
    if post is None:
        raise NotFound(f"no board post {board_id}")
    return post


async def claim(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    board_id: str,
    body: ClaimBody,
) -> BoardPost:
    """Claim a post (the lead) or join its claim (a co-claimant); a second lead claim is a 409
    naming the lead."""
    post = await _load(session, board_id)
    if post.status not in ("posted", "claimed"):
        raise Conflict(f"board post {board_id} is {post.status}", current=post.status)
    today = to_shanghai(ctx.now()).date()
    if body.due_on is not None and body.due_on < today:
        raise Invalid(f"deadline {body.due_on} is in the past", field="due_on")
    me = principal.subject
    if body.co_claimant:
        if post.lead_claimant is None:
            raise Conflict(
                f"board post {board_id} has no lead claimant yet; claim it as the lead",
                current=post.status,
            )
    else:
        due = body.due_on or ctx.working_day_after(today, ctx.settings.board_claim_working_days)
        won = await session.execute(
            update(BoardPost)
            .where(col(BoardPost.board_id) == board_id, col(BoardPost.lead_claimant).is_(None))
            .values(lead_claimant=me, status="claimed", due_on=due)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(post)
            raise Conflict(
                f"board post {board_id} is already claimed by {post.lead_claimant}; "
                "join as a co-claimant",
                current=post.status,
            )
    try:
        async with session.begin_nested():
            session.add(
                BoardClaim(
                    board_id=board_id,
                    claimant_id=me,
                    rank=body.rank,
                    co_claimant=body.co_claimant,
                    claimed_at=ctx.now(),
                )
            )
            await session.flush()
    except IntegrityError:
        raise Conflict(
            f"{me} has already claimed board post {board_id}", current=post.status
        ) from None
    await session.refresh(post)
    await ctx.outbox.add(
        session,
        BoardClaimed(
            board_id=board_id,
            case_id=post.case_id,
            ticket_id=post.ticket_id,
            claimant_id=me,
            claimant_rank=body.rank,
            co_claimant=body.co_claimant,
            occurred_at=ctx.now(),
        ),
    )
    return post


async def _claimants(session: AsyncSession, board_id: str) -> set[str]:
    rows = await session.execute(
        select(col(BoardClaim.claimant_id)).where(col(BoardClaim.board_id) == board_id)
    )
    return set(rows.scalars())


async def add_note(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    board_id: str,
    body: NoteBody,
) -> BoardNote:
    """A progress note by one of the post's claimants."""
    post = await _load(session, board_id)
    if principal.subject not in await _claimants(session, board_id):
        raise Forbidden(f"only the claimants of board post {board_id} note its progress")
    if post.status != "claimed":
        raise Conflict(f"board post {board_id} is {post.status}", current=post.status)
    note = BoardNote(board_id=board_id, author=principal.subject, note=body.note, at=ctx.now())
    session.add(note)
    await session.flush()
    return note


async def clear(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    board_id: str,
    body: ClearBody,
) -> BoardPost:
    """The lead claimant reports the post cleared (resolved) or abandoned."""
    post = await _load(session, board_id)
    if post.status != "claimed":
        raise Conflict(
            f"board post {board_id} is {post.status}; only a claimed post is cleared",
            current=post.status,
        )
    if principal.subject != post.lead_claimant:
        raise Forbidden(
            f"only the lead claimant ({post.lead_claimant}) clears board post {board_id}"
        )
    post.status = body.outcome
    post.outcome_note = body.note
    post.cleared_at = ctx.now()
    await ctx.outbox.add(
        session,
        BoardCleared(
            board_id=board_id,
            case_id=post.case_id,
            ticket_id=post.ticket_id,
            outcome=body.outcome,
            occurred_at=ctx.now(),
        ),
    )
    return post


async def stats(*, session: AsyncSession) -> BoardStats:
    """Posted / claimed / cleared counts and the clearance rate (cleared of claimed)."""
    rows = await session.execute(
        select(col(BoardPost.status), func.count()).group_by(col(BoardPost.status))
    )
    by_status: dict[str, int] = {status: count for status, count in rows}
    claimants = (
        await session.execute(select(func.count(func.distinct(BoardClaim.claimant_id))))
    ).scalar_one()
    cleared = by_status.get("cleared", 0)
    abandoned = by_status.get("abandoned", 0)
    claimed = by_status.get("claimed", 0) + cleared + abandoned
    return BoardStats(
        posted=sum(by_status.values()),
        claimed=claimed,
        cleared=cleared,
        abandoned=abandoned,
        open=by_status.get("posted", 0) + by_status.get("claimed", 0),
        claimants=claimants,
        clearance_rate=round(cleared / claimed, 4) if claimed else None,
    )
