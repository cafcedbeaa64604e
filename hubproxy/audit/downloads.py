"""Download events: journaled on the hot path, written to the database in batches by a reader of the journal.

Every attempt is recorded with its outcome: ``complete`` (the whole answer was sent), ``aborted``
(the client went away), ``refused`` (an error answer: a hidden repo, ``GatedRepo``, a missing file)
or ``interrupted`` (the process died while sending; the bytes are then unknown and recorded as 0).
The hot path writes journal lines (``journal.py``) and never the database. The writer task reads
the journal of this process, and the journals of processes that died, and inserts their events;
an event's id makes a second insert of it a no-op, so nothing is written twice and nothing is
lost if the database is away for a while: the journal waits on disk.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from hubproxy.audit.journal import Journal, Segment, read_lines, try_lock
from hubproxy.background import wake_or_timeout
from hubproxy.observability import metrics

log = logging.getLogger(__name__)

BATCH = 500
#: The spool file of earlier versions; its events are written like a dead process's journal.
LEGACY_SPOOL = "audit-spool.jsonl"


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
    outcome: str | None = None
    error: str | None = None
    event_id: str | None = None


COLUMNS = [f.name for f in fields(DownloadEvent)]
_DEFAULTS: dict[str, Any] = {"bytes_sent": 0, "duration": 0.0, "complete": False, "status": 0}
#: Column list for SQL ("commit" is a keyword and needs quotes).
_SQL_COLUMNS = ", ".join('"commit"' if c == "commit" else c for c in COLUMNS)
_INSERT = text(f"INSERT INTO audit_downloads ({_SQL_COLUMNS}) VALUES ({', '.join(':' + c for c in COLUMNS)}) "
               "ON CONFLICT (event_id) DO NOTHING")


def _row(record: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    row = {c: record.get(c, _DEFAULTS.get(c)) for c in COLUMNS}
    row["event_id"] = record.get("id") or record.get("event_id")
    row.update(overrides)
    return row


def _records_to_rows(records: list[dict[str, Any]], dead: bool) -> list[dict[str, Any]]:
    """Database rows of whole events; for a dead process, begun-but-unended downloads as ``interrupted``."""
    rows, begun = [], {}
    for r in records:
        kind = r.get("k")
        if kind == "b":
            begun[r.get("id")] = r
        elif kind in ("e", "c"):
            begun.pop(r.get("id"), None)
            rows.append(_row(r))
        elif kind is None and "repo_id" in r:  # a line of the legacy spool file: a whole event without an id
            rows.append(_row(r, event_id=hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:32]))
    if dead:
        rows += [_row(r, complete=False, outcome="interrupted", bytes_sent=0) for r in begun.values()]
    return rows


class AuditLog:
    """The journal of this process and the task that writes journaled events to the database."""

    def __init__(self, engine: Engine, data_dir: Path, interval: float = 1.0) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.interval = interval
        self.journal = Journal(data_dir / "audit")
        self._offsets: dict[Path, int] = {}
        self._wake = asyncio.Event()
        self._outage = False

    # -- hot path ---------------------------------------------------------------------
    def begin(self, event: dict[str, Any]) -> str:
        return self.journal.begin(event)

    def end(self, event_id: str, event: dict[str, Any]) -> None:
        self.journal.end(event_id, event)
        self._queued()

    def single(self, event: dict[str, Any]) -> None:
        self.journal.single(event)
        self._queued()

    def _queued(self) -> None:
        metrics.AUDIT_QUEUE.set(self.journal.pending)
        if self.journal.pending >= BATCH:
            self._wake.set()

    # -- writer -----------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            await wake_or_timeout(self._wake, self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write every journaled event (this process's and dead processes') to the database now."""
        own = [(s, self._offsets.get(s.path, 0)) for s in self.journal.segments]
        overflow = self.journal.take_overflow()
        try:
            written, offsets = await asyncio.to_thread(self._write, own, overflow)
        except Exception as exc:  # noqa: BLE001 - the database is away: the journal keeps everything
            self.journal.overflow = overflow + self.journal.overflow
            if not self._outage:
                log.warning("audit database unavailable (%s); events wait in %s", exc.__class__.__name__,
                            self.journal.folder)
            self._outage = True
            return
        if self._outage:
            log.info("audit database back; journaled events written")
        self._outage = False
        self._offsets.update(offsets)
        self.journal.pending = max(0, self.journal.pending - written)
        metrics.AUDIT_QUEUE.set(self.journal.pending)
        for segment in list(self.journal.segments[:-1]):
            if not segment.open_ids and self._offsets.get(segment.path, 0) >= segment.size:
                self._offsets.pop(segment.path, None)
                self.journal.retire(segment)

    def _write(self, own: list[tuple[Segment, int]],
               overflow: list[dict[str, Any]]) -> tuple[int, dict[Path, int]]:
        """(In a thread.) Insert new events; returns how many of this process's were written, and new offsets."""
        rows: list[dict[str, Any]] = _records_to_rows(overflow, dead=False)
        offsets: dict[Path, int] = {}
        for segment, offset in own:
            records, offsets[segment.path], bad = read_lines(segment.path, offset)
            rows += _records_to_rows(records, dead=False)
            if bad:
                log.warning("skipped %d unreadable line(s) in %s", bad, segment.path)
        mine = len(rows)
        dead_files, locks = self._dead_journals()
        try:
            for path in dead_files:
                records, _, bad = read_lines(path, final=True)
                if bad:
                    log.warning("skipped %d unreadable line(s) in %s", bad, path)
                rows += _records_to_rows(records, dead=True)
            if rows:
                with self.engine.begin() as conn:
                    for start in range(0, len(rows), BATCH):
                        conn.execute(_INSERT, rows[start:start + BATCH])
            for path in dead_files:
                path.unlink(missing_ok=True)
            if dead_files:
                log.info("wrote the journaled download events of %d file(s) left by stopped processes",
                         len(dead_files))
        finally:
            for fd in locks:
                os.close(fd)
        return mine, offsets

    def _dead_journals(self) -> tuple[list[Path], list[int]]:
        """Journal files no live process holds (a legacy spool file too), locked for this round."""
        mine = {s.path for s in self.journal.segments}
        candidates = [p for p in sorted(self.journal.folder.glob("*.jsonl")) if p not in mine]
        legacy = self.data_dir / LEGACY_SPOOL
        if legacy.exists():
            candidates.append(legacy)
        # A dead process's download may begin in one of its segments and end in a later one: take a
        # process's segments only all together.
        groups: dict[str, list[Path]] = {}
        for path in candidates:
            groups.setdefault(path.name.rsplit("-", 1)[0], []).append(path)
        files, locks = [], []
        for paths in groups.values():
            held = [fd for fd in (try_lock(p) for p in paths) if fd is not None]
            if len(held) == len(paths):
                files += paths
                locks += held
            else:
                for fd in held:
                    os.close(fd)
        return files, locks

    def close(self) -> None:
        self.journal.close()


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


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Events as CSV; text a client chose (user agent, paths) can never be read as a formula."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _cell(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
                     for row in rows)
    return buf.getvalue()
