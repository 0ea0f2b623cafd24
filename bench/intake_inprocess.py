"""Intake's CPU per ticket in one process, without sockets: what the code costs, less what the
neighbours on a shared machine do to a wrk run's rate.

    python -m bench.intake_inprocess [--case app|accept|batch|batch-app|stages|lookup]
                                     [--count 6000] [--files 16] [--tasks 64]
                                     [--postgres URL | --sqlite]
                                     [--broker] [--places N] [--rounds 20] [--cold] [--suite]
                                     [--statements] [--generic-inserts] [--generic-look-ups]
                                     [--keep-schema]

Cases: ``app`` calls the whole ASGI app (middlewares, routing, the route, the pipeline, the
commit) for ``POST /tickets`` from ``--tasks`` concurrent tasks (64; a group-commit group holds
at most that many posts, so fewer tasks measure smaller groups), with ``--ceiling`` the bare
ceiling app instead; ``accept`` parses the body and calls ``service.accept_ticket`` (no HTTP
layer); ``batch`` parses the benchmark's 1,000-row CSV and calls ``service.accept_batch`` for
``--files`` files at once; ``batch-app`` posts the same files to the whole ASGI app
(``POST /channels/grid-patrol-batch/tickets``: the route, its answer and the middlewares too);
``stages`` times, without a database, the CPU a row of a 1,000-row file costs in each stage
before the commit (``--rounds`` times each, this thread's CPU: the least and the median);
``lookup`` posts ``--tasks`` tickets of one citizen, then times
``--count`` repeat look-ups of a group of ``--tasks`` appeals of that citizen one after another
(the pipeline's loader, its shingle cache emptied before each with ``--cold``, as for
candidates another worker stored). ``--suite`` (``app``) posts the whole suite's tickets
instead of one citizen's: distinct citizens at the demo city's real addresses, each with a lead
and six details as bench/post_suite_ticket.lua draws them, so every look-up judges the grid's
stored tickets by their text (as in ``bench.suite``). Without ``--broker`` the relay has
nowhere to publish (it retries quietly), so the numbers leave it out; with it, an embedded
broker is started and its cost is included. ``--sqlite`` stores in a SQLite file in a temporary
directory instead of PostgreSQL (its writes run on aiosqlite's thread in this process, so they
count here). Prints tickets (or rows) per second of wall time and this process's CPU
milliseconds per item; on PostgreSQL it also prints the CPU seconds of the backends that served
this process's connections over the measured run (a local server: their /proc entries are
read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import statement_cpu
from bench.intake import (
    BATCH_CHANNEL,
    POSTGRES_URL,
    batch_template,
    cpu_seconds,
    database_backends,
    drop_schema,
    socket_ports,
)
from fengqiao.registry import upgrade_async
from services.intake import api, repeats, service
from services.intake.adapters import parse_csv
from services.intake.app import create_app
from services.intake.channels import get_channel
from services.intake.models import TicketIn
from services.intake.normalize import GroupMemo
from services.intake.pipeline import Pipeline, _Pending, _public_fields
from services.intake.repeat_lookup import CandidateLoader, Earlier, ShingleCache, unpack_shingles
from services.intake.repeats import Appeal, RepeatPolicy
from services.intake.settings import IntakeSettings
from shared import heap
from shared.broker import EmbeddedBroker
from shared.bus import create_topics
from shared.events.base import encode_fields
from shared.events.intake import TicketReceived
from shared.settings import BusSettings

TEXT = "小区门口的路灯已经坏了三天，晚上老人孩子出行很不方便，希望尽快修复。" * 6
TASKS = 64


def ticket_body(n: int) -> bytes:
    """The wrk script's ticket (bench/post_ticket.lua), with its own external id."""
    return (
        f'{{"external_id":"inproc-{n}","title":"路灯不亮","content":"{TEXT}",'
        '"citizen_phone":"13812345678","address":"枫桥市越城区北海街道塔山社区",'
        '"category_code":"0102"}'
    ).encode()


