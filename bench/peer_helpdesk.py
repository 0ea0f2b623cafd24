"""The peer: django-helpdesk's ticket API on the same machine and PostgreSQL, against intake.

    python -m bench.peer_helpdesk [--seconds 20] [--warmup 5] [--connections 64]
                                  [--postgres URL] [--no-intake] [--out FILE]

Sets itself up from nothing: a virtualenv in ``bench/.peer/venv`` (git ignores it) with
django-helpdesk and its server from PyPI (``PEER_REQUIREMENTS``, pinned), a database of its own
on the PostgreSQL of ``--postgres`` (created for the run and dropped after it), django-helpdesk's
migrations, a staff user with a DRF token and one queue. Then gunicorn with 2 sync workers serves
the minimal project in ``bench/peer_site`` on 127.0.0.1, and wrk posts the same ~1 KB Chinese
ticket intake gets (``bench/post_peer_ticket.lua``) to ``POST /helpdesk/api/tickets/`` with the
token, 64 connections, after a warm-up — the shape of intake's durable single POST case.

Reported: tickets/s, p50 / p99, wrk's errors and CPU share, gunicorn's CPU (and per ticket),
each gunicorn process's peak RSS, transactions and rows inserted per ticket
(``pg_stat_database`` of the peer's own database, read after the server has closed its
connections), tickets stored against 2xx answers, and the ratio of intake's durable POST on
PostgreSQL — measured in the same run (``make bench`` passes its own; alone, this script
measures it unless ``--no-intake``) — to the peer. When the peer cannot be installed or
started, the result says why instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import httpx

from bench.intake import (
    HERE,
    LOGS,
    POSTGRES_URL,
    RESULTS,
    Result,
    measure,
    require_wrk,
    run_cases,
    spawn_logged,
    stop_server,
)
from bench.intake import add_arguments as add_intake_arguments
from shared.broker import free_port

PEER_DIR = HERE / ".peer"
VENV = PEER_DIR / "venv"
PEER_REQUIREMENTS = (
    "django-helpdesk==2.6.1",
    "Django==5.2.19",
    "djangorestframework==3.18.3",
    "gunicorn==27.0.1",
    "psycopg[binary]==3.3.9",
)
VERSIONS_OF = ("django-helpdesk", "Django", "djangorestframework", "gunicorn", "psycopg")

INTAKE_CONFIGURATION = (
    "intake: FastAPI under uvicorn, 2 workers (uvloop, httptools); `POST /tickets`, the ticket "
    "and its event committed (group commit) before the 2xx; PostgreSQL 15 on the same machine "
    "(a schema in its own database); the embedded tansu broker; auth mode `open` (the embedded "
    "default: no credential checked)"
)

# Creates the staff user with its DRF token and the queue; prints what wrk needs.
SETUP_CODE = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from helpdesk.models import Queue
user, _ = get_user_model().objects.get_or_create(
    username="bench", defaults={"is_staff": True, "is_superuser": True})
token, _ = Token.objects.get_or_create(user=user)
queue, _ = Queue.objects.get_or_create(slug="hotline", defaults={"title": "12345 热线"})
print("PEER_READY", token.key, queue.id)
"""


class PeerUnavailable(RuntimeError):
    """The peer could not be installed, set up or started; the message says which step and why."""


@dataclass
class PeerResult:
    status: str  # "measured" or "not measured"
    reason: str = ""
    configuration: str = ""
    intake_configuration: str = INTAKE_CONFIGURATION
    versions: dict[str, str] = field(default_factory=dict)
    connections: int = 0
    seconds: int = 0
    tickets_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: str = ""
    wrk_cpu_share: float | None = None
    server_cpu_share: float | None = None
    server_cpu_ms_per_ticket: float | None = None
    machine_cpu_busy: float | None = None
    server_rss_mb: list[float] = field(default_factory=list)
    stored: int | None = None  # helpdesk tickets in the database afterwards
    accepted: int | None = None  # 2xx answers over warm-up and measured run
    transactions_per_ticket: float | None = None
    rows_inserted_per_ticket: float | None = None
    intake_requests_per_s: float | None = None
    intake_to_peer: float | None = None  # intake's durable POST on PostgreSQL / the peer's


# --- set-up ------------------------------------------------------------------------------------


