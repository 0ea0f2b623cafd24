"""Several uvicorn workers of one app, each accepting on a listening socket of its own.

    python -m fengqiao.serve services.intake.app:create_app --factory --workers 2 \
        [--host 127.0.0.1] [--port 8000] [--no-access-log] [--log-level warning] \
        [--timeout-graceful-shutdown 5] [--forwarded-allow-ips 10.0.0.1]

``uvicorn --workers N`` hands its workers one listening socket: every worker's loop wakes on a
new connection and the first to call ``accept`` takes it, and the connections a client opens at
once tend to land on whichever worker woke first. A client that keeps its connections (wrk, a
channel's gateway) can leave one worker with nearly all of them and the other idle. Here each
worker gets a socket of its own bound to the same address with ``SO_REUSEPORT``, and the kernel
spreads new connections over them by their addresses and ports.

The sockets are bound and listening before the first worker starts, so a connection opened while
a worker is still importing waits in its socket's backlog instead of going to the others. A
worker that dies is started again on its socket. SIGTERM or SIGINT is passed to every worker
(uvicorn's graceful shutdown); the supervisor exits when they all have.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

RESTART_DELAY_S = 1.0


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket on ``host:port`` that other sockets may bind beside (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fengqiao.serve", description=__doc__.split("\n")[0])
    parser.add_argument("app", help="module:attribute, as uvicorn takes it")
    parser.add_argument("--factory", action="store_true", help="the attribute builds the app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=None)
    parser.add_argument("--forwarded-allow-ips", default=None, help="as uvicorn's")
    parser.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's own
    return parser.parse_args(argv)


def run_worker(args: argparse.Namespace) -> None:
    """One uvicorn server on the inherited socket ``args.fd`` (uvloop and httptools if present)."""
    import uvicorn  # only the workers need it

    config = uvicorn.Config(
        args.app,
        factory=args.factory,
        host=args.host,
        port=args.port,
        access_log=not args.no_access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])


def worker_command(args: argparse.Namespace, fd: int) -> list[str]:
    cmd = [sys.executable, "-m", "fengqiao.serve", args.app, "--fd", str(fd)]
    cmd += ["--host", args.host, "--port", str(args.port), "--log-level", args.log_level]
    if args.factory:
        cmd.append("--factory")
    if args.no_access_log:
        cmd.append("--no-access-log")
    if args.timeout_graceful_shutdown is not None:
        cmd += ["--timeout-graceful-shutdown", str(args.timeout_graceful_shutdown)]
    if args.forwarded_allow_ips is not None:
        cmd += ["--forwarded-allow-ips", args.forwarded_allow_ips]
    return cmd


def supervise(args: argparse.Namespace) -> int:
    """Bind a socket a worker, start the workers, restart one that dies, stop them on a signal."""
    sockets = [listening_socket(args.host, args.port) for _ in range(max(1, args.workers))]
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def start(sock: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(worker_command(args, sock.fileno()), pass_fds=[sock.fileno()])

    workers: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    workers.extend(start(sock) for sock in sockets)
    while True:
        alive = [proc.poll() is None for proc in workers]
        if stopping:
            if not any(alive):
                return 0
        else:
            for i, proc_alive in enumerate(alive):
                if not proc_alive:
                    time.sleep(RESTART_DELAY_S)  # a worker that cannot start does not spin
                    if not stopping:
                        workers[i] = start(sockets[i])
        time.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fd is not None:
        run_worker(args)
        return 0
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
