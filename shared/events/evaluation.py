"""Events emitted by evaluation: proactive-work proposals from the hot-spot analysis (治未病)."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from shared.events.base import Event, register


@register
class ProactiveWorkProposed(Event):
    """The hot-spot analysis proposes work before anyone calls (未诉先办); dispatch turns it into
    a proactive dispatch to the department that owns the category and area, on its own line,
    counted apart from appeals."""

    event_type: ClassVar[str] = "evaluation.proactive.proposed"
    topic: ClassVar[str] = "evaluation.events"
    source: ClassVar[str] = "/fengqiao/evaluation"

    proposal_id: str
    category_code: str
    area_code: str
    reason: str
    act_by: date | None = None
    # The evidence in numbers: this period's count, the baseline, the test and its score.
    observed: int = 0
    expected: float = 0.0
    test: str = ""

    def partition_key(self) -> str:
        return self.proposal_id
