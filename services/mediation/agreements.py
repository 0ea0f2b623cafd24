"""Agreements (written or verbal), their terms and signatures, court confirmation (司法确认),
and the follow-up visits (回访) that track each term to fulfilled or breached.

An agreement binds named parties of the case; each term has an obligor among them, an action or
an amount (a ``Decimal``), and a due date no earlier than the agreement. A breach reopens the
case or refers it elsewhere; a case breached ``board_breaches`` times goes on the backlog board.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.mediation import board
from services.mediation.context import MediationContext
from services.mediation.lifecycle import Action, IllegalTransition, Status
from services.mediation.models import Agreement, AgreementTerm, Case, FollowUp, Signature
from services.mediation.moves import close, refer
from services.mediation.parties import case_parties
from services.mediation.schemas import AgreementIn, CourtBody, FollowUpIn, FollowUpRecord
from services.mediation.service import (
    actor_of,
    level_of,
    load_case,
    transition,
)
from shared.auth import Principal
from shared.errors import Conflict, Invalid, NotFound
from shared.events.mediation import (
    AgreementBreached,
    AgreementFulfilled,
    AgreementReached,
    CourtConfirmation,
)
from shared.pii import scrub_text
from shared.workcalendar import to_shanghai


def _today(ctx: MediationContext) -> Any:
    return to_shanghai(ctx.now()).date()


def _check_agreement(body: AgreementIn, party_ids: set[str], today: Any) -> list[dict[str, str]]:
    """Every problem with the agreement, each naming its field (empty when it is sound)."""
    problems: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        problems.append({"field": field, "message": message})

    if not body.party_ids:
        problem("party_ids", "an agreement binds at least one party of the case")
    for i, p in enumerate(body.party_ids):
        if p not in party_ids:
            problem(f"party_ids.{i}", f"{p} is not a party of the case")
    if body.agreed_on > today:
        problem("agreed_on", f"{body.agreed_on} is in the future")
    if body.kind == "written" and not body.signed_by:
        problem("signed_by", "a written agreement carries the parties' signatures")
    for i, p in enumerate(body.signed_by):
        if p not in body.party_ids:
            problem(f"signed_by.{i}", f"{p} is not bound by the agreement")
    if not body.terms:
        problem("terms", "an agreement has at least one term")
    for i, term in enumerate(body.terms):
        if term.obligor_party_id not in body.party_ids:
            problem(
                f"terms.{i}.obligor_party_id",
                f"{term.obligor_party_id} is not bound by the agreement",
            )
        if not term.action and term.amount is None:
            problem(f"terms.{i}", "a term names an action or an amount")
        if term.due_on < body.agreed_on:
            problem(
                f"terms.{i}.due_on",
                f"due {term.due_on}, before the agreement date {body.agreed_on}",
            )
    return problems


async def record_agreement(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    case_id: str,
    body: AgreementIn,
) -> Agreement:
    """Record the agreement the parties reached; the first follow-up visit is scheduled with it."""
    case = await load_case(session=session, principal=principal, case_id=case_id)
    if Status(case.status) not in (Status.ACCEPTED, Status.IN_MEDIATION):
        raise IllegalTransition(Status(case.status), Action.AGREE)
    parties = {p.party_id for p in await case_parties(session=session, case_id=case_id)}
    problems = _check_agreement(body, parties, _today(ctx))
    if problems:
        first = problems[0]
        raise Invalid(
            f"{first['field']}: {first['message']}",
            field=first["field"],
            problems=[_Problem(**p) for p in problems],
        )
    now = ctx.now()
    agreement = Agreement(
        agreement_id=f"A-{uuid.uuid4().hex[:12].upper()}",
        case_id=case_id,
        kind=body.kind,
        agreed_on=body.agreed_on,
        summary=body.summary,
        party_ids=list(dict.fromkeys(body.party_ids)),
        recorded_by=actor_of(principal),
        recorded_at=now,
    )
    session.add(agreement)
    for i, term in enumerate(body.terms):
        session.add(
            AgreementTerm(
                term_id=f"{agreement.agreement_id}-T{i + 1}",
                agreement_id=agreement.agreement_id,
                obligor_party_id=term.obligor_party_id,
                action=term.action,
                amount=term.amount,
                due_on=term.due_on,
            )
        )
    for party_id in dict.fromkeys(body.signed_by):
        session.add(
            Signature(agreement_id=agreement.agreement_id, party_id=party_id, signed_at=now)
        )
    session.add(
        FollowUp(
            follow_up_id=f"F-{uuid.uuid4().hex[:12].upper()}",
            case_id=case_id,
            agreement_id=agreement.agreement_id,
            due_on=ctx.working_day_after(
                max(body.agreed_on, _today(ctx)), ctx.settings.follow_up_working_days
            ),
        )
    )
    await session.flush()
    await transition(
        session=session, ctx=ctx, case=case, action=Action.AGREE, actor=actor_of(principal)
    )
    await ctx.outbox.add(
        session,
        AgreementReached(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            agreement_id=agreement.agreement_id,
            kind=body.kind,
            summary=scrub_text(body.summary)[:500],
            level=level_of(case),
            area_code=case.area_code,
            terms=len(body.terms),
            occurred_at=now,
        ),
    )
    return agreement


class _Problem:
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


async def _load_agreement(
    session: AsyncSession, principal: Principal, agreement_id: str
) -> tuple[Agreement, Case]:
    agreement = await session.get(Agreement, agreement_id, with_for_update=True)
    if agreement is None:
        raise NotFound(f"no agreement {agreement_id}")
    case = await load_case(session=session, principal=principal, case_id=agreement.case_id)
    return agreement, case


# Court confirmation: which status each decision may follow.
_COURT_FROM = {"requested": {"none", "refused"}, "granted": {"requested"}, "refused": {"requested"}}


async def court_confirmation(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    agreement_id: str,
    body: CourtBody,
) -> Agreement:
    """Record judicial confirmation requested, granted (the case is court-confirmed) or refused."""
    agreement, case = await _load_agreement(session, principal, agreement_id)
    if agreement.kind != "written":
        raise Conflict(
            f"agreement {agreement_id} is verbal; a court confirms written agreements only",
            current=agreement.court_status,
        )
    if agreement.court_status not in _COURT_FROM[body.status]:
        raise Conflict(
            f"court confirmation is {agreement.court_status}; cannot record it {body.status}",
            current=agreement.court_status,
        )
    if body.status == "requested" and not (body.court or agreement.court):
        raise Invalid("name the court asked to confirm the agreement", field="court")
    if body.status == "granted" and body.court_reference is None:
        raise Invalid(
            "a granted confirmation carries the court's reference", field="court_reference"
        )
    if body.status == "granted":
        await transition(
            session=session, ctx=ctx, case=case, action=Action.CONFIRM, actor=actor_of(principal)
        )
    elif Status(case.status) is not Status.AGREED:
        raise IllegalTransition(Status(case.status), Action.CONFIRM)
    agreement.court_status = body.status
    agreement.court = body.court or agreement.court
    agreement.court_reference = body.court_reference or agreement.court_reference
    await ctx.outbox.add(
        session,
        CourtConfirmation(
            case_id=case.case_id,
            ticket_id=case.ticket_id,
            agreement_id=agreement_id,
            status=body.status,
            court=agreement.court,
            court_reference=agreement.court_reference,
            occurred_at=ctx.now(),
        ),
    )
    return agreement


async def schedule_follow_up(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    agreement_id: str,
    body: FollowUpIn,
) -> FollowUp:
    """Schedule another follow-up visit of an agreement still being honoured."""
    agreement, case = await _load_agreement(session, principal, agreement_id)
    if Status(case.status) not in (Status.AGREED, Status.COURT_CONFIRMED):
        raise IllegalTransition(
            Status(case.status),
            Action.FULFIL,
            f"cannot schedule a follow-up of a case that is {case.status}",
        )
    if body.due_on < agreement.agreed_on:
        raise Invalid(
            f"due {body.due_on}, before the agreement date {agreement.agreed_on}", field="due_on"
        )
    row = FollowUp(
        follow_up_id=f"F-{uuid.uuid4().hex[:12].upper()}",
        case_id=case.case_id,
        agreement_id=agreement_id,
        due_on=body.due_on,
    )
    session.add(row)
    await session.flush()
    return row


async def record_follow_up(
    *,
    session: AsyncSession,
    ctx: MediationContext,
    principal: Principal,
    follow_up_id: str,
    body: FollowUpRecord,
) -> FollowUp:
    """Record a visit: each checked term fulfilled or breached. Every term fulfilled closes the
    case as fulfilled; a breach reopens it or refers it (``on_breach``)."""
    visit = await session.get(FollowUp, follow_up_id, with_for_update=True)
    if visit is None:
        raise NotFound(f"no follow-up {follow_up_id}")
    agreement, case = await _load_agreement(session, principal, visit.agreement_id)
    if visit.status != "scheduled":
        raise Conflict(f"follow-up {follow_up_id} is already recorded", current=visit.status)
    if Status(case.status) not in (Status.AGREED, Status.COURT_CONFIRMED):
        raise IllegalTransition(
            Status(case.status),
            Action.FULFIL,
            f"cannot record a follow-up of a case that is {case.status}",
        )
    terms = {
        t.term_id: t
        for t in (
            await session.execute(
                select(AgreementTerm).where(
                    col(AgreementTerm.agreement_id) == agreement.agreement_id
                )
            )
        ).scalars()
    }
    for i, check in enumerate(body.terms):
        term = terms.get(check.term_id)
        if term is None:
            raise Invalid(
                f"{check.term_id} is not a term of {agreement.agreement_id}",
                field=f"terms.{i}.term_id",
            )
        if term.status != "pending":
            raise Conflict(f"term {check.term_id} is already {term.status}", current=term.status)
    now = ctx.now()
    for check in body.terms:
        terms[check.term_id].status = check.status
        terms[check.term_id].checked_at = now
    visit.status = "done"
    visit.visited_at = now
    visit.note = body.note
    actor = actor_of(principal)
    breached = [c.term_id for c in body.terms if c.status == "breached"]
    if breached:
        after = await transition(
            session=session, ctx=ctx, case=case, action=Action.BREACH, actor=actor, note=body.note
        )
        await ctx.outbox.add(
            session,
            AgreementBreached(
                case_id=case.case_id,
                ticket_id=case.ticket_id,
                agreement_id=agreement.agreement_id,
                term_id=breached[0],
                action=body.on_breach,
                breaches=after.breaches,
                occurred_at=now,
            ),
        )
        if after.breaches >= ctx.settings.board_breaches:
            await board.post_case(
                session=session,
                ctx=ctx,
                case=case,
                reason=f"agreement breached {after.breaches} times",
            )
        if body.on_breach == "reopened":
            await transition(session=session, ctx=ctx, case=case, action=Action.REOPEN, actor=actor)
        else:
            await refer(
                session=session,
                ctx=ctx,
                case=case,
                referral=body.referral,
                reason="agreement breached",
                actor=actor,
            )
    elif all(t.status == "fulfilled" for t in terms.values()):
        await transition(session=session, ctx=ctx, case=case, action=Action.FULFIL, actor=actor)
        await ctx.outbox.add(
            session,
            AgreementFulfilled(
                case_id=case.case_id,
                ticket_id=case.ticket_id,
                agreement_id=agreement.agreement_id,
                occurred_at=now,
            ),
        )
        await close(session=session, ctx=ctx, case=case, actor=actor)
    return visit
