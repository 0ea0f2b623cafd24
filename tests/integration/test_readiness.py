"""/healthz answers while the process lives; /readyz only when the database and broker do."""

from __future__ import annotations

import httpx
import pytest

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.broker import free_port
from tests.support import TEST_SECRETS, as_role, lifespan, make_settings, wait_until


async def test_readyz_is_503_naming_the_broker_when_it_is_unreachable(sqlite_db, prefix) -> None:
    settings = await make_settings(
        IntakeSettings,
        service="intake",
        database=sqlite_db,
        bootstrap=f"127.0.0.1:{free_port()}",
        prefix=prefix,
    )
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake"
        ) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert (checks["database"], checks["broker"]) == ("ok", "unreachable")
        # Tickets are still accepted durably: the outbox holds them until the broker returns.
        posted = await client.post("/tickets", json={"title": "停水", "content": "整栋楼停水一天"})
        assert posted.status_code == 201


async def test_readyz_is_200_with_broker_and_database(broker, sqlite_db, prefix) -> None:
    settings = await make_settings(
        IntakeSettings,
        service="intake",
        database=sqlite_db,
        bootstrap=broker.bootstrap,
        prefix=prefix,
    )
    app = create_app(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake"
        ) as client,
    ):

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await wait_until(ready, what="intake ready")
        body = (await client.get("/readyz")).json()
        assert (body["checks"]["database"], body["checks"]["broker"]) == ("ok", "ok")


def test_settings_refuse_an_unknown_database_driver() -> None:
    with pytest.raises(ValueError, match="database_url"):
        IntakeSettings(database_url="mysql://root@localhost/x")


def test_settings_read_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    # with a PostgreSQL URL the development secrets are refused: the test supplies its own
    monkeypatch.setenv("AUTH_TOKEN_SECRET", TEST_SECRETS["auth_token_secret"])
    monkeypatch.setenv("INTAKE_CITIZEN_HASH_SALT", TEST_SECRETS["citizen_hash_salt"])
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19999")
    monkeypatch.setenv("DISPATCH_DATABASE_URL", "sqlite+aiosqlite:///elsewhere.db")
    settings = IntakeSettings()
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19999"


async def test_operator_endpoints_replay_and_list_dead_letters(broker, sqlite_db, prefix) -> None:
    settings = await make_settings(
        IntakeSettings,
        service="intake",
        database=sqlite_db,
        bootstrap=broker.bootstrap,
        prefix=prefix,
        auth_mode="token",
    )
    app = create_app(settings)
    operator = as_role("operator")
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake"
        ) as client,
    ):
        posted = await client.post(
            "/tickets", json={"title": "停水", "content": "整栋楼停水一天"}, headers=operator
        )
        assert posted.status_code == 201
        since = "2000-01-01T00:00:00Z"

        async def replayed() -> bool:
            response = await client.post(
                "/admin/outbox/replay", params={"since": since}, headers=operator
            )
            return response.status_code == 200 and response.json()["requeued"] == 1

        await wait_until(replayed, what="the published ticket event to be re-queued")
        hotline = await client.post(
            "/admin/outbox/replay", params={"since": since}, headers=as_role("hotline")
        )
        assert hotline.status_code == 403
        naive = await client.post(
            "/admin/outbox/replay", params={"since": "2000-01-01T00:00:00"}, headers=operator
        )
        assert naive.status_code == 422 and "since" in naive.json()["detail"]
        dead = await client.get("/admin/dead-letters", headers=operator)
        assert dead.status_code == 200 and dead.json() == []
