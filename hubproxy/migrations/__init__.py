"""Alembic migrations of hubproxy's database (run at start; an upgrade never wipes the cache)."""
