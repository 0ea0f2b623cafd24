"""The evaluation service's Alembic history (env.py, versions/)."""
