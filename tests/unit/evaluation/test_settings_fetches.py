"""Evaluation's fetch size: on PostgreSQL a backlog is folded in fetches of up to 2,000 records
(more of a ticket's events in one fetch, fewer cells moved an event); on either database a fetch
waits for 1 MiB rather than 64 KiB, so that the steady state's fetches are not a few dozen events
each, up to 1 s on PostgreSQL (fewer tickets whose receipt and assignment fall in different
fetches) and 500 ms on SQLite; SQLite, whose one writer holds its lock for the whole fetch, keeps
the shared 500 records at most; a value set is always taken."""

from __future__ import annotations

import pytest

from services.evaluation.settings import (
    BACKLOG_BATCH_MAX_RECORDS,
    GATHER_FETCH_MAX_WAIT_MS,
    GATHER_FETCH_MIN_BYTES,
    EvaluationSettings,
)

POSTGRES = {
    "database_url": "postgresql+asyncpg://postgres@127.0.0.1/test",
    "auth_token_secret": "a secret of this deployment's own, long enough",
}


def test_evaluation_fetches_more_records_on_postgresql_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVALUATION_CONSUMER_BATCH_MAX_RECORDS", raising=False)
    assert BACKLOG_BATCH_MAX_RECORDS == 2000
    assert EvaluationSettings(**POSTGRES).consumer_batch_max_records == 2000
    assert EvaluationSettings().consumer_batch_max_records == 500  # SQLite


def test_a_fetch_size_set_is_taken_on_either_database(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        EvaluationSettings(**POSTGRES, consumer_batch_max_records=7).consumer_batch_max_records == 7
    )
    monkeypatch.setenv("EVALUATION_CONSUMER_BATCH_MAX_RECORDS", "300")
    assert EvaluationSettings(**POSTGRES).consumer_batch_max_records == 300
    assert EvaluationSettings().consumer_batch_max_records == 300


def test_evaluation_fetches_wait_for_a_mebibyte_on_either_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVALUATION_CONSUMER_FETCH_MIN_BYTES", raising=False)
    assert GATHER_FETCH_MIN_BYTES == 1 << 20
    postgres = EvaluationSettings(**POSTGRES)
    assert postgres.consumer_fetch_min_bytes == 1 << 20
    assert EvaluationSettings().consumer_fetch_min_bytes == 1 << 20  # SQLite too
    # A value set is taken on either database.
    assert EvaluationSettings(**POSTGRES, consumer_fetch_min_bytes=1).consumer_fetch_min_bytes == 1
    monkeypatch.setenv("EVALUATION_CONSUMER_FETCH_MIN_BYTES", "4096")
    assert EvaluationSettings(**POSTGRES).consumer_fetch_min_bytes == 4096
    assert EvaluationSettings().consumer_fetch_min_bytes == 4096


def test_evaluation_fetches_on_postgresql_wait_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALUATION_CONSUMER_FETCH_MAX_WAIT_MS", raising=False)
    assert GATHER_FETCH_MAX_WAIT_MS == 1000
    assert EvaluationSettings(**POSTGRES).consumer_fetch_max_wait_ms == 1000
    assert EvaluationSettings().consumer_fetch_max_wait_ms == 500  # SQLite: the shared default
    # A value set is taken on either database.
    set_here = EvaluationSettings(**POSTGRES, consumer_fetch_max_wait_ms=200)
    assert set_here.consumer_fetch_max_wait_ms == 200
    monkeypatch.setenv("EVALUATION_CONSUMER_FETCH_MAX_WAIT_MS", "300")
    assert EvaluationSettings(**POSTGRES).consumer_fetch_max_wait_ms == 300
    assert EvaluationSettings().consumer_fetch_max_wait_ms == 300
