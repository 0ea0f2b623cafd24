"""Who may see and act on a dispatch (the policy is written up in docs/security.md).

- A department (or a grid worker's unit) sees and acts on its own dispatches only, plus pooled
  dispatches it is eligible to grab. Another department's dispatch answers **403** for reads and
  writes alike; an id that does not exist answers 404.
- A centre acts on dispatches whose department lies in its jurisdiction: a centre principal that
  names no department is the city centre (everything); one that names its centre unit
  (``X-Fengqiao-Department: TOWN-ZZ-…``) is scoped to that unit's area subtree.
- The committee reads everything and writes nothing; mediators read the mediation line;
  operators may do anything (the embedded default's open mode acts as operator).
"""

from __future__ import annotations

from collections.abc import Collection

from services.dispatch.models import Dispatch
from services.dispatch.organisation.chart import Department, OrgChart
from services.dispatch.workflow import Action, Actor, actor_of
from shared.auth import Principal, Role, checks_roles, public
from shared.errors import Forbidden
from shared.geo import Tier

DEPARTMENT_ROLES = frozenset({Role.DEPARTMENT, Role.GRID_WORKER})
# The roles each route admits at all (operators always); the checks below then decide per
# dispatch and unit. Routes declare these with ``checks_roles`` so the OpenAPI document says so.
ACTOR_ROLES: dict[Actor, tuple[Role, ...]] = {
    Actor.DEPARTMENT: (Role.DEPARTMENT, Role.GRID_WORKER),
    Actor.CENTRE: (Role.CENTRE,),
    Actor.SYSTEM: (),
}
DISPATCH_READERS = (Role.DEPARTMENT, Role.GRID_WORKER, Role.CENTRE, Role.COMMITTEE, Role.MEDIATOR)
QUEUE_READERS = (Role.DEPARTMENT, Role.GRID_WORKER, Role.CENTRE, Role.COMMITTEE)
WHISTLE_BLOWERS = (Role.DEPARTMENT, Role.GRID_WORKER, Role.CENTRE)
WHISTLE_READERS = DISPATCH_READERS  # every role but the hotline
REFERENCE_DATA = public(
    "the city's organisation, routing rules, time-limit profiles and working calendar are "
    "published reference data: no ticket, no citizen"
)


def roles_for(action: Action) -> dict[str, object]:
    """``openapi_extra`` declaring the roles that may take ``action``."""
    return checks_roles(*ACTOR_ROLES[actor_of(action)])


def centre_scope(principal: Principal, org: OrgChart) -> Department | None:
    """The centre unit a centre principal is scoped to; None for the city-wide centre."""
    if principal.department_code is None:
        return None
    unit = org.departments.get(principal.department_code)
    if unit is None:
        raise Forbidden(f"centre {principal.department_code!r} is not an active department")
    return unit


def within(org: OrgChart, area_code: str | None, scope: Department | None) -> bool:
    """True when an area lies in a centre's jurisdiction (an unknown area: city centres only)."""
    if scope is None:
        return True
    if area_code is None or area_code not in org.tree.by_code:
        return scope.tier is Tier.CITY
    return org.tree.is_within(area_code, scope.jurisdiction)


def dispatch_area(d: Dispatch, org: OrgChart) -> str | None:
    """Where a dispatch sits for jurisdiction checks: its department's jurisdiction, else the
    ticket's area (pooled dispatches have no department yet)."""
    if d.department_code is not None and d.department_code in org.departments:
        return org.departments[d.department_code].jurisdiction
    return d.area_code


def authorize(
    principal: Principal,
    d: Dispatch,
    action: Action,
    actor: Actor,
    org: OrgChart,
    *,
    offered: Collection[str] = (),
) -> None:
    """Raise Forbidden unless the principal may take ``action`` on ``d``."""
    role = principal.role
    if role is Role.OPERATOR:
        return
    name = action.value.replace("_", " ")
    if actor is Actor.DEPARTMENT:
        if role not in DEPARTMENT_ROLES or not principal.department_code:
            raise Forbidden(f"{name} is taken by the handling department, not by role {role}")
        mine = principal.department_code
        if d.department_code == mine:
            return
        if d.department_code is None and mine in offered:
            return
        if d.department_code is None:
            raise Forbidden(f"department {mine} is not eligible for dispatch {d.dispatch_id}")
        raise Forbidden(f"dispatch {d.dispatch_id} belongs to another department")
    if actor is Actor.CENTRE:
        if role is not Role.CENTRE:
            raise Forbidden(f"{name} is a centre action; role {role} may not take it")
        scope = centre_scope(principal, org)
        if not within(org, dispatch_area(d, org), scope):
            assert scope is not None
            raise Forbidden(
                f"dispatch {d.dispatch_id} is outside the jurisdiction of centre {scope.code}"
            )
        return
    raise Forbidden(f"{name} is taken by the system only")


def authorize_read(
    principal: Principal, d: Dispatch, org: OrgChart, *, offered: Collection[str] = ()
) -> None:
    """Raise Forbidden unless the principal may read ``d``."""
    role = principal.role
    if role in (Role.OPERATOR, Role.COMMITTEE):
        return
    if role is Role.CENTRE:
        scope = centre_scope(principal, org)
        if within(org, dispatch_area(d, org), scope):
            return
        raise Forbidden(f"dispatch {d.dispatch_id} is outside this centre's jurisdiction")
    if role in DEPARTMENT_ROLES and principal.department_code:
        if d.department_code == principal.department_code:
            return
        if d.department_code is None and principal.department_code in offered:
            return
        raise Forbidden(f"dispatch {d.dispatch_id} belongs to another department")
    if role is Role.MEDIATOR and d.handling_line == "mediation":
        return
    raise Forbidden(f"role {role} may not read dispatch {d.dispatch_id}")
