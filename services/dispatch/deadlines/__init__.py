"""Time limits, in one place: where a clock is defined, computed, stored and enforced.

- ``profiles.py`` — the profiles and their clocks (``data/profiles.yaml``: standard, urgent,
  enterprise_2115, mediation, whistle), durations and office hours;
- ``clocks.py`` — the arithmetic: working hours and working days on ``shared/workcalendar.py``,
  deadlines of a profile, extensions, missed clocks;
- ``timing.py`` — ``Deadlines`` (``ctx.deadlines``): that arithmetic on the app's calendar, with
  the weekday fallback counted and logged;
- ``rows.py`` — a dispatch's clocks in the database, started at assignment and stopped by the
  actions ``workflow.CLOCK_STOPPED_BY`` names;
- ``scheduler.py`` with ``escalation.py``, ``grab_expiry.py`` and ``paging.py`` — enforcement:
  missed clocks escalate up the tiers, unclaimed grab offers are assigned and supervised.
"""