def _run(cmd: list[str], step: str, **kwargs: Any) -> str:
    """Run a set-up command; a failure raises ``PeerUnavailable`` with the end of its output."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
        raise PeerUnavailable(f"{step} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def install() -> dict[str, str]:
    """The peer's virtualenv with ``PEER_REQUIREMENTS`` (again only when they changed);
    returns the installed versions."""
    stamp = VENV / ".bench-requirements"
    wanted = "\n".join(PEER_REQUIREMENTS)
    python = str(VENV / "bin" / "python")
    if not stamp.exists() or stamp.read_text() != wanted:
        PEER_DIR.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(VENV)], "creating bench/.peer/venv")
        _run(
            [python, "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS],
            f"pip install {' '.join(PEER_REQUIREMENTS)}",
            timeout=900,
        )
        stamp.write_text(wanted)
    out = _run(
        [
            python,
            "-c",
            "import json, importlib.metadata as m; "
            f"print(json.dumps({{n: m.version(n) for n in {list(VERSIONS_OF)!r}}}))",
        ],
        "reading the peer's versions",
    )
    return dict(json.loads(out))


def peer_environment(postgres: str, database: str) -> dict[str, str]:
    """What ``bench/peer_site/settings.py`` reads: the peer's database on the same server."""
    url = urlsplit(postgres)
    return {
        "PATH": str(VENV / "bin") + ":/usr/bin:/bin",
        "PYTHONPATH": str(HERE),
        "DJANGO_SETTINGS_MODULE": "peer_site.settings",
        "PEER_DATABASE_NAME": database,
        "PEER_DATABASE_USER": unquote(url.username or "postgres"),
        "PEER_DATABASE_PASSWORD": unquote(url.password or ""),
        "PEER_DATABASE_HOST": url.hostname or "127.0.0.1",
        "PEER_DATABASE_PORT": str(url.port or 5432),
    }


async def _admin(postgres: str, statement: str) -> None:
    conn = await asyncpg.connect(postgres)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _database_stats(postgres: str, database: str) -> tuple[int, int, int]:
    """(commits, rows inserted) of the peer's database so far, and its helpdesk tickets."""
    conn = await asyncpg.connect(postgres)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted FROM pg_stat_database WHERE datname = $1", database
        )
    finally:
        await conn.close()
    peer = await asyncpg.connect(postgres, database=database)
    try:
        tickets = int(await peer.fetchval("SELECT count(*) FROM helpdesk_ticket"))
    finally:
        await peer.close()
    assert row is not None
    return int(row["xact_commit"]), int(row["tup_inserted"]), tickets


def settle(postgres: str, database: str, limit_s: float = 120.0) -> int:
    """Wait until the server has stored the posts still queued from the warm-up (a sync worker
    serves each accepted connection even after wrk hung up on it), so the measured run neither
    pays for them nor counts them; return the tickets stored by then."""
    deadline = time.monotonic() + limit_s
    last = -1
    while time.monotonic() < deadline:
        now = asyncio.run(_database_stats(postgres, database))[2]
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    return last


