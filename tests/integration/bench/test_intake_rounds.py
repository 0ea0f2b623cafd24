"""``make bench``'s intake cases in rounds: each durable post against its own round's ceiling, the
median round the one of record, and every case started after a checkpoint on a quiet machine."""

from __future__ import annotations

import argparse

import pytest

from bench import intake, run
from tests import support


def result(name: str, per_s: float, round_: int, items: int = 1) -> intake.Result:
    return intake.Result(
        name=name,
        requests_per_s=per_s / items,
        p50_ms=1.0,
        p99_ms=2.0,
        errors=0,
        wrk_cpu_share=0.1,
        items_per_request=items,
        round=round_,
    )


CEILING = "ceiling: bare FastAPI, validate only"
PG = "intake durable POST /tickets, PostgreSQL"


def three_rounds() -> list[intake.Result]:
    # Shares of each round's own ceiling: 40 %, 50 %, 30 %. Against round 1's ceiling alone they
    # would be 40 %, 45 %, 35 %.
    return [
        result(CEILING, 10_000, 1),
        result(PG, 4_000, 1),
        result(CEILING, 9_000, 2),
        result(PG, 4_500, 2),
        result(CEILING, 11_667, 3),
        result(PG, 3_500, 3),
        result("batch ceiling: bare FastAPI, parse + validate rows", 300_000, 1, 1000),
        result("intake batch CSV (1000 rows), PostgreSQL", 9_000, 1, 1000),
    ]


def args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    intake.add_arguments(parser)
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in kw.items()])


def test_the_round_of_record_is_the_median_share_of_its_own_rounds_ceiling() -> None:
    results = three_rounds()
    chosen, shares = intake.of_record(results, PG)
    assert chosen is not None
    assert chosen.round == 1
    assert [round(s, 3) for s in shares] == [0.4, 0.5, 0.3]
    # a batch is compared with the batch ceiling, not the single posts' one
    batch = results[-1]
    assert intake.share_of_ceiling(results, batch) == pytest.approx(0.03)


def test_the_targets_quote_the_median_round_and_every_rounds_share() -> None:
    lines = run.intake_targets(three_rounds())
    post = next(line for line in lines if line.startswith(f"- {PG}"))
    assert "= 40% of the ceiling (round 1, the median of 3: 40%, 50%, 30%)" in post
    assert post.endswith("— met")
    batch = next(line for line in lines if "batch" in line)
    assert "9,000 tickets/s against ≥ 20,000 — missed by 2.2×" in batch


def test_the_table_names_each_round_and_uses_its_ceiling() -> None:
    table = intake.render(three_rounds(), args(rounds=3))
    assert "in 3 rounds, each post against its own round's ceiling" in table
    row = next(line for line in table.splitlines() if line.startswith(f"| {PG} (round 3)"))
    assert "| 30% |" in row
    batch = next(line for line in table.splitlines() if line.startswith("| intake batch"))
    assert "(round" not in batch


def test_one_round_reads_as_before() -> None:
    results = three_rounds()[:2]
    chosen, shares = intake.of_record(results, PG)
    assert chosen is results[1]
    assert shares == [0.4]
    assert "(round" not in intake.render(results, args())
    assert "the median of" not in "\n".join(run.intake_targets(results))


def test_the_cases_run_round_by_round_then_the_batches_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []

    def ceiling(name: str, *_: object) -> intake.Result:
        order.append(name.split(":")[0])
        return result(name, 1.0, 1)

    def database(kind: str, label: str, *rest: object) -> None:
        order.append(f"{label.split(' ')[1]} {kind}")
        results = rest[-1]
        assert isinstance(results, list)
        results.append(result(f"{label}, {kind}", 1.0, 1))

    settled: list[str] = []
    monkeypatch.setattr(intake, "bench_ceiling", ceiling)
    monkeypatch.setattr(intake, "bench_database_cases", database)
    monkeypatch.setattr(intake, "settle", lambda a: settled.append("x") or f"case {len(settled)}")
    monkeypatch.setattr(intake, "batch_template", lambda path, rows: path.write_text(""))
    got = intake.run_cases(
        args(rounds=2, only="ceiling,single-postgres,batch-ceiling,batch-postgres")
    )
    assert order == [
        "ceiling",
        "durable postgres",
        "ceiling",
        "durable postgres",
        "batch ceiling",
        "batch postgres",
    ]
    assert [r.round for r in got] == [1, 1, 2, 2, 1, 1]
    assert [r.settled for r in got] == [f"case {n}" for n in range(1, 7)]


def test_settling_can_be_turned_off() -> None:
    assert intake.settle(args(settle_seconds=0)) == ""


def test_settling_says_when_there_was_no_database_to_checkpoint() -> None:
    found = intake.settle(
        args(settle_seconds=5, postgres="postgresql://postgres@127.0.0.1:9/none"),
        quiet_cores=1_000.0,
        window_s=0.05,
    )
    assert found.startswith("no checkpoint (")
    assert ", quiet: " in found


def test_settling_waits_no_longer_than_it_is_given_on_a_busy_machine() -> None:
    found = intake.settle(
        args(settle_seconds=1, postgres="postgresql://postgres@127.0.0.1:9/none"),
        quiet_cores=-1.0,
        window_s=0.2,
    )
    assert "not quiet after 1 s" in found


@pytest.mark.postgres
async def test_settling_checkpoints_the_server() -> None:
    url, reason = await support.postgres_url(support.PG_URL)
    if url is None:
        pytest.skip(reason)
    import asyncio

    found = await asyncio.to_thread(
        intake.settle, args(settle_seconds=5, postgres=url), quiet_cores=1_000.0, window_s=0.05
    )
    assert found.startswith("checkpoint ")
