"""The committee fixture: twelve tickets, three mediation cases and a proactive dispatch over two
months, in two towns of Yuecheng district, handled by four departments.

T1  Beihai G1, A (town): received Mon 12 Oct 09:00, done Tue 13 Oct 15:00 (1.25 wd); satisfied
T2  Beihai G1, A: signed late, extension approved, done Thu 15 Oct 10:00 (3.00 wd); basically
T3  Beihai G2, A then B (village): return approved, re-routed; a callback before completion
    (kept, superseded), then after: unresolved, dissatisfied; done Fri 16 Oct 09:00 (4.00 wd)
T4  Beihai G2, B: street lighting by web; contact late, escalated, done late Mon 19 Oct (4.00)
T5  Tashan G1, C (town): whistle (D reports on time, C late); done Fri 16 Oct 09:00 (2.00)
T6  Tashan G1, C then D (district): transferred; D done Fri 16 Oct 17:00 (2.29 wd); satisfied
T7  Tashan G2, C: mediated closure Tue 20 Oct 11:00 (4.00 wd); basically satisfied
T8  Tashan G2, C: repeat of T7, enterprise; still open; a callback (kept, not counted)
T9, T10   Beihai G1, A: November, 1.00 and 2.00 wd; satisfied, dissatisfied
T11, T12  Tashan G1, C: November, 1.00 and 1.00 wd; satisfied, basically satisfied

Mediation: K1 (from T7) agreed 20 Oct; K2 walk-in failed 23 Oct; K3 walk-in withdrawn 23 Oct.
Proactive: P-1 to C in October (counted apart). Every callback is received after its ticket's
completion unless said otherwise.
"""

from __future__ import annotations

from datetime import datetime

from shared.events import dispatch as d
from shared.events import intake as i
from shared.events import mediation as m
from shared.events.base import Event
from shared.workcalendar import SHANGHAI

DISTRICT = "339902"
BEIHAI, TASHAN = "339902001", "339902002"
SHIXING = "339902001001"  # Beihai's village (community)
BH1, BH2 = "339902001001001", "339902001001002"
TS1, TS2 = "339902002001001", "339902002001002"
PHONE, WEB = "hotline-12345-phone", "hotline-12345-web"
A, B, C, D = "TOWN-BH", "VIL-SX", "TOWN-TS", "DIST-WATER"
TIERS = {A: "town", B: "village", C: "town", D: "district"}


