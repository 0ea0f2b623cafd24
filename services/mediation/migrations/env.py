"""Alembic environment for the mediation service's database."""

from services.mediation.models import metadata
from shared.migrate import run_env

run_env(metadata)
