"""Alembic environment for the dispatch service's database."""

from services.dispatch.models import metadata
from shared.migrate import run_env

run_env(metadata)
