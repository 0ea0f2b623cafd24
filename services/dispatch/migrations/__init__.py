"""The dispatch service's Alembic history (env.py, versions/)."""
