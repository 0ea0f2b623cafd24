"""The mediation service's Alembic history (env.py, versions/)."""
