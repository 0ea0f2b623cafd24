"""On PostgreSQL the group committer writes a group's JSON columns a column at a time, to the
same texts SQLAlchemy's own JSON processor (with ``dumps_json``) writes value by value."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Column, MetaData, Table
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from shared.db import dumps_json
from shared.groupcommit import DirectInserts, _records

TABLE = Table("docs", MetaData(), Column("doc", JSON()), Column("plain", JSON(none_as_null=True)))


def _dialect() -> Any:
    dialect = asyncpg_dialect(json_serializer=dumps_json)
    dialect.dbapi = asyncpg_dialect.import_dbapi()
    return dialect


POSTGRES = _dialect()


def _plan() -> Any:
    plan = DirectInserts(POSTGRES).plan(TABLE, ("doc", "plain"))
    assert plan is not None
    return plan


def _one_by_one(plan: Any, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The rows as the processors write them value by value."""
    return [tuple(p(r[k]) for k, p in zip(plan.keys, plan.processors, strict=True)) for r in rows]


class Sub(str):
    """A str subclass: orjson writes it, ``dumps_json`` leaves it to the stdlib."""


_KEYS = (
    st.text(max_size=6)
    | st.sampled_from(["巡查员", "a", "\ud800"])
    | st.builds(Sub, st.text(max_size=3))
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["网格员28", "\ud800", "\x00"])
    | st.builds(Sub, st.text(max_size=3))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_KEYS | st.integers(0, 3), inner, max_size=3)
        | st.tuples(inner)
    ),
    max_leaves=8,
)
_CONTAINERS = st.lists(_VALUES, max_size=3) | st.dictionaries(_KEYS, _VALUES, max_size=3)
_COLUMN_VALUES = st.one_of(_CONTAINERS, _VALUES, st.just(JSON.NULL))


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    return [[(type(v), v) for v in row] for row in a] == [[(type(v), v) for v in row] for row in b]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(_COLUMN_VALUES, _CONTAINERS), min_size=0, max_size=20)
    | st.lists(st.tuples(_CONTAINERS, _CONTAINERS), min_size=8, max_size=20)
)
def test_a_groups_json_columns_are_written_as_the_processor_writes_them(
    pairs: list[tuple[Any, Any]],
) -> None:
    plan = _plan()
    rows = [{"doc": doc, "plain": plain} for doc, plain in pairs]
    try:
        expected = _one_by_one(plan, rows)
    except (TypeError, ValueError, RecursionError) as error:
        try:
            _records(plan, rows)
        except type(error):
            return
        raise AssertionError("the processor raised where the column did not") from None
    assert _same(_records(plan, rows), expected)


def test_texts_agree_on_the_values_orjson_and_the_stdlib_write_differently() -> None:
    plan = _plan()
    odd: list[Any] = [
        {"n": math.nan},
        {"big": 2**64},
        {1: "int key"},
        ["\ud800"],
        {"deep": [[[[]]]]},
        {"f": 1.5, "t": (1, 2)},
        {Sub("k"): 1},
        {"v": Sub("v")},
        [Sub("v")],
    ]
    for value in odd:
        rows = [{"doc": {"a": "正常"}, "plain": []} for _ in range(10)] + [
            {"doc": value, "plain": value}
        ]
        assert _same(_records(plan, rows), _one_by_one(plan, rows)), value


def test_a_plain_json_column_is_written_without_a_call_per_value() -> None:
    calls = 0
    plan = _plan()
    (doc, plain) = plan.processors

    def counted(value: Any) -> Any:
        nonlocal calls
        calls += 1
        return doc(value)

    plan = dataclasses.replace(plan, processors=(counted, plain))
    rows = [{"doc": {"巡查员": f"网格员{i}", "n": i}, "plain": []} for i in range(50)]
    records = _records(plan, rows)
    assert calls == 0
    assert records[7] == ('{"巡查员":"网格员7","n":7}', "[]")
    # A value the column cannot write as it is (None) sends the column through the processor.
    rows[3]["doc"] = None
    _records(plan, rows)
    assert calls == 50
