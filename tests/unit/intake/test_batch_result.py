"""A batch file's answer, written from plain dicts, is the documented model's own dump."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.intake.models import BatchAccepted, BatchResult, BatchRowResult, batch_row_result

TEXT = st.text(max_size=20)  # any code point: quotes, backslashes, controls, CJK, astral
MAYBE = st.none() | TEXT


@st.composite
def row_results(draw: st.DrawFn, number: int) -> dict[str, Any]:
    status = draw(st.sampled_from(["created", "existing", "rejected"]))
    if status == "rejected":
        errors = draw(st.lists(st.fixed_dictionaries({"field": TEXT, "message": TEXT}), min_size=1))
        return batch_row_result(number, status, external_id=draw(MAYBE), errors=errors)
    fields = {
        "ticket_id": draw(TEXT),
        "external_id": draw(MAYBE),
        "category_code": draw(MAYBE),
        "repeat_of": draw(MAYBE),
        "repeat_count": draw(st.integers(0, 10**6)),
    }
    if status == "created":  # as accept_batch writes a created row: the dict written out
        return {"row": number, "status": status, **fields, "errors": ()}
    return batch_row_result(number, status, **fields)


@st.composite
def batch_results(draw: st.DrawFn) -> BatchResult:
    count = draw(st.integers(0, 6))
    results = [draw(row_results(n + 2)) for n in range(count)]
    tally = {s: sum(r["status"] == s for r in results) for s in ("created", "existing", "rejected")}
    return BatchResult(draw(TEXT), results=results, **tally)


@settings(max_examples=300)
@given(batch_results())
@example(
    BatchResult(
        "grid-patrol-batch",
        created=1,
        existing=0,
        rejected=1,
        results=[
            {
                "row": 2,
                "status": "created",
                "ticket_id": "T2026120700000001",
                "external_id": 'B1-"引号"\\\n\u2028',
                "category_code": "0101",
                "repeat_of": None,
                "repeat_count": 0,
                "errors": (),
            },
            batch_row_result(3, "rejected", errors=[{"field": "title", "message": "缺少"}]),
        ],
    )
)
def test_the_answer_is_the_models_dump(result: BatchResult) -> None:
    fields = {
        "channel": result.channel,
        "rows": result.rows,
        "created": result.created,
        "existing": result.existing,
        "rejected": result.rejected,
        "results": result.results,
    }
    model = BatchAccepted.model_validate(fields)
    assert result.json() == model.model_dump_json().encode()
    assert result.model() == model


def test_a_row_result_holds_every_field_of_the_model_in_its_order() -> None:
    assert list(batch_row_result(2, "rejected")) == list(BatchRowResult.model_fields)
    assert orjson.loads(BatchResult("c", 0, 0, 1, [batch_row_result(2, "rejected")]).json()) == {
        "channel": "c",
        "rows": 1,
        "created": 0,
        "existing": 0,
        "rejected": 1,
        "results": [BatchRowResult(row=2, status="rejected").model_dump()],
    }
