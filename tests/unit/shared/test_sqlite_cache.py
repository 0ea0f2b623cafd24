"""A service's SQLite page cache: its own size where its settings name one, SQLite's otherwise."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from services.evaluation.settings import EvaluationSettings
from shared.db import create_engine
from shared.settings import ServiceSettings
from tests.support import TEST_SECRETS


async def _cache_size(settings: ServiceSettings) -> int:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA cache_size"))).scalar_one())
    finally:
        await engine.dispose()


async def test_evaluation_keeps_64_mib_of_pages_and_other_services_sqlite_s_default(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    evaluation = EvaluationSettings(**TEST_SECRETS, database_url=url)
    assert await _cache_size(evaluation) == -64 * 1024  # KiB, as SQLite states a size
    other = ServiceSettings(**TEST_SECRETS, database_url=url)
    assert await _cache_size(other) == -2000  # SQLite's default: untouched
    sized = ServiceSettings(**TEST_SECRETS, database_url=url, sqlite_cache_mib=8)
    assert await _cache_size(sized) == -8 * 1024
