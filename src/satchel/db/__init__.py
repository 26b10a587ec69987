"""Metadata database: models (tables), session (engine + unit of work), migrations (Alembic)."""
