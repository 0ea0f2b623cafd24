"""``bench.suite --postgres`` takes the URL in either form the services take: the benchmark's own
connections are asyncpg's, which refuses SQLAlchemy's ``postgresql+asyncpg://``."""

from __future__ import annotations

import argparse

import asyncpg
import pytest

from bench import suite
from tests import support


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
            "postgresql://postgres@127.0.0.1:5432/test",
        ),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("postgres://u:p@db/x?sslmode=disable", "postgres://u:p@db/x?sslmode=disable"),
    ],
)
def test_the_url_is_the_one_asyncpg_connects_to(given: str, used: str) -> None:
    assert suite.postgres_url(given) == used


def test_a_url_of_another_database_is_refused_by_name() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a PostgreSQL URL: 'sqlite"):
        suite.postgres_url("sqlite+aiosqlite:///var/x.db")


@pytest.mark.postgres
async def test_asyncpg_connects_with_the_url_it_is_given() -> None:
    url, reason = await support.postgres_url(support.PG_URL)
    if url is None:
        pytest.skip(reason)
    sqlalchemy_form = "postgresql+asyncpg://" + url.split("://", 1)[1]
    conn = await asyncpg.connect(suite.postgres_url(sqlalchemy_form))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def test_the_schemas_begin_with_the_prefix_asked_for() -> None:
    parser = argparse.ArgumentParser()
    suite.add_arguments(parser)
    args = parser.parse_args(["--schema-prefix", "someone_"])
    stamp = suite.run_stamp(args.schema_prefix)
    assert suite.schema_name("intake", stamp) == f"someone_intake_{stamp}"
    assert suite.application_name("intake", stamp) == f"fq-{stamp}-intake"
    default = suite.run_stamp(parser.parse_args([]).schema_prefix)
    assert suite.schema_name("dispatch", default) == f"bench_suite_dispatch_{default}"
