"""A SQLite write lock held by another process past the busy timeout: a 503 to retry, not a 500."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from services.intake.models import TICKETS
from tests.integration.intake.support import running
from tests.support import Database


async def test_a_held_write_lock_is_a_503_with_retry_after_and_the_retry_succeeds(
    broker: Any, tmp_path: Path
) -> None:
    database = Database("sqlite", str(tmp_path))
    async with running(database, broker.bootstrap, sqlite_busy_timeout_ms=100) as env:
        body = {
            "external_id": env.unique("busy"),
            "title": "小区路灯不亮",
            "content": "塔山社区3号楼门口路灯坏了三天，晚上很黑。",
            "category_code": "0102",
        }
        other = sqlite3.connect(tmp_path / "intake.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than 100 ms
            refused = await env.client.post("/tickets", json=body)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert "locked" in refused.json()["detail"]
        assert await env.count(TICKETS, TICKETS.c.external_id == body["external_id"]) == 0

        retried = await env.client.post("/tickets", json=body)
        assert retried.status_code == 201, retried.text
