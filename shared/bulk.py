"""Set-wise writes: many rows in one statement, the same on every database.

On PostgreSQL the rows travel as one array per column and are inserted by
``INSERT … SELECT * FROM unnest(…)``: one statement, one plan, however many rows, with the
arrays encoded by the driver (no per-row SQL text, no statement of thousands of parameters to
parse and plan). On SQLite (in-process) the same statement runs as an ``executemany`` on the
driver itself, with positional values converted by the columns' own bind processing:
SQLAlchemy's executemany builds and converts every row's parameters in Python, about a third
of evaluation's CPU there. Either way ``ON CONFLICT`` decides what a row whose key is taken
does: nothing, replace the other columns, or add to them (counters).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

import orjson
from pydantic_core import PydanticUndefined
from sqlalchemy import (
    JSON,
    ColumnElement,
    Table,
    any_,
    bindparam,
    delete,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlmodel import SQLModel

from shared.groupcommit import processor_of

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class Draft:
    """A row of a SQLModel table as plain attributes, with the model's defaults: what a batch
    builds instead of mapped instances, whose construction (through SQLAlchemy's attribute
    instrumentation) and unit-of-work flush cost more than the rest of the work together.
    ``model_dump()`` gives every column in the model's order, for a set-wise insert; ``__dict__``
    holds the column values only."""

    __slots__ = ("__dict__", "_model")

    def __init__(self, model: type[SQLModel], **values: Any) -> None:
        _set(self, "_model", model)
        _set(self, "__dict__", _filled(model, values))

    @classmethod
    def of(cls, model: type[SQLModel], values: dict[str, Any]) -> Draft:
        """``Draft(model, **values)`` made from ``values`` itself, which it takes over (the
        caller's keyword dict), without the keywords packed again. What a batch's writers make
        a row at a time."""
        draft = _new(cls)
        _set(draft, "_model", model)
        _set(draft, "__dict__", _filled(model, values))
        return draft

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value

    def model_dump(self) -> dict[str, Any]:
        """Every column of the model, in the model's order."""
        values = self.__dict__
        return {name: values.get(name) for name in _shape(self._model)[0]}


_new = object.__new__
_set = object.__setattr__


def _filled(model: type[SQLModel], values: dict[str, Any]) -> dict[str, Any]:
    """A draft's attributes: the model's defaults under ``values`` (which get the factories'
    values for what they do not give; no factory is called for a value given)."""
    _, plain, factories = _shape(model)
    for name, factory in factories:
        if name not in values:
            values[name] = factory()
    return {**plain, **values}


@cache
def _shape(
    model: type[SQLModel],
) -> tuple[tuple[str, ...], dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    """A model's columns, its plain defaults and its default factories."""
    plain: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in model.model_fields.items():
        if info.default_factory is not None:
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif info.default is not PydanticUndefined:
            plain[name] = info.default
    return tuple(model.model_fields), plain, tuple(factories)


async def insert_drafts(session: AsyncSession, drafts: Sequence[Draft], table: Table) -> None:
    """Insert drafts of one table in one statement (the database numbers an autoincrement key
    left at None)."""
    if drafts:
        await insert(session, table, draft_rows(drafts, table))


def draft_rows(drafts: Sequence[Draft], table: Table) -> list[dict[str, Any]]:
    """The drafts' rows, without an autoincrement key left at None (the database numbers it)."""
    serial = table.autoincrement_column
    rows = [d.model_dump() for d in drafts]
    if serial is not None:
        for row in rows:
            if row.get(serial.name) is None:
                row.pop(serial.name, None)
    return rows


async def insert(
    session: AsyncSession | AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert rows in one statement; a taken key is an error, as in a plain insert."""
    await upsert(session, table, rows, key=(), on_conflict=OnConflict.FAIL)


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """Slices small enough for one statement's bound parameters (an IN list, a VALUES list)."""
    return (items[i : i + size] for i in range(0, len(items), size))


def among(
    session: AsyncSession | AsyncConnection, column: ColumnElement[Any], values: Sequence[Any]
) -> Iterator[ColumnElement[bool]]:
    """Conditions "``column`` is one of ``values``", as few as the database allows: on
    PostgreSQL one, binding one array (one statement text and one prepared plan whatever the
    count; an IN list of n parameters is a new statement to parse and plan for every n),
    elsewhere an IN list per ``chunks`` slice."""
    if not values:
        return iter(())
    if _dialect(session) == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return iter((column == any_(array),))
    return (column.in_(chunk) for chunk in chunks(values))


def _dialect(session: AsyncSession | AsyncConnection) -> str:
    bind = session.get_bind() if isinstance(session, AsyncSession) else session
    return str(bind.dialect.name)


class OnConflict(Enum):
    FAIL = "fail"  # a plain insert: a taken key is an error
    NOTHING = "nothing"  # keep the stored row
    REPLACE = "replace"  # the new row's values win
    ADD = "add"  # add the new values to the stored ones (the ``add`` columns)


async def upsert(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: Sequence[str],
    on_conflict: OnConflict,
    add: Sequence[str] = (),
    returning: str | None = None,
    document: bool = False,
    positional: bool = False,
) -> list[Any]:
    """Insert ``rows`` (dicts naming every column to write, the same columns in each) into
    ``table``; a row whose ``key`` is taken does what ``on_conflict`` says. Returns the values
    of the ``returning`` column of the rows actually inserted or updated (empty if not asked).

    ``document``: on PostgreSQL the rows travel as one JSON document the database reads
    (``json_to_recordset``) instead of an array a column, which for wide rows costs a fraction
    of encoding the arrays. The column types' own bind processing is skipped: only for rows
    of plain values (text, numbers, booleans, dates, aware datetimes, JSON values).

    ``positional`` (with ``document``): each row travels as a JSON array of its values in
    ``columns``' order rather than an object naming them, read by position (``_positional``):
    for wide rows a fraction of the database's CPU. Not for tables with JSON columns."""
    if not rows:
        return []
    columns = tuple(rows[0])
    if _dialect(session) == "postgresql" and document:
        sql, _ = _unnest_sql(
            table, columns, tuple(key), on_conflict, tuple(add), returning, True, positional
        )
        result = await session.execute(sql, {"rows": _document(rows, columns, positional)})
    elif _dialect(session) == "postgresql":
        sql, binders = _unnest_sql(table, columns, tuple(key), on_conflict, tuple(add), returning)
        result = await session.execute(sql, _array_values(rows, columns, binders))
    else:
        return await _upsert_sqlite(
            session, table, rows, columns, tuple(key), on_conflict, add, returning
        )
    return list(result.scalars()) if returning is not None else []


async def _upsert_sqlite(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    columns: tuple[str, ...],
    key: tuple[str, ...],
    how: OnConflict,
    add: Sequence[str],
    returning: str | None,
) -> list[Any]:
    """``upsert`` on SQLite: one ``executemany`` on the driver. A ``returning`` of the rows
    inserted is answered for ``OnConflict.NOTHING`` on a one-column key (the ledger's insert,
    which tells which events are new): the keys stored already are read first, and only the
    others (each once) inserted — in the writer's transaction, which no other writer can
    enter between the two (SQLite has one). Otherwise every row is written, so every row's."""
    connection = await _sqlite_connection(session)
    if returning is not None and how is OnConflict.NOTHING and len(key) == 1:
        (name,) = key
        stored = await _stored_keys(connection, table, name, [row[name] for row in rows])
        fresh: dict[Any, dict[str, Any]] = {}
        for row in rows:
            value = row[name]
            if value not in stored and value not in fresh:
                fresh[value] = row
        rows = list(fresh.values())
        if not rows:
            return []
    sql = _sqlite_upsert_sql(table, columns, key, how, tuple(add))
    await _executemany(connection, sql, _sqlite_values(connection, table, columns, rows))
    return [row[returning] for row in rows] if returning is not None else []


@dataclass(frozen=True)
class _SQLite:
    """The driver connection under a session's transaction, and the engine's dialect (whose
    bind processing, JSON serializer included, the values go through)."""

    driver: Any
    dialect: Dialect


async def _sqlite_connection(session: AsyncSession | AsyncConnection) -> _SQLite:
    connection = session if isinstance(session, AsyncConnection) else await session.connection()
    raw = await connection.get_raw_connection()
    return _SQLite(raw.driver_connection, connection.dialect)


async def _executemany(connection: _SQLite, sql: str, values: list[Any]) -> None:
    """``sql`` run once per value tuple, raising SQLAlchemy's error classes as a statement
    through the session would (an ``IntegrityError`` for a taken key, ...)."""
    try:
        await connection.driver.executemany(sql, values)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True) from exc


async def _fetchall(connection: _SQLite, sql: str, values: Sequence[Any]) -> list[Any]:
    """The rows ``sql`` answers (one hop to the driver's thread), errors as ``_executemany``."""
    try:
        return list(await connection.driver.execute_fetchall(sql, values))
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True) from exc


async def _stored_keys(
    connection: _SQLite, table: Table, name: str, values: Sequence[Any]
) -> set[Any]:
    """Which of ``values`` the column ``name`` (a key) of ``table`` holds."""
    found: set[Any] = set()
    for chunk in chunks(values):
        sql = _sqlite_among_sql(table, name, len(chunk), f'"{name}"')
        found.update(value for (value,) in await _fetchall(connection, sql, chunk))
    return found


@lru_cache(maxsize=256)
def _sqlite_among_sql(
    table: Table, name: str, n: int, what: str, verb: str = "SELECT", also: str = ""
) -> str:
    """``SELECT what FROM table WHERE name IN (?, …)`` for ``n`` values, and ``also`` if given
    (``verb`` DELETE: ``DELETE FROM … RETURNING what``)."""
    among = f'"{name}" IN ({", ".join("?" * n)})' + (f" AND {also}" if also else "")
    if verb == "DELETE":
        return f'DELETE FROM "{table.name}" WHERE {among} RETURNING {what}'
    return f'SELECT {what} FROM "{table.name}" WHERE {among}'


@lru_cache(maxsize=256)
def _sqlite_upsert_sql(
    table: Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    how: OnConflict,
    add: tuple[str, ...],
) -> str:
    """The insert of ``columns`` (positional values) and what a taken ``key`` does."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join("?" * len(columns))})'
    conflict = ", ".join(f'"{c}"' for c in key)
    if how is OnConflict.NOTHING:
        sql += f" ON CONFLICT ({conflict}) DO NOTHING"
    elif how is OnConflict.ADD:
        sets = ", ".join(f'"{c}" = "{table.name}"."{c}" + excluded."{c}"' for c in add)
        sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    elif how is OnConflict.REPLACE:
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in key)
        sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
    return sql


def _sqlite_values(
    connection: _SQLite,
    table: Table,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
) -> list[Any]:
    """Each row's values in ``columns``' order, converted by the columns' bind processing."""
    pick = itemgetter(*columns)
    if len(columns) == 1:
        values: list[Any] = [(pick(row),) for row in rows]
    else:
        values = [pick(row) for row in rows]
    converts = _sqlite_binders(connection.dialect, table, columns)
    if not converts:
        return values
    values = [list(v) for v in values]
    for i, convert in converts:
        for v in values:
            v[i] = convert(v[i])
    return values


@lru_cache(maxsize=256)
def _sqlite_binders(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(position, processor) of each column whose type converts its values for SQLite (dates,
    aware datetimes, JSON through the engine's serializer, booleans), as a statement through
    SQLAlchemy would convert them (None included); the others go as they are."""
    found = (
        (i, processor_of(table.c[name].type.dialect_impl(dialect), dialect))
        for i, name in enumerate(columns)
    )
    return tuple((i, p) for i, p in found if p is not None)


@cache
def _unnest_sql(
    table: Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    how: OnConflict,
    add: tuple[str, ...],
    returning: str | None,
    document: bool = False,
    positional: bool = False,
) -> tuple[Any, tuple[Callable[[Any], Any] | None, ...]]:
    """The statement for one table and column set (built once), and each column's bind
    conversion (the column type's own processing, JSON serialised to text); from one JSON
    document (``:rows``) instead of arrays if ``document``, its rows arrays of values in
    ``columns``' order if ``positional``."""
    casts, binders = _arrays(table, columns)
    quoted = ", ".join(f'"{c}"' for c in columns)
    if document and positional:
        source = _positional(table, columns)
    elif document:
        picked = ", ".join(_document_value(table, c) for c in columns)
        source = f"{picked} FROM {_record_set(table, columns)}"
    else:
        source = f"* FROM unnest({', '.join(casts)})"
    sql = f'INSERT INTO "{table.name}" ({quoted}) SELECT {source}'
    conflict = ", ".join(f'"{c}"' for c in key)
    if how is OnConflict.NOTHING:
        sql += f" ON CONFLICT ({conflict}) DO NOTHING"
    elif how is not OnConflict.FAIL:
        if how is OnConflict.ADD:
            sets = [f'"{c}" = "{table.name}"."{c}" + EXCLUDED."{c}"' for c in add]
        else:
            sets = [f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in key]
        sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {', '.join(sets)}"
    if returning is not None:
        sql += f' RETURNING "{returning}"'
    return text(sql), tuple(binders)


def _positional(table: Table, columns: Sequence[str]) -> str:
    """``SELECT``'s list and source reading ``:rows``, a JSON array of rows each an array of
    its values in ``columns``' order, by position. ``json_to_recordset`` builds a lookup of
    every object's keys and matches each column's name in it; rows of ~40 columns cost it
    ~20 µs each, most of a fact's insert. Read as ``jsonb`` (one parse, each value then
    found by its index) the same rows cost about half, the document is a third of the text,
    and each value is taken by the column type's input function from the same text as
    ``json_to_recordset`` gives it (``->>``: a string unescaped, a number or boolean as
    written, ``null`` as SQL NULL), so a row stores the same values."""
    json_columns = [c for c in columns if isinstance(table.c[c].type, JSON)]
    if json_columns:
        raise ValueError(f"JSON columns are not read by position: {json_columns}")
    picked = ", ".join(
        f"CAST(e ->> {i} AS {table.c[c].type.compile(dialect=_PG)})" for i, c in enumerate(columns)
    )
    return f"{picked} FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r(e)"


def _document(rows: Sequence[dict[str, Any]], columns: Sequence[str], positional: bool) -> str:
    """The JSON document of ``rows``: objects, or arrays of the values of ``columns``."""
    if not positional:
        return orjson.dumps(rows).decode()
    if len(columns) == 1:
        (name,) = columns
        return orjson.dumps([(row[name],) for row in rows]).decode()
    pick = itemgetter(*columns)
    return orjson.dumps([pick(row) for row in rows]).decode()


def _document_value(table: Table, name: str) -> str:
    """A column of the document's record as the insert takes it: a JSON column's ``null`` read
    back into JSON ``null`` (``json_to_recordset`` gives SQL NULL for it), as ``_json_null_text``
    writes None in the arrays, unless its type stores None as SQL NULL."""
    column_type = table.c[name].type
    if isinstance(column_type, JSON) and not column_type.none_as_null:
        return f"""coalesce(r."{name}", CAST('null' AS {column_type.compile(dialect=_PG)}))"""
    return f'r."{name}"'


def _arrays(
    table: Table, columns: Sequence[str]
) -> tuple[list[str], tuple[Callable[[Any], Any] | None, ...]]:
    """Each column's array parameter (``:a0``, ``:a1``, … cast to the column's type) and its
    bind conversion (the column type's own processing, JSON serialised to text)."""
    casts: list[str] = []
    binders: list[Callable[[Any], Any] | None] = []
    for i, name in enumerate(columns):
        column_type = table.c[name].type
        casts.append(f"CAST(:a{i} AS {column_type.compile(dialect=_PG)}[])")
        if isinstance(column_type, JSON):
            binders.append(_json_text if column_type.none_as_null else _json_null_text)
        else:
            binders.append(column_type.bind_processor(_PG))
    return casts, tuple(binders)


def _array_values(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    binders: Sequence[Callable[[Any], Any] | None],
) -> dict[str, list[Any]]:
    return {
        f"a{i}": [bind(row[c]) for row in rows] if bind else [row[c] for row in rows]
        for i, (c, bind) in enumerate(zip(columns, binders, strict=True))
    }


async def update_many(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
) -> None:
    """Set columns of stored rows: each dict names its ``key`` and the values to set (the same
    columns in each; a key appears once). On PostgreSQL one ``UPDATE … FROM unnest(…)`` for
    all of them — one statement planned and run once, where ``executemany`` runs and plans it
    once a row; elsewhere ``executemany``. A key no row has changes nothing."""
    if not rows:
        return
    columns = tuple(rows[0])
    if _dialect(session) == "postgresql":
        sql, binders = _update_many_sql(table, columns, key)
        await session.execute(sql, _array_values(rows, columns, binders))
        return
    await session.execute(
        update(table)
        .where(table.c[key] == bindparam("k"))
        .values({c: bindparam(f"v_{c}") for c in columns if c != key}),
        [{"k": row[key], **{f"v_{c}": v for c, v in row.items() if c != key}} for row in rows],
    )


@cache
def _update_many_sql(
    table: Table, columns: tuple[str, ...], key: str
) -> tuple[Any, tuple[Callable[[Any], Any] | None, ...]]:
    casts, binders = _arrays(table, columns)
    named = ", ".join(f'"{c}"' for c in columns)
    sets = ", ".join(f'"{c}" = v."{c}"' for c in columns if c != key)
    sql = (
        f'UPDATE "{table.name}" AS t SET {sets} FROM unnest({", ".join(casts)}) AS v({named}) '
        f'WHERE t."{key}" = v."{key}"'
    )
    return text(sql), binders


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_null_text(value: Any) -> str:
    """A JSON column's value as its type stores it by default (``none_as_null`` off): None as
    JSON ``null``, as the ORM, Core and the SQLite path write it, not SQL NULL — which a NOT
    NULL column would refuse, and which a reader in SQL (``IS NULL``, ``->``) tells apart."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def add_sparse(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
    add: Sequence[str],
    blank: Sequence[str] = (),
    names: Callable[[Any], Mapping[str, Any]] | None = None,
) -> list[Any]:
    """Add counters to stored rows, a row inserted where its ``key`` is new. Each row names
    its key and only the ``add`` columns it changes (the others add 0); the columns outside
    ``add`` (those of ``blank`` only when not "") are in the row too, or, if ``names`` is
    given, ``names(key)`` gives them — asked only for rows that may have to be inserted.
    Returns the keys of rows whose ``add`` columns are now all zero (only a row that took
    something away can be).

    On PostgreSQL, two statements at most, each reading one JSON document expanded into just
    the columns some row changes (a batch costs what its changes are, not rows times ``add``
    columns): an ``UPDATE`` of the rows that exist, sent each row's key and changes alone,
    answers the keys it did not find and the rows it left all zeros; then only the rows not
    found, whole, go to an insert (which still adds to a row another transaction inserted
    meanwhile). The other columns are most of a row's bytes, and a row that exists does not
    need them."""
    if not rows:
        return []
    adding = frozenset(add)
    if names is None:
        named, rows = _split(rows, key, adding)
    else:
        named = names
    if _dialect(session) == "postgresql":
        return await _add_sparse_pg(session, table, rows, key, tuple(add), named, tuple(blank))
    return await _add_sparse_sqlite(session, table, rows, key, tuple(add), named, tuple(blank))


async def _add_sparse_sqlite(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    key: str,
    add: tuple[str, ...],
    names: Callable[[Any], Mapping[str, Any]],
    blank: tuple[str, ...],
    *,
    delete: bool = False,
) -> list[Any]:
    """``add_sparse`` on SQLite: which keys are stored is read first (in the writer's
    transaction, which no other writer enters meanwhile); a stored row is sent its key and
    changes alone (``UPDATE``), a new one its other columns too (an insert that still adds to
    a row of its key, as PostgreSQL's does), each as one ``executemany`` per set of changed
    columns, the ``add`` columns a row leaves out taking their default (0) when inserted.
    Answers the keys of rows now all zeros, deleted first if ``delete``."""
    connection = await _sqlite_connection(session)
    adding = frozenset(add)
    stored = await _stored_keys(connection, table, key, [row[key] for row in rows])
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    blanks = dict.fromkeys(blank, "")
    taken: list[Any] = []
    for row in rows:
        if any(v < 0 for n, v in row.items() if n in adding):
            taken.append(row[key])
        if row[key] in stored:
            updates.setdefault(tuple(row), []).append(row)
        else:
            full = {**blanks, **names(row[key]), **row}
            inserts.setdefault(tuple(full), []).append(full)
    for shape, moved in updates.items():
        columns = (*(n for n in shape if n != key), key)
        sql = _sqlite_update_sql(table, columns)
        await _executemany(connection, sql, _sqlite_values(connection, table, columns, moved))
    for columns, new in inserts.items():
        used = tuple(n for n in columns if n in adding)
        sql = _sqlite_upsert_sql(table, columns, (key,), OnConflict.ADD, used)
        await _executemany(connection, sql, _sqlite_values(connection, table, columns, new))
    zero = " AND ".join(f'"{n}" = 0' for n in add)
    found: list[Any] = []
    for chunk in chunks(taken):
        verb = "DELETE" if delete else "SELECT"
        sql = _sqlite_among_sql(table, key, len(chunk), f'"{key}"', verb, zero)
        found += (value for (value,) in await _fetchall(connection, sql, chunk))
    return found


@lru_cache(maxsize=256)
def _sqlite_update_sql(table: Table, columns: tuple[str, ...]) -> str:
    """The counters ``columns[:-1]`` added to (positional values) on the row whose key is the
    last value."""
    *used, key = columns
    sets = ", ".join(f'"{c}" = "{c}" + ?' for c in used)
    return f'UPDATE "{table.name}" SET {sets} WHERE "{key}" = ?'


def _split(
    rows: Sequence[dict[str, Any]], key: str, adding: frozenset[str]
) -> tuple[Callable[[Any], Mapping[str, Any]], list[dict[str, Any]]]:
    """Whole rows → ``names`` (their columns outside ``adding``, by key) and the rows of
    their key and ``adding`` columns alone."""
    others = {row[key]: row for row in rows}
    moves = [{n: v for n, v in row.items() if n in adding or n == key} for row in rows]
    return (lambda k: {n: v for n, v in others[k].items() if n not in adding}), moves


async def _add_sparse_pg(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    key: str,
    add: tuple[str, ...],
    names: Callable[[Any], Mapping[str, Any]],
    blank: tuple[str, ...],
) -> list[Any]:
    """``add_sparse`` on PostgreSQL: the update, then the insert of the keys it did not find."""
    changed = frozenset().union(*rows)
    used = tuple(name for name in add if name in changed)
    statement = _update_sql(table, key, add, used)
    missing: set[Any] = set()
    emptied: list[Any] = []
    for found, empty in await session.execute(statement, {"rows": orjson.dumps(rows).decode()}):
        if empty:
            emptied.append(found)
        else:
            missing.add(found)
    if missing:
        new = [{**names(row[key]), **row} for row in rows if row[key] in missing]
        statement = _sparse_sql(table, key, add, used, blank)
        result = await session.execute(statement, {"rows": orjson.dumps(new).decode()})
        emptied += result.scalars()
    return emptied


def _record_set(table: Table, names: Sequence[str]) -> str:
    """The JSON document ``:rows`` read as records ``r`` of just the columns ``names``."""
    declared = ", ".join(f'"{n}" {table.c[n].type.compile(dialect=_PG)}' for n in names)
    return f"json_to_recordset(CAST(:rows AS json)) AS r({declared})"


@lru_cache(maxsize=256)
def _update_sql(table: Table, key: str, add: tuple[str, ...], used: tuple[str, ...]) -> Any:
    """``add_sparse``'s first step for one table and set of changed columns (built once): the
    ``used`` counters added to the rows whose key exists; answers (key, False) for each key
    not found and (key, True) for each row now all zeros."""
    return text(f"WITH {_update_parts(table, key, add, used)}")


def _update_parts(table: Table, key: str, add: tuple[str, ...], used: tuple[str, ...]) -> str:
    """``_update_sql`` after its ``WITH``: the parts ``r`` and ``moved`` and the answer."""
    sets = ", ".join(f'"{n}" = t."{n}" + coalesce(r."{n}", 0)' for n in used)
    update = f'UPDATE "{table.name}" AS t SET {sets} FROM r WHERE t."{key}" = r."{key}"'
    return (
        f"r AS (SELECT * FROM {_record_set(table, (key, *used))}), "
        f"moved AS ({update} {_keys_emptied(key, add)}) "
        f'SELECT r."{key}", false FROM r WHERE NOT EXISTS (SELECT FROM moved WHERE k = r."{key}") '
        "UNION ALL SELECT k, true FROM moved WHERE empty"
    )


def _keys_emptied(key: str, add: Sequence[str]) -> str:
    """The ``RETURNING`` of a write to ``t``: each row's key ``k`` and whether its ``add``
    columns are all zero now (``empty``)."""
    empty = " AND ".join(f't."{n}" = 0' for n in add)
    return f'RETURNING t."{key}" AS k, ({empty}) AS empty'


@lru_cache(maxsize=256)
def _sparse_sql(
    table: Table,
    key: str,
    add: tuple[str, ...],
    used: tuple[str, ...],
    blank: tuple[str, ...],
    deleting: bool = False,
) -> Any:
    """``add_sparse``'s statement for one table and set of changed columns (built once): the
    document is read as ``json`` (parsed as it is read; ``jsonb`` would build a binary copy
    first) into a record of only the columns written, the others keep their defaults (and
    the ones the database computes are never written)."""
    changed = frozenset(used)
    names = [
        c.name
        for c in table.columns
        if c.computed is None and (c.name not in add or c.name in changed)
    ]
    quoted = ", ".join(f'"{n}"' for n in names)

    def pick(name: str) -> str:
        if name in changed:
            return f'coalesce(r."{name}", 0)'
        if name in blank:
            return f"coalesce(r.\"{name}\", '')"
        return f'r."{name}"'

    sets = ", ".join(f'"{n}" = t."{n}" + EXCLUDED."{n}"' for n in used)
    insert = f'INSERT INTO "{table.name}" AS t ({quoted}) SELECT {", ".join(map(pick, names))}'
    # ``deleting``: in the same statement the rows of keys ``:gone`` (emptied by the update
    # before; never among the keys inserted here, which that update did not find).
    key_type = table.c[key].type.compile(dialect=_PG)
    gone = (
        f'gone AS (DELETE FROM "{table.name}" WHERE "{key}" = ANY(CAST(:gone AS {key_type}[]))), '
        if deleting
        else ""
    )
    return text(
        f"WITH {gone}moved AS ({insert} FROM {_record_set(table, names)} "
        f'ON CONFLICT ("{key}") DO UPDATE SET {sets} {_keys_emptied(key, add)}) '
        "SELECT k FROM moved WHERE empty"
    )


@dataclass(frozen=True)
class Upsert:
    """An ``upsert`` made ready before it is sent (``ready_upsert``): on PostgreSQL its rows are
    already the JSON document its statement reads."""

    table: Table
    rows: Sequence[dict[str, Any]]
    key: tuple[str, ...]
    on_conflict: OnConflict
    document: str | None
    positional: bool = False


def ready_upsert(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: Sequence[str],
    on_conflict: OnConflict,
    positional: bool = False,
) -> Upsert:
    """``upsert(…, document=True, positional=…)`` made ready to send with others
    (``write_ready``): the rows serialised now, where the caller has time (a fetch staged
    while the one before commits), rather than while the statement is waited for."""
    document = None
    if rows and _dialect(session) == "postgresql":
        document = _document(rows, tuple(rows[0]), positional)
    return Upsert(table, rows, tuple(key), on_conflict, document, positional)


@dataclass(frozen=True)
class SparseAdd:
    """An ``add_sparse`` made ready before it is sent (``ready_add_sparse``); a row whose ``add``
    columns end all zero is deleted."""

    table: Table
    rows: Sequence[dict[str, Any]]
    key: str
    add: tuple[str, ...]
    blank: tuple[str, ...]
    names: Callable[[Any], Mapping[str, Any]]
    used: tuple[str, ...]  # the ``add`` columns some row changes
    document: str | None


def ready_add_sparse(
    session: AsyncSession | AsyncConnection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
    add: Sequence[str],
    blank: Sequence[str],
    names: Callable[[Any], Mapping[str, Any]],
) -> SparseAdd:
    """``add_sparse`` (rows of the key and the changes, ``names`` for the rest) made ready to
    send with others (``write_ready``), its document serialised now; rows left all zeros are
    deleted."""
    changed = frozenset().union(*rows)
    used = tuple(name for name in add if name in changed)
    document = orjson.dumps(rows).decode() if _dialect(session) == "postgresql" else None
    return SparseAdd(table, rows, key, tuple(add), tuple(blank), names, used, document)


async def write_ready(
    session: AsyncSession | AsyncConnection,
    upserts: Sequence[Upsert],
    adds: SparseAdd | None = None,
) -> None:
    """Send made-ready writes. On PostgreSQL in one statement (each write one part of a ``WITH``:
    they touch different tables), then, only if ``adds`` found keys it must insert or rows it
    emptied, one more for those; elsewhere one statement a write, as ``upsert`` and
    ``add_sparse`` do. Each round trip is waited for by the commit that follows."""
    upserts = [u for u in upserts if u.rows]
    if adds is not None and not adds.rows:
        adds = None
    if _dialect(session) != "postgresql":
        for u in upserts:
            await upsert(session, u.table, u.rows, key=u.key, on_conflict=u.on_conflict)
        if adds is not None:
            await _add_sparse_sqlite(
                session,
                adds.table,
                adds.rows,
                adds.key,
                adds.add,
                adds.names,
                adds.blank,
                delete=True,
            )
        return
    if not upserts and adds is None:
        return
    shapes = tuple((u.table, tuple(u.rows[0]), u.key, u.on_conflict, u.positional) for u in upserts)
    spec = None if adds is None else (adds.table, adds.key, adds.add, adds.used)
    params = {f"d{i}": u.document for i, u in enumerate(upserts)}
    if adds is not None:
        params["rows"] = adds.document
    result = await session.execute(_together_sql(shapes, spec), params)
    if adds is None:
        return
    missing: set[Any] = set()
    emptied: list[Any] = []
    for found, empty in result:
        if empty:
            emptied.append(found)
        else:
            missing.add(found)
    if missing:
        key = adds.key
        new = [{**adds.names(row[key]), **row} for row in adds.rows if row[key] in missing]
        statement = _sparse_sql(adds.table, adds.key, adds.add, adds.used, adds.blank, True)
        found = await session.execute(
            statement, {"rows": orjson.dumps(new).decode(), "gone": emptied}
        )
        emptied = list(found.scalars())  # a row another transaction inserted meanwhile
    await _delete(session, adds, emptied)


async def _delete(
    session: AsyncSession | AsyncConnection, adds: SparseAdd, keys: Sequence[Any]
) -> None:
    column = adds.table.c[adds.key]
    for condition in among(session, column, keys):
        await session.execute(delete(adds.table).where(condition))


@lru_cache(maxsize=256)
def _together_sql(
    shapes: tuple[tuple[Table, tuple[str, ...], tuple[str, ...], OnConflict, bool], ...],
    adds: tuple[Table, str, tuple[str, ...], tuple[str, ...]] | None,
) -> Any:
    """``write_ready``'s statement (built once a shape): each upsert a ``WITH`` part reading its
    document ``:d<i>``; the sparse update, if any, last, answering as ``_update_sql`` does."""
    parts = []
    for i, (table, columns, keys, how, positional) in enumerate(shapes):
        sql = _unnest_sql(table, columns, keys, how, (), None, True, positional)[0].text
        parts.append(f"w{i} AS ({sql.replace(':rows', f':d{i}')})")
    if adds is None:
        return text(f"WITH {', '.join(parts)} SELECT")
    cells, key, add, used = adds
    return text(f"WITH {''.join(p + ', ' for p in parts)}{_update_parts(cells, key, add, used)}")
