"""Mediation's read side: the SELECTs behind the routes, scoped to what the caller may see."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import false, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement
from sqlmodel import col

from services.mediation.access import unit_scope
from services.mediation.lifecycle import Status, allowed_actions
from services.mediation.models import (
    Agreement,
    AgreementTerm,
    BoardClaim,
    BoardNote,
    BoardPost,
    Case,
    CaseMediator,
    CaseTransition,
    FollowUp,
    MediationSession,
    Mediator,
    Party,
    Signature,
)
from services.mediation.schemas import CaseStats, PartyPublic
from services.mediation.service import load_case, mediator_ids
from shared.auth import Principal, Role
from shared.pii import scrub_text


def scope_filter(principal: Principal) -> ColumnElement[bool] | None:
    """The WHERE clause limiting cases to the caller's (None: every case)."""
    match principal.role:
        case Role.MEDIATOR:
            mine = select(col(CaseMediator.case_id)).where(
                col(CaseMediator.mediator_id) == principal.subject
            )
            return col(Case.case_id).in_(mine)
        case Role.CENTRE if principal.department_code is not None:
            scope = unit_scope(principal.department_code)
            if scope is None:
                return false()
            level = col(Case.level) == scope.level
            if scope.area_code is None:
                return level
            return level & col(Case.centre_area_code).startswith(scope.area_code)
        case Role.OPERATOR | Role.CENTRE | Role.COMMITTEE:
            return None
    return false()


async def list_cases(
    *,
    session: AsyncSession,
    principal: Principal,
    limit: int,
    offset: int,
    status: str | None = None,
    level: str | None = None,
) -> list[Case]:
    """The caller's cases, newest first, a page at a time."""
    query = select(Case)
    scope = scope_filter(principal)
    if scope is not None:
        query = query.where(scope)
    if status is not None:
        query = query.where(col(Case.status) == status)
    if level is not None:
        query = query.where(col(Case.level) == level)
    query = (
        query.order_by(col(Case.opened_at).desc(), col(Case.case_id).desc())
        .limit(limit)
        .offset(offset)
    )
    return list((await session.execute(query)).scalars())


def _party_view(p: Party, clear: bool) -> PartyPublic:
    """Clear contact data for the case's mediators, masked for everyone else."""
    return PartyPublic(
        party_id=p.party_id,
        role=p.role,
        kind=p.kind,
        name=p.name if clear else p.name_masked,
        phone=p.phone if clear else p.phone_masked,
        id_number=p.id_number if clear else p.id_number_masked,
        address=p.address if clear else None,
        masked=not clear,
    )


async def _rows(session: AsyncSession, query: Any) -> list[Any]:
    return list((await session.execute(query)).scalars())


async def case_detail(
    *, session: AsyncSession, principal: Principal, case_id: str
) -> dict[str, Any]:
    """Everything about one case the caller may see; parties in clear only for its mediators."""
    case = await load_case(session=session, principal=principal, case_id=case_id, lock=False)
    mediators = await mediator_ids(session, case_id)
    clear = principal.role is Role.MEDIATOR and principal.subject in mediators
    parties = await _rows(
        session, select(Party).where(col(Party.case_id) == case_id).order_by(col(Party.party_id))
    )
    assigned = await _rows(
        session, select(CaseMediator).where(col(CaseMediator.case_id) == case_id)
    )
    sessions = await _rows(
        session,
        select(MediationSession)
        .where(col(MediationSession.case_id) == case_id)
        .order_by(col(MediationSession.starts_at)),
    )
    agreements = await _rows(
        session,
        select(Agreement)
        .where(col(Agreement.case_id) == case_id)
        .order_by(col(Agreement.recorded_at)),
    )
    history = await _rows(
        session,
        select(CaseTransition)
        .where(col(CaseTransition.case_id) == case_id)
        .order_by(col(CaseTransition.id)),
    )
    follow_ups = await _rows(
        session,
        select(FollowUp).where(col(FollowUp.case_id) == case_id).order_by(col(FollowUp.due_on)),
    )
    return {
        **case.model_dump(),
        # Free text may quote a phone or an ID number: clear to the case's mediators only.
        "summary": case.summary if clear else scrub_text(case.summary),
        "parties": [_party_view(p, clear) for p in parties],
        "mediators": [
            {"mediator_id": m.mediator_id, "lead": m.lead, "assigned_at": m.assigned_at}
            for m in assigned
        ],
        "sessions": [
            {**s.model_dump(), "notes": s.notes if clear else scrub_text(s.notes)} for s in sessions
        ],
        "agreements": [await agreement_view(session=session, agreement=a) for a in agreements],
        "follow_ups": [f.model_dump() for f in follow_ups],
        "history": [
            {
                "action": h.action,
                "from": h.from_status,
                "to": h.to_status,
                "actor": h.actor,
                "note": h.note,
                "at": h.at,
            }
            for h in history
        ],
        "allowed_actions": [a.value for a in allowed_actions(Status(case.status))],
    }