def suite_bodies(seed: int = 13) -> Callable[[int], bytes]:
    """The whole suite's tickets (bench/post_suite_ticket.lua over ``bench.suite``'s
    ingredients): a random lead at a real address of the demo city and six random details, each
    its own citizen and external id — distinct tickets at repeated addresses, so every ticket's
    look-up judges the grid's stored tickets by their text."""
    from bench.suite import write_ingredients

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ingredients.tsv"
        write_ingredients(path)
        lines = path.read_text(encoding="utf-8").splitlines()
    leads = [line.split("\t")[1:] for line in lines if line.startswith("L\t")]
    details = [line.split("\t", 1)[1] for line in lines if line.startswith("D\t")]
    rng = random.Random(seed)

    def body(n: int) -> bytes:
        code, title, address, lead = rng.choice(leads)
        content = lead + "".join(rng.choice(details) for _ in range(6))
        return json.dumps(
            {
                "external_id": f"suite-{n}",
                "title": title,
                "content": content,
                "citizen_phone": f"1{3 + n % 7}{n % 10}{n % 100_000_000:08d}",
                "address": address,
                "category_code": code,
            },
            ensure_ascii=False,
        ).encode()

    return body


async def call_asgi(
    app: Any,
    body: bytes,
    *,
    path: str = "/tickets",
    content_type: bytes = b"application/json",
) -> int:
    """One ``POST`` (``/tickets``) straight into the ASGI app; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect: the answer is awaited in full
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def _own_backends(url: str) -> list[int]:
    """PIDs of the PostgreSQL backends serving this process's connections (a local server)."""
    return await database_backends(url, socket_ports([os.getpid()]))


