"""Alembic environment for the evaluation service's database."""

from services.evaluation.models import metadata
from shared.migrate import run_env

run_env(metadata)
