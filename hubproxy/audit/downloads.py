"""Download events: queued on the hot path, written in batches, spooled to disk when the database is down.

No event is dropped silently: a batch the database refuses is appended to a JSON Lines spool
file (fsync'd) and replayed before the next batch once the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from hubproxy.observability import metrics

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class DownloadEvent:
    ts: float
    principal: str | None
    token_id: int | None
    project: str | None
    client_ip: str | None
    user_agent: str | None
    repo_type: str
    repo_id: str
    revision: str | None
    commit: str | None
    path: str
    range: str | None
    bytes_sent: int
    status: int
    cache: str | None
    duration: float
    complete: bool


COLUMNS = [f.name for f in fields(DownloadEvent)]
#: Column list for SQL ("commit" is a keyword and needs quotes).
_SQL_COLUMNS = ", ".join('"commit"' if c == "commit" else c for c in COLUMNS)
_INSERT = text(f"INSERT INTO audit_downloads ({_SQL_COLUMNS}) VALUES ({', '.join(':' + c for c in COLUMNS)})")


class AuditLog:
    """The queue of download events and the task that writes them."""

    def __init__(self, engine: Engine, spool: Path, interval: float = 1.0) -> None:
        self.engine = engine
        self.spool = spool
        self.interval = interval
        self._queue: list[DownloadEvent] = []
        self._wake = asyncio.Event()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def record(self, event: DownloadEvent) -> None:
        """Hot path: append to memory, nothing else."""
        self._queue.append(event)
        metrics.AUDIT_QUEUE.set(len(self._queue))
        if len(self._queue) >= BATCH:
            self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        metrics.AUDIT_QUEUE.set(0)
        rows = [asdict(e) for e in batch]
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            spooled = self._read_spool()
            if spooled or rows:
                with self.engine.begin() as conn:
                    for start in range(0, len(spooled) + len(rows), BATCH):
                        conn.execute(_INSERT, (spooled + rows)[start:start + BATCH])
            if spooled:
                self.spool.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - the database is away: keep the events on disk
            if rows:
                log.warning("audit database unavailable (%s); spooling %d events to %s",
                            exc.__class__.__name__, len(rows), self.spool)
                with open(self.spool, "a") as f:
                    for row in rows:
                        f.write(json.dumps(row) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

    def _read_spool(self) -> list[dict[str, Any]]:
        try:
            with open(self.spool) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


def query(engine: Engine, *, since: float | None = None, until: float | None = None, principal: str | None = None,
          repo_id: str | None = None, project: str | None = None, limit: int = 100,
          offset: int = 0) -> list[dict[str, Any]]:
    """Events, newest first, filtered and paginated."""
    where, params = [], {"limit": limit, "offset": offset}
    for column, op, value in (("ts", ">=", since), ("ts", "<", until), ("principal", "=", principal),
                              ("repo_id", "=", repo_id), ("project", "=", project)):
        if value is not None:
            name = f"p{len(params)}"
            where.append(f"{column} {op} :{name}")
            params[name] = value
    sql = (f"SELECT {_SQL_COLUMNS} FROM audit_downloads"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY ts DESC, id DESC LIMIT :limit OFFSET :offset")
    with engine.connect() as conn:
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in conn.execute(text(sql), params)]
    for row in rows:
        row["complete"] = bool(row["complete"])  # SQLite answers 0/1
    return rows


def prune(engine: Engine, retention_days: float) -> int:
    """Delete events older than the retention."""
    if retention_days <= 0:
        return 0
    with engine.begin() as conn:
        return conn.execute(text("DELETE FROM audit_downloads WHERE ts < :t"),
                            {"t": time.time() - retention_days * 86400}).rowcount or 0
