"""hubproxy's database: the engine and migrations (``engine.py``) and every table (``models.py``)."""

from hubproxy.db.engine import (
    DatabaseNotReady,
    check_database_choice,
    head_revision,
    make_engine,
    migrate,
    normalize_url,
    open_existing,
    ping_database,
    record_database,
    redact_url,
    schema_revision,
    upsert,
)

__all__ = ["DatabaseNotReady", "check_database_choice", "head_revision", "make_engine", "migrate", "normalize_url",
           "open_existing", "ping_database", "record_database", "redact_url", "schema_revision", "upsert"]
