"""Routes: the workflow. One route per row of ``actions.SIMPLE_ACTIONS`` (made here from the
table), one per centre decision on a return or an extension, plus grabbing, transfers,
extension requests and referral to mediation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from services.dispatch import actions, closing, grab, returns
from services.dispatch.access import roles_for
from services.dispatch.api.common import CallerDep, DispatchId
from services.dispatch.models import Dispatch, ExtensionRequest
from services.dispatch.schemas import (
    DispatchPublic,
    ExtensionBody,
    ExtensionPublic,
    NoteBody,
    ReasonBody,
    TransferBody,
)
from services.dispatch.workflow import Action

router = APIRouter(tags=["workflow"])
Route = Callable[..., Awaitable["ActionResult"]]


class ActionResult(BaseModel):
    """The dispatch acted on, any dispatches the action created, and any extension request."""

    dispatch: DispatchPublic
    created: list[DispatchPublic] = []
    extension: ExtensionPublic | None = None


def _result(
    d: Dispatch, created: list[Dispatch] | None = None, extension: ExtensionRequest | None = None
) -> ActionResult:
    return ActionResult(
        dispatch=DispatchPublic.model_validate(d),
        created=[DispatchPublic.model_validate(c) for c in created or ()],
        extension=ExtensionPublic.model_validate(extension) if extension is not None else None,
    )


def _path(segment: str) -> str:
    return f"/dispatches/{{dispatch_id}}/{segment}"


def _named(route: Route, name: str, doc: str) -> Route:
    route.__name__ = name
    route.__doc__ = doc
    return route


def _table_route(spec: actions.SimpleAction[Any]) -> Route:
    """The route of one table action, its body typed as the table says (optional or not)."""

    async def route(dispatch_id: DispatchId, caller: CallerDep, body: Any = None) -> ActionResult:
        return _result(
            await caller.act(actions.perform, spec=spec, dispatch_id=dispatch_id, body=body)
        )

    signature = inspect.signature(route)
    body = signature.parameters["body"].replace(
        annotation=spec.body | None if spec.optional else spec.body,
        default=None if spec.optional else inspect.Parameter.empty,
    )
    params = [p for p in signature.parameters.values() if p.name != "body"]
    # A required body must come before the parameters with defaults; none of these have any.
    route.__signature__ = signature.replace(parameters=[*params, body])  # type: ignore[attr-defined]
    return _named(route, spec.name, spec.doc)


def _decision_route(
    decide: Callable[..., Awaitable[tuple[Dispatch, Any]]],
    answer: Callable[[Dispatch, Any], ActionResult],
    *,
    approve: bool,
) -> Route:
    """The route of a centre's decision on a pending return or extension request."""

    async def route(
        dispatch_id: DispatchId, caller: CallerDep, body: NoteBody | None = None
    ) -> ActionResult:
        note = body.note if body else None
        d, outcome = await caller.act(decide, dispatch_id=dispatch_id, approve=approve, note=note)
        return answer(d, outcome)

    return route


_DECISIONS = (
    ("return/approve", "approve_return", returns.decide_return, True, _result,
     "Centre: approve a return; the ticket is re-routed without that department."),
    ("return/deny", "deny_return", returns.decide_return, False, lambda d, _: _result(d),
     "Centre: deny a return; the department carries on where it was."),
    ("extension/approve", "approve_extension", returns.decide_extension, True,
     lambda d, request: _result(d, extension=request),
     "Centre: approve the pending extension; the clock moves, the request is the audit."),
    ("extension/deny", "deny_extension", returns.decide_extension, False,
     lambda d, request: _result(d, extension=request),
     "Centre: deny the pending extension; the clock stays."),
)  # fmt: skip

for _spec in actions.SIMPLE_ACTIONS:
    router.add_api_route(
        _path(_spec.path),
        _table_route(_spec),
        methods=["POST"],
        response_model=ActionResult,
        openapi_extra=roles_for(_spec.action),
    )
for _segment, _name, _decide, _approve, _answer, _doc in _DECISIONS:
    router.add_api_route(
        _path(_segment),
        _named(_decision_route(_decide, _answer, approve=_approve), _name, _doc),
        methods=["POST"],
        response_model=ActionResult,
        # approving and denying are the same centre decision
        openapi_extra=roles_for(Action.RETURN_APPROVE),
    )


@router.post(
    _path("grab"), response_model=ActionResult, name="grab", openapi_extra=roles_for(Action.GRAB)
)
async def grab_dispatch(
    dispatch_id: DispatchId, caller: CallerDep, body: NoteBody | None = None
) -> ActionResult:
    """抢着办: an eligible department grabs a pooled ticket (the first one wins)."""
    note = body.note if body else None
    return _result(await caller.act(grab.grab, dispatch_id=dispatch_id, note=note))


@router.post(
    _path("transfer"), response_model=ActionResult, openapi_extra=roles_for(Action.TRANSFER)
)
async def transfer(dispatch_id: DispatchId, body: TransferBody, caller: CallerDep) -> ActionResult:
    """转办: hand the dispatch to another department; a new dispatch takes over."""
    d, new = await caller.act(
        returns.transfer,
        dispatch_id=dispatch_id,
        to_department=body.to_department,
        reason=body.reason,
    )
    return _result(d, [new])


@router.post(
    _path("extension"),
    response_model=ActionResult,
    openapi_extra=roles_for(Action.EXTENSION_REQUEST),
)
async def request_extension(
    dispatch_id: DispatchId, body: ExtensionBody, caller: CallerDep
) -> ActionResult:
    """Ask the centre for more time on one clock (resolution by default)."""
    d, request = await caller.act(returns.request_extension, dispatch_id=dispatch_id, body=body)
    return _result(d, extension=request)


@router.post(
    _path("mediation"), response_model=ActionResult, openapi_extra=roles_for(Action.PROGRESS)
)
async def request_mediation(
    dispatch_id: DispatchId, body: ReasonBody, caller: CallerDep
) -> ActionResult:
    """Refer the dispute to mediation; a mediated agreement will complete the dispatch."""
    d = await caller.act(closing.request_mediation, dispatch_id=dispatch_id, reason=body.reason)
    return _result(d)
