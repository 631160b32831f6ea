"""Alembic migrations of the service database (env.py reads app.settings)."""