def sh(month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


class Script:
    """Builds one ticket's events with short calls; ids are prefixed per run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: list[Event] = []

    def tid(self, name: str) -> str:
        if name.startswith("P-"):  # proactive dispatches keep dispatch's id prefix
            return f"P-{self.prefix}{name[2:]}"
        return f"{self.prefix}{name}"

    def received(
        self,
        name: str,
        at: datetime,
        grid: str,
        *,
        category: str = "0103",
        channel: str = PHONE,
        repeat_of: str | None = None,
        enterprise: bool = False,
    ) -> None:
        self.events.append(
            i.TicketReceived(
                ticket_id=self.tid(name),
                channel=channel,
                received_at=at,
                occurred_at=at,
                title="t",
                content="c",
                category_code=category,
                location=i.Location(grid_code=grid),
                repeat_of=self.tid(repeat_of) if repeat_of else None,
                is_enterprise=enterprise,
            )
        )

    def assigned(
        self,
        name: str,
        dispatch: str,
        dept: str,
        at: datetime,
        *,
        mode: str = "assign",
        category: str = "0103",
        line: str = "normal",
    ) -> None:
        self.events.append(
            d.TicketAssigned(
                ticket_id=self.tid(name),
                dispatch_id=self.tid(dispatch),
                department_code=dept,
                department_tier=TIERS[dept],
                category_code=category,
                channel=PHONE,
                occurred_at=at,
                mode=mode,
                handling_line=line,  # type: ignore[arg-type]
            )
        )

    def signed(
        self, name: str, dispatch: str, dept: str, at: datetime, *, late: bool = False
    ) -> None:
        self.events.append(
            d.DispatchSigned(
                ticket_id=self.tid(name),
                dispatch_id=self.tid(dispatch),
                department_code=dept,
                late=late,
                occurred_at=at,
            )
        )

    def contacted(
        self, name: str, dispatch: str, dept: str, at: datetime, *, late: bool = False
    ) -> None:
        self.events.append(
            d.CitizenContacted(
                ticket_id=self.tid(name),
                dispatch_id=self.tid(dispatch),
                department_code=dept,
                late=late,
                occurred_at=at,
            )
        )

    def completed(
        self,
        name: str,
        dispatch: str,
        dept: str,
        at: datetime,
        *,
        late: bool = False,
        via: str = "department",
    ) -> None:
        self.events.append(
            d.DispatchCompleted(
                ticket_id=self.tid(name),
                dispatch_id=self.tid(dispatch),
                department_code=dept,
                result="done",
                late=late,
                via=via,
                occurred_at=at,  # type: ignore[arg-type]
            )
        )

    def callback(
        self, name: str, revision: int, at: datetime, *, resolved: bool, satisfaction: str
    ) -> None:
        self.events.append(
            i.FeedbackReceived(
                ticket_id=self.tid(name),
                feedback_id=f"{self.tid(name)}-R{revision}",
                revision=revision,
                resolved=resolved,
                satisfaction=satisfaction,  # type: ignore[arg-type]
                received_at=at,
                occurred_at=at,
            )
        )

    def simple(
        self,
        name: str,
        dispatch: str,
        dept: str,
        received: datetime,
        done: datetime,
        grid: str,
        *,
        resolved: bool,
        satisfaction: str,
    ) -> None:
        """Received, assigned, signed and contacted on time, completed on time, called back."""
        self.received(name, received, grid)
        self.assigned(name, dispatch, dept, received.replace(minute=30))
        self.signed(name, dispatch, dept, received.replace(hour=received.hour + 1))
        self.contacted(name, dispatch, dept, received.replace(hour=received.hour + 2))
        self.completed(name, dispatch, dept, done)
        self.callback(
            name, 1, done.replace(hour=done.hour + 1), resolved=resolved, satisfaction=satisfaction
        )


def committee_events(prefix: str) -> list[Event]:
    """Every event of the fixture, in story order (tests shuffle them)."""
    s = Script(prefix)
    s.simple(
        "T1", "A1", A, sh(10, 12, 9), sh(10, 13, 15), BH1, resolved=True, satisfaction="satisfied"
    )
    # T2: signed late, an extension, completed on time (the extended deadline).
    s.received("T2", sh(10, 12, 10), BH1)
    s.assigned("T2", "A2", A, sh(10, 12, 10, 30))
    s.signed("T2", "A2", A, sh(10, 12, 15), late=True)
    s.contacted("T2", "A2", A, sh(10, 12, 16))
    s.events.append(
        d.ExtensionDecided(
            ticket_id=s.tid("T2"),
            dispatch_id=s.tid("A2"),
            department_code=A,
            request_id=1,
            clock="resolution",
            approved=True,
            old_due_at=sh(10, 14),
            new_due_at=sh(10, 16),
            occurred_at=sh(10, 13),
        )
    )
    s.completed("T2", "A2", A, sh(10, 15, 10))
    s.callback("T2", 1, sh(10, 15, 12), resolved=True, satisfaction="basically_satisfied")
    # T3: A signs, asks to return; approved; re-routed to B, who closes it.
    s.received("T3", sh(10, 12, 9), BH2)
    s.assigned("T3", "A3", A, sh(10, 12, 9, 30))
    s.signed("T3", "A3", A, sh(10, 12, 10))
    s.events.append(
        d.ReturnDecided(
            ticket_id=s.tid("T3"),
            dispatch_id=s.tid("A3"),
            department_code=A,
            approved=True,
            occurred_at=sh(10, 12, 14),
        )
    )
    s.assigned("T3", "B3", B, sh(10, 12, 15), mode="reroute")
    s.signed("T3", "B3", B, sh(10, 12, 16))
    s.contacted("T3", "B3", B, sh(10, 12, 17))
    s.callback("T3", 1, sh(10, 14, 9), resolved=True, satisfaction="satisfied")  # too early
    s.completed("T3", "B3", B, sh(10, 16, 9))
    s.callback("T3", 2, sh(10, 16, 15), resolved=False, satisfaction="dissatisfied")
    # T4: street lighting by web; contact late, escalated, completed late.
    s.received("T4", sh(10, 13, 9), BH2, category="0102", channel=WEB)
    s.assigned("T4", "B4", B, sh(10, 13, 9, 30), category="0102")
    s.signed("T4", "B4", B, sh(10, 13, 10))
    s.contacted("T4", "B4", B, sh(10, 14, 18), late=True)
    s.events.append(
        d.DispatchEscalated(
            ticket_id=s.tid("T4"),
            dispatch_id=s.tid("B4"),
            department_code=B,
            clock="resolution",
            level=1,
            target_department_code=A,
            due_at=sh(10, 16, 17),
            occurred_at=sh(10, 16, 17),
        )
    )
    s.completed("T4", "B4", B, sh(10, 19, 9), late=True)
    s.callback("T4", 1, sh(10, 19, 11), resolved=True, satisfaction="satisfied")
    # T5: a whistle summons D and C; D reports on time, C late.
    s.simple(
        "T5", "C5", C, sh(10, 14, 9), sh(10, 16, 9), TS1, resolved=True, satisfaction="satisfied"
    )
    s.events.append(
        d.WhistleBlown(
            ticket_id=s.tid("T5"),
            whistle_id=s.tid("W5"),
            blown_by_role="grid_worker",
            reason="needs the water company",
            occurred_at=sh(10, 14, 12),
            summons=(
                d.Summons(
                    department_code=D, dispatch_id=s.tid("S5D"), report_due_at=sh(10, 14, 14)
                ),
                d.Summons(
                    department_code=C, dispatch_id=s.tid("S5C"), report_due_at=sh(10, 14, 14)
                ),
            ),
        )
    )
    for dispatch, dept, on_time in (("S5D", D, True), ("S5C", C, False)):
        s.events.append(
            d.DepartmentReported(
                ticket_id=s.tid("T5"),
                whistle_id=s.tid("W5"),
                dispatch_id=s.tid(dispatch),
                department_code=dept,
                report_due_at=sh(10, 14, 14),
                reported_at=sh(10, 14, 13 if on_time else 16),
                on_time=on_time,
                occurred_at=sh(10, 14, 13 if on_time else 16),
            )
        )
    # T6: C signs, transfers to D; D closes it.
    s.received("T6", sh(10, 14, 10), TS1)
    s.assigned("T6", "C6", C, sh(10, 14, 10, 30))
    s.signed("T6", "C6", C, sh(10, 14, 11))
    s.events.append(
        d.DispatchTransferred(
            ticket_id=s.tid("T6"),
            dispatch_id=s.tid("C6"),
            from_department=C,
            to_department=D,
            new_dispatch_id=s.tid("D6"),
            reason="water mains are the district's",
            occurred_at=sh(10, 14, 14),
        )
    )
    s.assigned("T6", "D6", D, sh(10, 14, 14), mode="transfer")
    s.signed("T6", "D6", D, sh(10, 14, 15))
    s.contacted("T6", "D6", D, sh(10, 14, 16))
    s.completed("T6", "D6", D, sh(10, 16, 17))
    s.callback("T6", 1, sh(10, 19, 9), resolved=True, satisfaction="satisfied")
    # T7: closed by a mediated agreement (case K1).
    s.received("T7", sh(10, 14, 11), TS2)
    s.assigned("T7", "C7", C, sh(10, 14, 11, 30))
    s.signed("T7", "C7", C, sh(10, 14, 12))
    s.contacted("T7", "C7", C, sh(10, 14, 13))
    s.completed("T7", "C7", C, sh(10, 20, 11), via="mediation")
    s.callback("T7", 1, sh(10, 21, 9), resolved=True, satisfaction="basically_satisfied")
    k1 = dict(case_id=s.tid("K1"), ticket_id=s.tid("T7"))
    s.events += [
        m.CaseOpened(**k1, area_code="339902002001", origin="dispatch", occurred_at=sh(10, 15)),
        m.AgreementReached(**k1, occurred_at=sh(10, 20, 10)),
        m.CaseClosed(**k1, outcome="agreed", level="village", occurred_at=sh(10, 20, 11)),
    ]
    # T8: a repeat of T7 from an enterprise, still open, with a callback (not counted).
    s.received("T8", sh(10, 15, 9), TS2, repeat_of="T7", enterprise=True)
    s.assigned("T8", "C8", C, sh(10, 15, 9, 30))
    s.signed("T8", "C8", C, sh(10, 15, 10))
    s.callback("T8", 1, sh(10, 20, 9), resolved=True, satisfaction="satisfied")
    # Walk-ins at Tashan's centre: one failed, one withdrawn.
    for case, outcome in (("K2", "failed"), ("K3", "withdrawn")):
        s.events += [
            m.CaseOpened(
                case_id=s.tid(case), area_code=TASHAN, origin="walk_in", occurred_at=sh(10, 21)
            ),
            m.CaseClosed(
                case_id=s.tid(case),
                outcome=outcome,
                area_code=TASHAN,  # type: ignore[arg-type]
                occurred_at=sh(10, 23),
            ),
        ]
    # A proactive dispatch: counted apart from the appeals.
    s.assigned("P-1", "DP1", C, sh(10, 20))
    # November.
    s.simple(
        "T9", "A9", A, sh(11, 2, 9), sh(11, 3, 9), BH1, resolved=True, satisfaction="satisfied"
    )
    s.simple(
        "T10",
        "A10",
        A,
        sh(11, 2, 10),
        sh(11, 4, 10),
        BH1,
        resolved=True,
        satisfaction="dissatisfied",
    )
    s.simple(
        "T11", "C11", C, sh(11, 3, 9), sh(11, 4, 9), TS1, resolved=True, satisfaction="satisfied"
    )
    s.simple(
        "T12",
        "C12",
        C,
        sh(11, 3, 10),
        sh(11, 4, 10),
        TS1,
        resolved=True,
        satisfaction="basically_satisfied",
    )
    return s.events