async def timed(
    one: Callable[[], Awaitable[None]],
    count: int,
    tasks: int,
    *,
    warmup: int = 320,
    database: str | None = None,
) -> tuple[float, float, int]:
    """Warm up with ``warmup`` calls, then run ``count`` calls from ``tasks`` concurrent tasks:
    (wall s, CPU s, calls). With ``database`` (a local PostgreSQL URL), also print the CPU its
    backends serving this process used over the run."""

    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(max(1, warmup // tasks)) for _ in range(tasks)))
    per_task = max(1, count // tasks)
    backends = await _own_backends(database) if database else []
    before = cpu_seconds(backends)
    statement_cpu.measuring = True
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per_task) for _ in range(tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    statement_cpu.measuring = False
    if database:
        after = cpu_seconds([*backends, *await _own_backends(database)])
        used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
        print(f"database backends: {used:.2f} s CPU over the run ({len(after)} backends)")
    return wall, cpu, per_task * tasks


class _NumberedIds:
    """Ticket ids without a database: ``TicketIdAllocator.take``'s shape, numbered in order."""

    def __init__(self) -> None:
        self._next = 0

    async def take(self, ats: Sequence[datetime]) -> list[str]:
        start, self._next = self._next, self._next + len(ats)
        return [f"{at:%Y%m%d}-{start + i:07d}" for i, at in enumerate(ats)]


class _NoStoredCandidates(CandidateLoader):
    """A loader with nothing stored: every appeal's stored candidates are none."""

    async def load(
        self, appeals: Sequence[Appeal], grams: Sequence[bytes] | None = None
    ) -> list[list[Earlier]]:
        return [[] for _ in appeals]


class _StoredFiles:
    """``LookupConnections`` for a loader whose store holds earlier copies of the benchmark's
    file (as the batch case's files repeat its rows): ``fetch`` answers the candidate statement
    from them, each key's latest ``per_key`` within the window, found by the key's column, in
    the statement's row shape; each call's tickets with ids of their own, as each file of the
    batch case finds other tickets. ``spent``: the thread CPU of making the rows (the database's
    and the driver's work, not the look-up's), for the caller to leave out."""

    dialect = type("Dialect", (), {"name": "postgresql"})()

    def __init__(self, rows: list[dict[str, Any]], *, copies: int, per_key: int) -> None:
        self._by_key: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
        self._calls = 0
        self.spent = 0.0
        stored = []
        for k in range(1, copies + 1):
            for i, row in enumerate(rows):
                at = row["received_at"] - timedelta(minutes=k)
                stored.append(
                    (
                        k * len(rows) + i,
                        at,
                        row["citizen_hash"],
                        row["grid_code"],
                        row["address_key"],
                        row["longitude"],
                        row["latitude"],
                        None if k == copies else copies * len(rows) + i,
                        copies - k,
                        row["shingles"],
                    )
                )
        stored.sort(key=lambda t: t[1], reverse=True)
        for found in stored:
            for n in range(3):
                if found[2 + n]:
                    listed = self._by_key.setdefault((n, found[2 + n]), [])
                    if len(listed) < per_key:
                        listed.append(found)

    async def run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        return await work(self)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        start = time.thread_time()
        *keys, since, until = args
        self._calls += 1
        # ids in the shape intake issues (the public view passes them unscrubbed as such)
        mark = f"{self._calls:08d}-"
        rows = [
            (
                n,
                f"{mark}{found[0]:07d}",
                *found[1:7],
                None if found[7] is None else f"{mark}{found[7]:07d}",
                *found[8:],
            )
            for n, values in enumerate(keys)
            for value in values
            for found in self._by_key.get((n, value), ())
            if since <= found[1] <= until
        ]
        self.spent += time.thread_time() - start
        return rows


def _events(members: list[_Pending], verdicts: dict[int, Any]) -> Any:
    """A unit's event fields and records, as ``prepare_group`` makes them."""
    return encode_fields(TicketReceived, _public_fields(members, verdicts, GroupMemo()))


def stages(args: argparse.Namespace) -> None:
    """The CPU a row of the benchmark's 1,000-row file costs in each stage before the commit,
    without a database (no stored candidates, ids numbered in order): the CSV parsed into
    drafts; normalization; the whole of ``Pipeline.prepare_group`` (normalization, ids,
    shingles and appeals, the in-unit judgement, the ticket rows, the event fields and
    records); and, of that, the event fields and records alone (``_public_fields`` and
    ``encode_fields``); then the whole of ``prepare_group`` again with a store that holds five
    earlier copies of the file (``prepare+stored``: the stored candidates of every row, as in the
    batch case, where each file repeats the rows of the files before it, less the database's
    own work), and the stored candidates' look-up alone (``stored``: ``CandidateLoader.load``).
    Each ``--rounds`` times, this thread's CPU, the least and the median, with the collector
    settled as the started service settles it (``heap.settle``: the start-up heap frozen, young
    collections every ``heap.FILES_YOUNG_THRESHOLD`` allocations; at Python's defaults a full
    collection walked the whole start-up heap, ~100 ms, every few files)."""
    channel = get_channel(BATCH_CHANNEL)
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "batch.csv"
        batch_template(template, 1000, places=args.places)
        data = template.read_bytes()
    salt = secrets.token_hex(32)
    pipeline = Pipeline(
        salt=salt,
        ids=_NumberedIds(),  # type: ignore[arg-type]
        # An engine that is never connected: this loader reads nothing.
        loader=_NoStoredCandidates(
            create_async_engine("sqlite+aiosqlite://"), policy=RepeatPolicy(), per_key=5
        ),
    )
    now = datetime.now(UTC)
    spent: dict[str, list[float]] = {}

    def timed_stage(name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        out = call(*args, **kwargs)
        spent.setdefault(name, []).append(time.thread_time() - start)
        return out

    heap.settle(heap.FILES_YOUNG_THRESHOLD)  # as the started service does
    # One event loop for every round: ``asyncio.run`` a round made and closed a loop (and its
    # default executor) inside the timed call, ~80 µs a row more than the stage itself.
    loop = asyncio.new_event_loop()
    rows = 0
    for _ in range(args.rounds + 2):  # the first two warm up
        parsed = timed_stage("parse", parse_csv, data, channel, max_rows=5000)
        unit = [(channel, draft) for _, draft in parsed.rows]
        rows = len(unit)
        timed_stage("normalize", pipeline.normalize, unit, now=now, classified={}, memo=GroupMemo())
        (prepared,) = timed_stage(
            "prepare", loop.run_until_complete, pipeline.prepare_group([unit], now=now)
        )
        assert not isinstance(prepared, Exception), prepared
        members = [
            _Pending(0, i, channel, p.normalized, p.located, p.ticket_id)
            for i, p in enumerate(prepared)
        ]
        verdicts = {i: p.verdict for i, p in enumerate(prepared)}
        timed_stage("events", _events, members, verdicts)
    # A store of five earlier copies of the file: every row has stored candidates.
    repeated = Pipeline(
        salt=salt,
        ids=_NumberedIds(),  # type: ignore[arg-type]
        loader=CandidateLoader(
            create_async_engine("sqlite+aiosqlite://"), policy=RepeatPolicy(), per_key=5
        ),
    )
    loader = repeated._loader
    store = _StoredFiles([p.row for p in prepared], copies=5, per_key=5)
    loader.connections = store  # type: ignore[assignment]
    spent["prepare+stored"], spent["stored"] = [], []
    plain_load = loader.load

    async def load(appeals: Sequence[Appeal], grams: Sequence[bytes] | None = None) -> Any:
        start, made = time.thread_time(), store.spent
        out = await plain_load(appeals, grams)
        spent["stored"].append(time.thread_time() - start - (store.spent - made))
        return out

    loader.load = load  # type: ignore[method-assign]
    for _ in range(args.rounds + 2):
        parsed = parse_csv(data, channel, max_rows=5000)
        unit = [(channel, draft) for _, draft in parsed.rows]
        made = store.spent
        (again,) = timed_stage(
            "prepare+stored", loop.run_until_complete, repeated.prepare_group([unit], now=now)
        )
        spent["prepare+stored"][-1] -= store.spent - made
        assert not isinstance(again, Exception), again
        assert all(p.verdict.repeat_of for p in again)
    loop.close()
    for name, times in spent.items():
        kept = times[2:]
        print(
            f"{name}: {min(kept) / rows * 1e6:.2f} µs a row least, "
            f"{statistics.median(kept) / rows * 1e6:.2f} median ({len(kept)} rounds)"
        )


async def run(args: argparse.Namespace, bootstrap: str) -> None:
    if args.ceiling:
        from bench.ceiling_app import app as ceiling

        counter = iter(range(10**9))

        async def bare() -> None:
            assert await call_asgi(ceiling, ticket_body(next(counter))) == 201

        wall, cpu, n = await timed(bare, args.count, args.tasks)
        print(f"ceiling app: {n / wall:,.0f}/s wall, {cpu / n * 1e3:.3f} ms CPU per request")
        return
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_topic_prefix": "inproc",
        "auth_token_secret": secrets.token_hex(32),
        "citizen_hash_salt": secrets.token_hex(32),
        "public_rate_limit": "",
    }
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            settings = IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp}/intake.db", **common)
            await upgrade_async("intake", settings)
            await measure(args, settings)
        return
    settings = IntakeSettings(
        database_url=args.postgres.replace("postgresql://", "postgresql+asyncpg://"),
        database_schema=f"{args.schema_prefix}_{uuid.uuid4().hex[:8]}",
        **common,
    )
    await upgrade_async("intake", settings)
    try:
        await measure(args, settings)
    finally:
        assert settings.database_schema is not None
        if args.keep_schema:
            print(f"schema kept: {settings.database_schema}")
        else:
            await drop_schema(args.postgres, settings.database_schema)


async def measure(args: argparse.Namespace, settings: IntakeSettings) -> None:
    app = create_app(settings)
    counter = iter(range(10**9))
    database = None if args.sqlite else args.postgres
    async with app.router.lifespan_context(app):
        ctx = app.state.runtime.context
        if args.case == "app":
            body_of = suite_bodies() if args.suite else ticket_body

            async def one() -> None:
                assert await call_asgi(app, body_of(next(counter))) in (200, 201)

            wall, cpu, n = await timed(one, args.count, args.tasks, database=database)
        elif args.case == "lookup":
            await time_lookups(args, app, ctx, counter, database)
            return
        elif args.case == "accept":

            async def one() -> None:
                channel, draft = api.draft_from(
                    TicketIn.model_validate_json(ticket_body(next(counter)))
                )
                await service.accept_ticket(ctx=ctx, channel=channel, draft=draft)

            wall, cpu, n = await timed(one, args.count, args.tasks, database=database)
        else:
            channel = get_channel(BATCH_CHANNEL)
            with tempfile.TemporaryDirectory() as tmp:
                template = Path(tmp) / "batch.csv"
                batch_template(template, 1000, places=args.places)
                header, *lines = template.read_text(encoding="utf-8").splitlines()

            # Each file's external ids prefixed as bench/post_batch.lua prefixes them (the start's
            # Unix time, a thread, a counter): ten digits a row the PII scrubber must look at.
            started = int(time.time())

            async def one() -> None:
                prefix = f"B{started}-1-{next(counter)}-"
                data = "\n".join([header, *(prefix + line for line in lines)]).encode()
                if args.case == "batch-app":
                    status = await call_asgi(
                        app,
                        data,
                        path=f"/channels/{BATCH_CHANNEL}/tickets",
                        content_type=b"text/csv; charset=utf-8",
                    )
                    assert status == 201, status
                    return
                parsed = await asyncio.to_thread(parse_csv, data, channel, max_rows=5000)
                result = await service.accept_batch(ctx=ctx, channel=channel, rows=parsed.rows)
                assert result.created == len(lines), result

            wall, cpu, files = await timed(
                one,
                args.files,
                args.files,
                warmup=args.files,
                database=database,
            )
            n = files * len(lines)
        unit = "rows" if args.case.startswith("batch") else "tickets"
        if args.statements:
            statement_cpu.report(n, unit[:-1])
        print(
            f"{args.case}: {n / wall:,.0f} {unit}/s wall, {cpu / n * 1e3:.3f} ms CPU per "
            f"{unit[:-1]} (this process; groups {ctx.groups.groups}, units {ctx.groups.units})"
        )


async def time_lookups(
    args: argparse.Namespace, app: Any, ctx: Any, counter: Any, database: str | None
) -> None:
    """``--count`` repeat look-ups, one after another, each of a group of ``--tasks`` appeals
    of the benchmark's citizen (whose ``--tasks`` posts are its stored candidates)."""
    for _ in range(args.tasks):
        assert await call_asgi(app, ticket_body(next(counter))) in (200, 201)
    loader = ctx.ready_pipeline._loader
    async with ctx.reader.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT citizen_hash, grid_code, address_key, shingles FROM tickets LIMIT 1")
            )
        ).one()
    citizen, grid, address, packed = stored
    shingles = unpack_shingles(packed)
    appeals = [
        repeats.Appeal(
            received_at=datetime.now(UTC),
            text="",
            shingles=shingles,
            ticket_id=f"new-{n}",
            citizen_hash=citizen,
            grid_code=grid,
            address_key=address,
        )
        for n in range(args.tasks)
    ]
    grams = [packed] * len(appeals)

    async def one() -> None:
        if args.cold:
            loader.shingles = ShingleCache()
        found = await loader.load(appeals, grams)
        assert all(found), "every appeal has its citizen's stored tickets as candidates"

    wall, cpu, n = await timed(one, args.count, 1, warmup=50, database=database)
    print(
        f"lookup: {n / wall:,.0f} groups of {args.tasks}/s wall, {cpu / n * 1e6:.0f} us CPU a "
        f"group (this process{', cold cache' if args.cold else ''})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        choices=("app", "accept", "batch", "batch-app", "stages", "lookup"),
        default="app",
    )
    parser.add_argument("--ceiling", action="store_true", help="the bare ceiling app instead")
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=TASKS, help="concurrent posts (app, accept)")
    parser.add_argument("--rounds", type=int, default=20, help="stages: files timed")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file, not PostgreSQL")
    parser.add_argument("--broker", action="store_true", help="include the relay's publishing")
    parser.add_argument("--cold", action="store_true", help="lookup: no shingles cached")
    parser.add_argument(
        "--suite",
        action="store_true",
        help="app: the whole suite's tickets (distinct citizens at the demo city's addresses)",
    )
    parser.add_argument(
        "--places",
        type=int,
        default=None,
        help="batch: the file's rows at this many addresses (1: one grid's patrol log)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="PostgreSQL: the backends' CPU by statement over the measured run",
    )
    parser.add_argument(
        "--schema-prefix", default="inproc", help="the prefix of the scratch schema's name"
    )
    parser.add_argument(
        "--keep-schema", action="store_true", help="leave the scratch schema (to read it after)"
    )
    parser.add_argument(
        "--generic-inserts",
        action="store_true",
        help="PostgreSQL: the group commit's direct inserts planned generically "
        "(bench.statement_cpu.generic_inserts: an experiment)",
    )
    parser.add_argument(
        "--generic-look-ups",
        action="store_true",
        help="PostgreSQL: the repeat look-up with its keys as ranges, planned generically "
        "(bench.statement_cpu.generic_look_ups: an experiment)",
    )
    args = parser.parse_args()
    if args.case == "stages":
        stages(args)
        return
    if args.statements:
        statement_cpu.install()
    if args.generic_inserts:
        statement_cpu.generic_inserts()
    if args.generic_look_ups:
        statement_cpu.generic_look_ups()
    run_in_process(lambda bootstrap: run(args, bootstrap), broker=args.broker)


def run_in_process(measure: Callable[[str], Coroutine[Any, Any, None]], *, broker: bool) -> None:
    """Run a measurement given the broker's address: an embedded broker with the ``inproc``
    topics when asked for, else an address nobody answers (the relay retries quietly)."""
    logging.disable(logging.ERROR)  # the relay's retries without a broker
    embedded = EmbeddedBroker().start() if broker else None
    try:
        bootstrap = embedded.bootstrap if embedded else "127.0.0.1:1"
        if embedded:
            asyncio.run(
                create_topics(
                    BusSettings(kafka_bootstrap_servers=bootstrap, kafka_topic_prefix="inproc")
                )
            )
        asyncio.run(measure(bootstrap))
    finally:
        if embedded:
            embedded.stop()


if __name__ == "__main__":
    main()
