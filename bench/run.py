"""``make bench``: every case in one run — intake's (with the ceilings), the peer, the whole suite.

    python -m bench.run [intake's options: --seconds, --warmup, --connections, --batch-...]
                        [--suite-seconds 300] [--suite-connections 16] [--suite-databases ...]
                        [--drain-timeout 300] [--suite-windows 30] [--peer-seconds 20]
                        [--peer-warmup 5]
                        [--peer-connections 64] [--skip suite,peer] [--label TEXT]
                        [--out bench/results/bench.json] [--docs docs/benchmarks.md | --no-docs]

Order: the ceilings and intake's cases (``bench/intake.py``; by default the ceiling and the single
posts in 3 rounds with the median round of record, and every case after a ``CHECKPOINT`` and up
to 60 s of waiting for a quiet machine: ``--rounds``, ``--settle-seconds``), django-helpdesk
right after them (``bench/peer_helpdesk.py``: its ratio is against intake's durable POST on
PostgreSQL of this run, the median round), then the whole suite on SQLite and on PostgreSQL
(``bench/suite.py``). Everything is saved as one JSON file, and the block between the ``make
bench`` markers in docs/benchmarks.md is rewritten with this run's tables (the prose around it
is not touched).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import intake, peer_helpdesk, suite

BEGIN = "<!-- make bench: begin (written by bench/run.py; edits inside are overwritten) -->"
END = "<!-- make bench: end -->"


def _sub(args: argparse.Namespace, prefix: str, names: tuple[str, ...]) -> argparse.Namespace:
    """The options of one case, from the prefixed ones of this script."""
    return argparse.Namespace(
        postgres=args.postgres, **{n: getattr(args, f"{prefix}_{n}") for n in names}
    )


def machine() -> dict[str, str]:
    load = Path("/proc/loadavg").read_text().split()[:3]
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=intake.ROOT,
    ).stdout.strip()
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": str(os.cpu_count()),
        "load average": " ".join(load),
        "commit": commit or "unknown",
    }


def intake_targets(results: list[intake.Result]) -> list[str]:
    """Issue 13's intake targets beside this run's numbers: for the single posts, the round of
    record (the median share of its own round's ceiling) and every round's share."""
    lines = []
    for name in dict.fromkeys(r.name for r in results):
        if name.startswith("intake durable POST"):
            r, shares = intake.of_record(results, name)
            ceiling = intake.ceiling_of(results, r) if r is not None else None
            if r is None or ceiling is None:
                continue
            need = 0.4 * ceiling.items_per_s
            rounds = (
                f" (round {r.round}, the median of {len(shares)}: "
                + ", ".join(f"{s:.0%}" for s in shares)
                + ")"
                if len(shares) > 1
                else ""
            )
            lines.append(
                f"- {name}: {r.items_per_s:,.0f} req/s = "
                f"{r.items_per_s / ceiling.items_per_s:.0%} of the ceiling{rounds}, against "
                f"≥ 40 % (≥ {need:,.0f} req/s) — {intake.missed_by(r.items_per_s, need)}"
            )
        elif name.startswith("intake batch") and name.endswith("PostgreSQL"):
            r = next(x for x in results if x.name == name)
            lines.append(
                f"- {name}: {r.items_per_s:,.0f} tickets/s against ≥ 20,000 — "
                f"{intake.missed_by(r.items_per_s, 20_000)}"
            )
    return ["", "Against the targets:", "", *lines] if lines else []


def render(
    args: argparse.Namespace,
    about: dict[str, str],
    intake_results: list[intake.Result],
    peer: peer_helpdesk.PeerResult | None,
    suite_results: list[suite.SuiteResult | suite.SuiteFailure],
) -> str:
    lines = [
        f"Run of {about['started']} ({args.label}); commit {about['commit']}, "
        f"{about['cores']} cores, load average at start {about['load average']}.",
        "",
        "### Intake against the ceilings",
        "",
        intake.render(intake_results, args) if intake_results else "(skipped)",
        *intake_targets(intake_results),
        "",
        "### The peer: django-helpdesk",
        "",
        peer_helpdesk.render(peer) if peer is not None else "(skipped)",
        "",
        "### The whole suite",
        "",
        suite.render(suite_results) if suite_results else "(skipped)",
    ]
    return "\n".join(lines)


def rewrite_docs(path: Path, block: str) -> None:
    """Replace the marked block (appending a section with the markers if there is none)."""
    text = path.read_text(encoding="utf-8")
    inner = f"{BEGIN}\n\n{block}\n\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + inner + tail
    else:
        text = text.rstrip("\n") + "\n\n## Latest `make bench`\n\n" + inner + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    intake.add_arguments(parser)
    # One run of a post lands anywhere in ±15 % of its share here: the ceiling and the posts are
    # run three times and the median round is the one of record; each case starts after a
    # CHECKPOINT on a quiet machine.
    parser.set_defaults(rounds=3, settle_seconds=60)
    parser.add_argument("--suite-seconds", type=int, default=300, help="the target: 5 minutes")
    parser.add_argument("--suite-connections", type=int, default=16)
    parser.add_argument("--suite-databases", default="sqlite,postgres")
    parser.add_argument("--suite-drain-timeout", type=int, default=300)
    parser.add_argument(
        "--suite-windows",
        type=float,
        default=30,
        help="the suite's CPU a ticket every SECONDS of its load (0: not)",
    )
    parser.add_argument("--peer-seconds", type=int, default=20)
    parser.add_argument("--peer-warmup", type=int, default=5)
    parser.add_argument("--peer-connections", type=int, default=64)
    parser.add_argument("--skip", default="", help="cases to leave out: intake, peer, suite")
    parser.add_argument("--label", default="full run")
    parser.add_argument("--out", type=Path, default=intake.RESULTS / "bench.json")
    parser.add_argument("--docs", type=Path, default=intake.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - {"intake", "peer", "suite"}:
        sys.exit(f"--skip takes intake, peer, suite; not {sorted(skip)}")
    intake.require_wrk()
    about = machine()

    intake_results = [] if "intake" in skip else intake.run_cases(args)
    print(intake.render(intake_results, args), *intake_targets(intake_results), sep="\n")
    peer = None
    if "peer" not in skip:
        same_run, _ = intake.of_record(intake_results, "intake durable POST /tickets, PostgreSQL")
        intake.settle(args)
        peer = peer_helpdesk.run(_sub(args, "peer", ("seconds", "warmup", "connections")), same_run)
        print(peer_helpdesk.render(peer), flush=True)
    suite_results: list[suite.SuiteResult | suite.SuiteFailure] = []
    if "suite" not in skip:
        suite_args = _sub(
            args, "suite", ("seconds", "connections", "databases", "drain_timeout", "windows")
        )
        print(f"suite: {intake.settle(args) or 'not settled'}", flush=True)
        suite_results = suite.run(suite_args)
        print(suite.render(suite_results), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": about,
                "label": args.label,
                "intake": intake.as_json(intake_results),
                "peer": asdict(peer) if peer is not None else None,
                "suite": suite.as_json(suite_results),
            },
            indent=2,
            default=str,
        )
    )
    if not args.no_docs:
        rewrite_docs(args.docs, render(args, about, intake_results, peer, suite_results))
        print(f"\n{args.docs} rewritten between the make bench markers; JSON in {args.out}")


if __name__ == "__main__":
    main()