def start_gunicorn(env: dict[str, str], port: int, token: str) -> subprocess.Popen[bytes]:
    """gunicorn, 2 sync workers, on 127.0.0.1; its log goes to ``LOGS/peer-helpdesk.log``."""
    log = LOGS / "peer-helpdesk.log"
    proc = spawn_logged(
        [
            str(VENV / "bin" / "gunicorn"),
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(HERE),
            "--no-control-socket",
            "--log-level",
            "warning",
            "peer_site.wsgi:application",
        ],
        env,
        log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerUnavailable(f"gunicorn exited ({proc.returncode}); see {log}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(
                f"http://127.0.0.1:{port}/helpdesk/api/tickets/?page_size=1",
                headers={"Authorization": f"Token {token}"},
                timeout=2,
            )
            if answer.status_code == 200:
                return proc
        time.sleep(0.3)
    stop_server(proc)
    raise PeerUnavailable(f"django-helpdesk did not answer within 60 s; see {log}")


# --- the case ------------------------------------------------------------------------------------


def measure_peer(args: argparse.Namespace) -> PeerResult:
    """Install, set up, serve and load the peer; ``PeerUnavailable`` says what stopped it."""
    versions = install()
    database = f"bench_helpdesk_{int(time.time())}"
    env = peer_environment(args.postgres, database)
    python = str(VENV / "bin" / "python")
    try:
        asyncio.run(_admin(args.postgres, f'CREATE DATABASE "{database}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        where = urlsplit(args.postgres)
        raise PeerUnavailable(
            f"creating the peer's database {database} on {where.hostname}:{where.port or 5432} "
            f"failed: {exc}"
        ) from exc
    try:
        _run([python, "-m", "django", "migrate", "--noinput"], "django-helpdesk migrate", env=env)
        out = _run([python, "-m", "django", "shell", "-c", SETUP_CODE], "peer set-up", env=env)
        ready = next((line.split() for line in out.splitlines() if "PEER_READY" in line), None)
        if ready is None:
            raise PeerUnavailable(f"peer set-up printed no token:\n{out[-800:]}")
        token, queue = ready[1], ready[2]
        commits0, inserted0, _ = asyncio.run(_database_stats(args.postgres, database))
        port = free_port()
        server = start_gunicorn(env, port, token)
        before_measured: list[int] = []
        try:
            wrk_args = argparse.Namespace(
                warmup=args.warmup,
                seconds=args.seconds,
                connections=args.connections,
                batch_connections=0,
                batch_rows=1,
                batch_seconds=0,
                profile=None,
            )
            result = measure(
                "django-helpdesk POST /helpdesk/api/tickets/",
                f"http://127.0.0.1:{port}/helpdesk/api/tickets/",
                wrk_args,
                server,
                script="post_peer_ticket.lua",
                script_args=(token, queue),
                after_warmup=lambda: before_measured.append(settle(args.postgres, database)),
            )
        finally:
            stop_server(server)
        time.sleep(1)  # the server's backends report their statistics as they exit
        commits1, inserted1, stored = asyncio.run(_database_stats(args.postgres, database))
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            asyncio.run(_admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    per = max(stored, 1)
    in_measured = stored - before_measured[0] if before_measured else 0
    return PeerResult(
        status="measured",
        configuration=(
            f"peer: django-helpdesk {versions['django-helpdesk']} (Django {versions['Django']}, "
            f"DRF {versions['djangorestframework']}) under gunicorn {versions['gunicorn']}, "
            f"2 sync workers; psycopg {versions['psycopg']}, persistent connections "
            "(CONN_MAX_AGE 600), DEBUG off, e-mail off; DRF token auth for a staff user; "
            "`POST /helpdesk/api/tickets/`; its own database on the same PostgreSQL 15"
        ),
        versions=versions,
        connections=args.connections,
        seconds=args.seconds,
        tickets_per_s=result.requests_per_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors_text(),
        wrk_cpu_share=result.wrk_cpu_share,
        server_cpu_share=result.server_cpu_share,
        server_cpu_ms_per_ticket=(
            round(1000 * result.server_cpu_share * args.seconds / in_measured, 2)
            if result.server_cpu_share and in_measured > 0
            else None
        ),
        machine_cpu_busy=result.machine_cpu_busy,
        server_rss_mb=result.server_rss_mb,
        stored=stored,
        accepted=result.accepted,
        transactions_per_ticket=round((commits1 - commits0) / per, 1),
        rows_inserted_per_ticket=round((inserted1 - inserted0) / per, 1),
    )


def run(args: argparse.Namespace, intake: Result | None) -> PeerResult:
    """The peer's case; the ratio against ``intake`` (intake's durable POST on PostgreSQL)."""
    try:
        peer = measure_peer(args)
    # PeerUnavailable, and wrk failing, are RuntimeErrors; the rest of the run goes on.
    except (
        RuntimeError,
        OSError,
        httpx.HTTPError,
        asyncpg.PostgresError,
        subprocess.SubprocessError,
    ) as exc:
        print(f"django-helpdesk not measured: {exc}", file=sys.stderr)
        peer = PeerResult(status="not measured", reason=str(exc))
    if intake is not None:
        peer.intake_requests_per_s = intake.requests_per_s
        if peer.tickets_per_s:
            peer.intake_to_peer = round(intake.requests_per_s / peer.tickets_per_s, 1)
    return peer


def render(peer: PeerResult) -> str:
    """The peer beside intake, both configurations stated."""
    if peer.status != "measured":
        first, _, rest = peer.reason.partition("\n")
        details = f"\n\n```\n{rest}\n```" if rest else ""
        return f"django-helpdesk peer: **not measured** — {first}{details}"
    intake = f"{peer.intake_requests_per_s:,.0f}" if peer.intake_requests_per_s is not None else "—"
    ratio = f"{peer.intake_to_peer}×" if peer.intake_to_peer is not None else "—"

    def num(value: float | None, unit: str = "") -> str:
        return "—" if value is None else f"{value:,}{unit}"

    return "\n".join(
        [
            f"{peer.connections} connections, {peer.seconds} s measured after a warm-up.",
            "",
            "| case | tickets/s | p50 ms | p99 ms | errors | server CPU (cores) "
            "| server CPU per ticket | transactions / rows inserted per ticket | wrk CPU "
            "| machine busy | tickets stored / answered 2xx | peak RSS MB (each process) "
            "| intake durable POST, PostgreSQL, same run | intake ÷ peer |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            f"| django-helpdesk `POST /helpdesk/api/tickets/` | {num(peer.tickets_per_s)} "
            f"| {num(peer.p50_ms)} | {num(peer.p99_ms)} | {peer.errors} "
            f"| {num(peer.server_cpu_share)} | {num(peer.server_cpu_ms_per_ticket, ' ms')} "
            f"| {num(peer.transactions_per_ticket)} / {num(peer.rows_inserted_per_ticket)} "
            f"| {num(peer.wrk_cpu_share)} | {num(peer.machine_cpu_busy)} "
            f"| {peer.stored} / {peer.accepted} "
            f"| {' + '.join(f'{m:.0f}' for m in peer.server_rss_mb)} | {intake} | {ratio} |",
            "",
            f"- {peer.intake_configuration}.",
            f"- {peer.configuration}.",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The peer's options (as intake's single POST case: 20 s after 5 s, 64 connections)."""
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument(
        "--no-intake", action="store_true", help="skip intake's durable POST (no ratio)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "peer.json")
    args = parser.parse_args()
    require_wrk()
    intake = None
    if not args.no_intake:
        intake_args = argparse.ArgumentParser()
        add_intake_arguments(intake_args)
        options = intake_args.parse_args(
            [
                *("--only", "single-postgres", "--postgres", args.postgres),
                *("--seconds", str(args.seconds), "--warmup", str(args.warmup)),
                *("--connections", str(args.connections)),
            ]
        )
        intake = next(iter(run_cases(options)), None)
    peer = run(args, intake)
    print(render(peer))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(peer), indent=2))


if __name__ == "__main__":
    main()
