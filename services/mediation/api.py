"""Mediation's HTTP routes: thin — validate, call the domain module in one transaction, wake the
relay. Who may call what is declared on each route (the policy is in ``access.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.mediation import agreements, board, pool, queries, service, sessions
from services.mediation.context import MediationContext
from services.mediation.lifecycle import Status
from services.mediation.models import Agreement, BoardPost, Case, Mediator
from services.mediation.schemas import (
    AgreementIn,
    AgreementPublic,
    AssignBody,
    AvailabilityBody,
    BoardPostPublic,
    BoardStats,
    CaseDetail,
    CasePublic,
    CaseStats,
    ClaimBody,
    ClearBody,
    CourtBody,
    FailBody,
    FollowUpIn,
    FollowUpPublic,
    FollowUpRecord,
    MediatorIn,
    MediatorPublic,
    NoteBody,
    PartyIn,
    PartyPublic,
    ReasonBody,
    RelationIn,
    SessionIn,
    SessionPublic,
    SessionRecord,
    Suggestion,
    WalkInCase,
)
from shared.auth import Principal, Role, require_roles
from shared.errors import Forbidden, NotFound
from shared.events.mediation import Level
from shared.runtime import context_of

MAX_OFFSET = 1_000_000
T = TypeVar("T")

MediationDep = Annotated[MediationContext, Depends(context_of(MediationContext))]
# Mediators and the centres that run the one-stop mediation work handle the cases (operators
# always may); the hotline, departments and grid workers may not; the committee reads counts.
CaseWorker = Annotated[Principal, Depends(require_roles(Role.MEDIATOR, Role.CENTRE))]
Centre = Annotated[Principal, Depends(require_roles(Role.CENTRE))]
CountReader = Annotated[
    Principal, Depends(require_roles(Role.COMMITTEE, Role.CENTRE, Role.MEDIATOR))
]
# The board is public; officials (centre and department cadres, mediators) claim from it.
Anyone = Annotated[Principal, Depends(require_roles(*Role))]
Official = Annotated[Principal, Depends(require_roles(Role.CENTRE, Role.DEPARTMENT, Role.MEDIATOR))]

_ID = r"^[\w.:-]+$"
CaseId = Annotated[str, Path(max_length=64, pattern=_ID)]
ItemId = Annotated[str, Path(max_length=72, pattern=_ID)]
MediatorId = Annotated[str, Path(max_length=48, pattern=_ID)]

_AUTH = {
    400: {"description": "A malformed identity header"},
    401: {"description": "No role (header mode), or a unit role without its unit"},
    403: {"description": "The role may not do this, or the case is not the caller's"},
}

router = APIRouter(responses=_AUTH)  # type: ignore[arg-type]


async def _write(ctx: MediationContext, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, then wake the relay for the events it wrote."""
    async with ctx.sessions() as session, session.begin():
        result = await work(session)
    ctx.runtime.notify()
    return result


