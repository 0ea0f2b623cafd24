"""Alembic, driven from code: each service keeps its history in a package of its own (the
composition root names it: ``fengqiao.registry``)."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import TYPE_CHECKING

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import ensure_schema

if TYPE_CHECKING:
    from shared.settings import ServiceSettings


def alembic_config(migrations: str, settings: ServiceSettings) -> Config:
    """An Alembic config for the history in package ``migrations`` and a service's database."""
    location = resources.files(migrations)
    cfg = Config()
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["settings"] = settings
    return cfg


def upgrade(migrations: str, settings: ServiceSettings, revision: str = "head") -> None:
    """Bring a service's database to ``revision`` (creating its PostgreSQL schema first)."""
    asyncio.run(ensure_schema(settings))
    command.upgrade(alembic_config(migrations, settings), revision)


async def upgrade_async(migrations: str, settings: ServiceSettings, revision: str = "head") -> None:
    """``upgrade`` for callers already inside an event loop (tests, the CLI supervisor)."""
    await ensure_schema(settings)
    await asyncio.to_thread(command.upgrade, alembic_config(migrations, settings), revision)


def run_env(metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``: online, async, one transaction."""
    settings: ServiceSettings = context.config.attributes["settings"]

    def do_run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        connect_args = {}
        if not settings.is_sqlite and settings.database_schema:
            connect_args["server_settings"] = {"search_path": settings.database_schema}
        engine = create_async_engine(
            settings.database_url, poolclass=pool.NullPool, connect_args=connect_args
        )
        try:
            async with engine.connect() as connection:
                await connection.run_sync(do_run)
                await connection.commit()
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        raise RuntimeError("offline migrations are not supported; run against a database")
    asyncio.run(run_async())
