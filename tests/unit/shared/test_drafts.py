"""A draft is a row of a model as plain attributes with the model's defaults; ``Draft.of`` makes
the same draft from the caller's own keyword dict, and neither calls a default factory for a
value it is given."""

from __future__ import annotations

import itertools
from typing import Any

from sqlmodel import Field, SQLModel

from shared.bulk import Draft

_made = itertools.count()
calls: list[int] = []


def _stamp() -> int:
    n = next(_made)
    calls.append(n)
    return n


class Row(SQLModel):
    id: int | None = None
    name: str = "unnamed"
    stamp: int = Field(default_factory=_stamp)
    tags: list[str] = Field(default_factory=list)


def test_of_is_the_draft_of_its_values() -> None:
    for values in ({}, {"name": "x"}, {"stamp": 7, "tags": ["a"]}, {"id": 3, "name": "y"}):
        expected = Draft(Row, **values)
        got = Draft.of(Row, dict(values))
        assert type(got) is Draft and got._model is Row
        assert {k: v for k, v in got.__dict__.items() if k != "stamp"} == {
            k: v for k, v in expected.__dict__.items() if k != "stamp"
        }
        assert got.model_dump().keys() == expected.model_dump().keys()
        if "stamp" in values:
            assert got.stamp == expected.stamp == values["stamp"]


def test_a_factory_is_not_called_for_a_value_given() -> None:
    calls.clear()
    Draft(Row, stamp=1)
    Draft.of(Row, {"stamp": 2})
    assert calls == []
    Draft(Row)
    Draft.of(Row, {})
    assert len(calls) == 2


def test_each_draft_gets_its_own_factory_value() -> None:
    first: Any = Draft.of(Row, {})
    second: Any = Draft.of(Row, {})
    first.tags.append("mine")
    assert second.tags == []
    assert first.stamp != second.stamp
