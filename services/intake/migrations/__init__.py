"""The intake service's Alembic history (env.py, versions/)."""