async def agreement_view(*, session: AsyncSession, agreement: Agreement) -> dict[str, Any]:
    """An agreement with its terms, signatures and follow-ups."""
    terms = await _rows(
        session,
        select(AgreementTerm)
        .where(col(AgreementTerm.agreement_id) == agreement.agreement_id)
        .order_by(col(AgreementTerm.term_id)),
    )
    signed = await _rows(
        session,
        select(col(Signature.party_id)).where(
            col(Signature.agreement_id) == agreement.agreement_id
        ),
    )
    follow_ups = await _rows(
        session,
        select(FollowUp)
        .where(col(FollowUp.agreement_id) == agreement.agreement_id)
        .order_by(col(FollowUp.due_on)),
    )
    return {
        **agreement.model_dump(),
        "terms": [t.model_dump() for t in terms],
        "signed_by": signed,
        "follow_ups": [f.model_dump() for f in follow_ups],
    }


async def case_stats(*, session: AsyncSession, principal: Principal) -> CaseStats:
    """Counts of the caller's cases (the committee: every case), without a case or a party."""
    query = select(
        col(Case.status),
        col(Case.level),
        col(Case.dispute_type),
        col(Case.ended_level),
        col(Case.outcome),
    )
    scope = scope_filter(principal)
    if scope is not None:
        query = query.where(scope)
    rows = (await session.execute(query)).all()
    kinds_query = select(col(Agreement.kind), func.count()).join(
        Case, col(Case.case_id) == col(Agreement.case_id)
    )
    if scope is not None:
        kinds_query = kinds_query.where(scope)
    kinds: dict[str, int] = {
        kind: n for kind, n in await session.execute(kinds_query.group_by(col(Agreement.kind)))
    }
    agreed = sum(
        1
        for r in rows
        if r.status in ("agreed", "court_confirmed", "fulfilled")
        or r.outcome in ("agreed", "fulfilled")
    )
    failed = sum(1 for r in rows if r.status == "failed" or r.outcome in ("failed", "referred"))
    return CaseStats(
        total=len(rows),
        by_status=dict(Counter(r.status for r in rows)),
        by_level=dict(Counter(r.level for r in rows)),
        by_dispute_type=dict(Counter(r.dispute_type for r in rows)),
        by_ended_level=dict(Counter(r.ended_level for r in rows if r.ended_level)),
        agreements={"written": kinds.get("written", 0), "verbal": kinds.get("verbal", 0)},
        success_rate=round(agreed / (agreed + failed), 4) if agreed + failed else None,
    )


async def list_mediators(*, session: AsyncSession, limit: int, offset: int) -> list[Mediator]:
    """The pool, by id."""
    return await _rows(
        session, select(Mediator).order_by(col(Mediator.mediator_id)).limit(limit).offset(offset)
    )


async def board_view(*, session: AsyncSession, post: BoardPost) -> dict[str, Any]:
    """A post with its claims and progress notes (no parties: the board is public)."""
    claims = await _rows(
        session,
        select(BoardClaim)
        .where(col(BoardClaim.board_id) == post.board_id)
        .order_by(col(BoardClaim.id)),
    )
    notes = await _rows(
        session,
        select(BoardNote)
        .where(col(BoardNote.board_id) == post.board_id)
        .order_by(col(BoardNote.id)),
    )
    return {
        **post.model_dump(),
        "claims": [
            {
                "claimant_id": c.claimant_id,
                "rank": c.rank,
                "co_claimant": c.co_claimant,
                "claimed_at": c.claimed_at,
            }
            for c in claims
        ],
        "notes": [{"author": n.author, "note": n.note, "at": n.at} for n in notes],
    }


async def list_board(
    *, session: AsyncSession, status: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Board posts, newest first."""
    query = select(BoardPost)
    if status is not None:
        query = query.where(col(BoardPost.status) == status)
    posts = await _rows(
        session,
        query.order_by(col(BoardPost.posted_at).desc(), col(BoardPost.board_id))
        .limit(limit)
        .offset(offset),
    )
    return [await board_view(session=session, post=p) for p in posts]