async def _read(ctx: MediationContext, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with ctx.sessions() as session:
        return await work(session)


# --------------------------------------------------------------------------------------------
# Cases


@router.get("/cases", response_model=list[CasePublic], tags=["cases"])
async def list_cases(
    ctx: MediationDep,
    principal: CaseWorker,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    status: Annotated[Status | None, Query()] = None,
    level: Annotated[Level | None, Query()] = None,
) -> list[Case]:
    """The caller's cases (a mediator's own, a centre's level and area), newest first."""
    return await _read(
        ctx,
        lambda s: queries.list_cases(
            session=s,
            principal=principal,
            limit=limit,
            offset=offset,
            status=status.value if status else None,
            level=level,
        ),
    )


@router.post(
    "/cases", response_model=CasePublic, status_code=status.HTTP_201_CREATED, tags=["cases"]
)
async def open_walk_in(ctx: MediationDep, principal: CaseWorker, body: WalkInCase) -> Case:
    """Open a walk-in case (no ticket); a mediator opening it becomes its lead mediator."""
    return await _write(
        ctx, lambda s: service.open_walk_in(session=s, ctx=ctx, principal=principal, body=body)
    )


@router.get("/cases/stats", response_model=CaseStats, tags=["cases"])
async def case_stats(ctx: MediationDep, principal: CountReader) -> CaseStats:
    """Counts by status, level, dispute type, ending level and agreement kind — no parties."""
    return await _read(ctx, lambda s: queries.case_stats(session=s, principal=principal))


@router.get("/cases/{case_id}", response_model=CaseDetail, tags=["cases"])
async def get_case(ctx: MediationDep, principal: CaseWorker, case_id: CaseId) -> dict[str, Any]:
    """One case with parties (clear to its mediators only), sessions, agreements and history."""
    return await _read(
        ctx, lambda s: queries.case_detail(session=s, principal=principal, case_id=case_id)
    )


@router.post(
    "/cases/{case_id}/parties",
    response_model=PartyPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["cases"],
)
async def add_party(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: PartyIn
) -> PartyPublic:
    """Add an applicant, respondent or third party; 409 if a mediator on the case conflicts."""
    party = await _write(
        ctx,
        lambda s: service.add_party(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )
    return queries._party_view(party, clear=principal.role is Role.MEDIATOR)


@router.get("/cases/{case_id}/suggestions", response_model=list[Suggestion], tags=["mediators"])
async def suggestions(
    ctx: MediationDep,
    principal: Centre,
    case_id: CaseId,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[Suggestion]:
    """Mediators ranked for the case (speciality, level, load); conflicted ones last, named."""

    async def work(s: AsyncSession) -> list[Suggestion]:
        case = await service.load_case(session=s, principal=principal, case_id=case_id, lock=False)
        return await pool.suggestions(session=s, case=case, limit=limit)

    return await _read(ctx, work)


@router.post("/cases/{case_id}/assign", response_model=CaseDetail, tags=["cases"])
async def assign(
    ctx: MediationDep, principal: Centre, case_id: CaseId, body: AssignBody
) -> dict[str, Any]:
    """Assign a mediator; 409 naming the conflict of interest when there is one."""

    async def work(s: AsyncSession) -> None:
        case = await service.load_case(session=s, principal=principal, case_id=case_id)
        await service.assign(
            session=s,
            ctx=ctx,
            principal=principal,
            case=case,
            mediator_id=body.mediator_id,
            lead=body.lead,
        )

    await _write(ctx, work)
    return await _read(
        ctx, lambda s: queries.case_detail(session=s, principal=principal, case_id=case_id)
    )


@router.post("/cases/{case_id}/fail", response_model=CasePublic, tags=["cases"])
async def fail(ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: FailBody) -> Case:
    """Mediation did not settle it: the case goes up a level, or out with a referral."""
    return await _write(
        ctx,
        lambda s: service.fail(session=s, ctx=ctx, principal=principal, case_id=case_id, body=body),
    )


# --------------------------------------------------------------------------------------------
# Sessions


@router.post(
    "/cases/{case_id}/sessions",
    response_model=SessionPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["sessions"],
)
async def schedule_session(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: SessionIn
) -> Any:
    """Schedule a session; 409 naming the other session if the mediator or room is booked."""
    return await _write(
        ctx,
        lambda s: sessions.schedule(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )


@router.post("/sessions/{session_id}/record", response_model=SessionPublic, tags=["sessions"])
async def record_session(
    ctx: MediationDep, principal: CaseWorker, session_id: ItemId, body: SessionRecord
) -> Any:
    """Record attendance, notes and the outcome of a held session."""
    return await _write(
        ctx,
        lambda s: sessions.record(
            session=s, ctx=ctx, principal=principal, session_id=session_id, body=body
        ),
    )


@router.post("/sessions/{session_id}/cancel", response_model=SessionPublic, tags=["sessions"])
async def cancel_session(ctx: MediationDep, principal: CaseWorker, session_id: ItemId) -> Any:
    """Cancel a scheduled session; its mediator and room are free again."""
    return await _write(
        ctx, lambda s: sessions.cancel(session=s, principal=principal, session_id=session_id)
    )


# --------------------------------------------------------------------------------------------
# Agreements and follow-up


async def _agreement(ctx: MediationContext, agreement_id: str) -> dict[str, Any]:
    async def work(s: AsyncSession) -> dict[str, Any]:
        row = await s.get(Agreement, agreement_id)
        if row is None:
            raise NotFound(f"no agreement {agreement_id}")
        return await queries.agreement_view(session=s, agreement=row)

    return await _read(ctx, work)


@router.post(
    "/cases/{case_id}/agreements",
    response_model=AgreementPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["agreements"],
)
async def record_agreement(
    ctx: MediationDep, principal: CaseWorker, case_id: CaseId, body: AgreementIn
) -> dict[str, Any]:
    """Record a written or verbal agreement with its terms; 422 naming every problem."""
    agreement = await _write(
        ctx,
        lambda s: agreements.record_agreement(
            session=s, ctx=ctx, principal=principal, case_id=case_id, body=body
        ),
    )
    return await _agreement(ctx, agreement.agreement_id)


@router.post(
    "/agreements/{agreement_id}/court", response_model=AgreementPublic, tags=["agreements"]
)
async def court_confirmation(
    ctx: MediationDep, principal: CaseWorker, agreement_id: ItemId, body: CourtBody
) -> dict[str, Any]:
    """Judicial confirmation (司法确认) requested, granted (with the reference) or refused."""
    await _write(
        ctx,
        lambda s: agreements.court_confirmation(
            session=s, ctx=ctx, principal=principal, agreement_id=agreement_id, body=body
        ),
    )
    return await _agreement(ctx, agreement_id)


@router.post(
    "/agreements/{agreement_id}/follow-ups",
    response_model=FollowUpPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["agreements"],
)
async def schedule_follow_up(
    ctx: MediationDep, principal: CaseWorker, agreement_id: ItemId, body: FollowUpIn
) -> Any:
    """Schedule another follow-up visit (回访)."""
    return await _write(
        ctx,
        lambda s: agreements.schedule_follow_up(
            session=s, ctx=ctx, principal=principal, agreement_id=agreement_id, body=body
        ),
    )


@router.post(
    "/follow-ups/{follow_up_id}/record", response_model=FollowUpPublic, tags=["agreements"]
)
async def record_follow_up(
    ctx: MediationDep, principal: CaseWorker, follow_up_id: ItemId, body: FollowUpRecord
) -> Any:
    """Record a visit: terms fulfilled (all of them closes the case) or breached."""
    return await _write(
        ctx,
        lambda s: agreements.record_follow_up(
            session=s, ctx=ctx, principal=principal, follow_up_id=follow_up_id, body=body
        ),
    )


# --------------------------------------------------------------------------------------------
# The mediator pool


@router.get("/mediators", response_model=list[MediatorPublic], tags=["mediators"])
async def list_mediators(
    ctx: MediationDep,
    _principal: CaseWorker,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[Mediator]:
    """The mediator pool."""
    return await _read(ctx, lambda s: queries.list_mediators(session=s, limit=limit, offset=offset))


@router.post(
    "/mediators",
    response_model=MediatorPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["mediators"],
)
async def add_mediator(ctx: MediationDep, _principal: Centre, body: MediatorIn) -> Mediator:
    """Add a mediator to the pool."""
    return await _write(ctx, lambda s: pool.add_mediator(session=s, body=body))


def _self_or_centre(principal: Principal, mediator_id: str) -> None:
    if principal.role is Role.MEDIATOR and principal.subject != mediator_id:
        raise Forbidden(f"mediator {principal.subject} may change only their own entry")


@router.put(
    "/mediators/{mediator_id}/availability", response_model=MediatorPublic, tags=["mediators"]
)
async def set_availability(
    ctx: MediationDep, principal: CaseWorker, mediator_id: MediatorId, body: AvailabilityBody
) -> Mediator:
    """Replace the weekly availability (the mediator themselves or a centre)."""
    _self_or_centre(principal, mediator_id)
    return await _write(
        ctx,
        lambda s: pool.set_availability(
            session=s, mediator_id=mediator_id, slots=body.availability
        ),
    )


@router.post(
    "/mediators/{mediator_id}/relations", status_code=status.HTTP_201_CREATED, tags=["mediators"]
)
async def declare_relation(
    ctx: MediationDep, principal: CaseWorker, mediator_id: MediatorId, body: RelationIn
) -> dict[str, Any]:
    """Declare a relation to a person or organisation; it conflicts the mediator out of their
    cases."""
    _self_or_centre(principal, mediator_id)
    row = await _write(
        ctx,
        lambda s: pool.declare_relation(
            session=s, mediator_id=mediator_id, body=body, now=ctx.now()
        ),
    )
    return {
        "mediator_id": row.mediator_id,
        "relation": row.relation,
        "declared_at": row.declared_at,
    }


# --------------------------------------------------------------------------------------------
# The backlog board (揭榜挂帅)


@router.get("/board", response_model=list[BoardPostPublic], tags=["board"])
async def list_board(
    ctx: MediationDep,
    _principal: Anyone,
    status: Annotated[Literal["posted", "claimed", "cleared", "abandoned"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[dict[str, Any]]:
    """The public board: posts with claims, deadlines, progress and outcome; no parties."""
    return await _read(
        ctx, lambda s: queries.list_board(session=s, status=status, limit=limit, offset=offset)
    )


@router.get("/board/stats", response_model=BoardStats, tags=["board"])
async def board_stats(ctx: MediationDep, _principal: Anyone) -> BoardStats:
    """Posted, claimed and cleared counts and the clearance rate."""
    return await _read(ctx, lambda s: board.stats(session=s))


async def _post_view(ctx: MediationContext, board_id: str) -> dict[str, Any]:
    async def work(s: AsyncSession) -> dict[str, Any]:
        post = await s.get(BoardPost, board_id)
        if post is None:
            raise NotFound(f"no board post {board_id}")
        return await queries.board_view(session=s, post=post)

    return await _read(ctx, work)


@router.get("/board/{board_id}", response_model=BoardPostPublic, tags=["board"])
async def get_post(ctx: MediationDep, _principal: Anyone, board_id: ItemId) -> dict[str, Any]:
    """One post with its claims, deadline, progress notes and outcome."""
    return await _post_view(ctx, board_id)


@router.post("/board/{board_id}/claim", response_model=BoardPostPublic, tags=["board"])
async def claim(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: ClaimBody
) -> dict[str, Any]:
    """Claim a post (one lead; a second lead claim is a 409) or join as a co-claimant."""
    await _write(
        ctx,
        lambda s: board.claim(
            session=s, ctx=ctx, principal=principal, board_id=board_id, body=body
        ),
    )
    return await _post_view(ctx, board_id)


@router.post("/board/{board_id}/notes", response_model=BoardPostPublic, tags=["board"])
async def add_note(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: NoteBody
) -> dict[str, Any]:
    """A claimant's progress note."""
    await _write(
        ctx,
        lambda s: board.add_note(
            session=s, ctx=ctx, principal=principal, board_id=board_id, body=body
        ),
    )
    return await _post_view(ctx, board_id)


@router.post("/board/{board_id}/clear", response_model=BoardPostPublic, tags=["board"])
async def clear(
    ctx: MediationDep, principal: Official, board_id: ItemId, body: ClearBody
) -> dict[str, Any]:
    """The lead claimant reports the post cleared or abandoned."""
    await _write(
        ctx,
        lambda s: board.clear(
            session=s, ctx=ctx, principal=principal, board_id=board_id, body=body
        ),
    )
    return await _post_view(ctx, board_id)


# Registered last: the literal routes under /cases/{case_id}/ must match first.
@router.post("/cases/{case_id}/{action}", response_model=CasePublic, tags=["cases"])
async def case_action(
    ctx: MediationDep,
    principal: CaseWorker,
    case_id: CaseId,
    action: Literal["withdraw", "escalate", "close"],
    body: ReasonBody | None = None,
) -> Case:
    """Withdraw (and close), hand up a level (centres), or close a concluded case."""
    reason = body.reason if body else None
    return await _write(
        ctx,
        lambda s: service.simple_action(
            session=s, ctx=ctx, principal=principal, case_id=case_id, action=action, reason=reason
        ),
    )
