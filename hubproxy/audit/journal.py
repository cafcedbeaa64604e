"""The download journal: every download event is on local disk before its bytes flow.

Each server process appends JSON lines to its own segment files under ``data_dir/audit/``,
one ``write`` system call per line, so a line is in the kernel the moment the call returns: a
SIGKILL cannot lose it (a power loss can lose what the kernel had not written out yet). A
process holds an ``flock`` on each of its segments while it lives; a segment nobody holds belongs
to a process that died.

Lines:

- ``{"k": "b", "id", ...}``: a download began (its answer's status is decided, bytes follow);
- ``{"k": "e", "id", ...}``: it ended; the line carries the whole event;
- ``{"k": "c", "id", ...}``: a request answered at once (a refusal, an error): the whole event.

``JournalReader`` (the database writer) reads these back; it never needs the lines again once
their events are in the database, and deletes a segment then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A new segment is started past this size; finished segments are deleted once written.
SEGMENT_BYTES = 8 * 1024 * 1024
#: Events kept in memory while the journal cannot be written.
MAX_OVERFLOW = 100_000

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """One journal file of this process."""

    path: Path
    fd: int
    size: int = 0
    #: Events begun in this segment and not ended yet.
    open_ids: set[str] = field(default_factory=set)


class Journal:
    """This process's journal segments; ``begin``/``end``/``single`` are the hot path's only audit calls."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.prefix = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.segments: list[Segment] = []
        self._begun_in: dict[str, Segment] = {}
        #: Events written to the journal and not yet known to be in the database.
        self.pending = 0
        #: Whole events that could not be journaled (a full disk), for the database writer.
        self.overflow: list[dict[str, Any]] = []
        self._new_segment()

    def _new_segment(self) -> Segment:
        path = self.folder / f"{self.prefix}-{len(self.segments):06d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: "this segment is alive"
        segment = Segment(path, fd)
        self.segments.append(segment)
        return segment

    @property
    def current(self) -> Segment:
        return self.segments[-1]

    def _write(self, record: dict[str, Any]) -> Segment:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        segment = self.current
        try:
            if segment.size + len(data) > SEGMENT_BYTES and segment.size:
                segment = self._new_segment()
            written = os.write(segment.fd, data)
        except OSError as exc:
            return self._overflow(record, exc)
        if written < len(data):  # a full disk took part of the line: rewind it, keep the event in memory
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            return self._overflow(record, OSError(28, "No space left on device"))
        segment.size += len(data)
        return segment

    def _overflow(self, record: dict[str, Any], exc: OSError) -> Segment:
        """A journal that cannot be written (a full disk) must not stop downloads: whole events wait in memory
        for the database writer (``take_overflow``); only a crash meanwhile could lose them."""
        if not self.overflow:
            log.warning("audit journal %s cannot be written (%s); keeping events in memory", self.folder, exc)
        if record.get("k") in ("e", "c") and len(self.overflow) < MAX_OVERFLOW:
            self.overflow.append(record)
        return self.current

    def take_overflow(self) -> list[dict[str, Any]]:
        taken, self.overflow = self.overflow, []
        return taken

    def begin(self, event: dict[str, Any]) -> str:
        """Record that a download begins; returns its id for ``end``."""
        event_id = uuid.uuid4().hex
        segment = self._write({"k": "b", "id": event_id, **event})
        segment.open_ids.add(event_id)
        self._begun_in[event_id] = segment
        return event_id

    def end(self, event_id: str, event: dict[str, Any]) -> None:
        """Record the whole event of a download that ended (completely or not)."""
        self._write({"k": "e", "id": event_id, **event})
        segment = self._begun_in.pop(event_id, None)
        if segment is not None:
            segment.open_ids.discard(event_id)
        self.pending += 1

    def single(self, event: dict[str, Any]) -> None:
        """Record an event that began and ended at once (a refusal)."""
        self._write({"k": "c", "id": uuid.uuid4().hex, **event})
        self.pending += 1

    def retire(self, segment: Segment) -> None:
        """Forget a finished segment whose events are all in the database."""
        self.segments.remove(segment)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        os.close(segment.fd)

    def close(self) -> None:
        for segment in self.segments:
            os.close(segment.fd)
        self.segments = []


def try_lock(path: Path) -> int | None:
    """An exclusive lock on a journal file, or None if a live process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_lines(path: Path, offset: int = 0, final: bool = False) -> tuple[list[dict[str, Any]], int, int]:
    """Records from ``offset`` on, the offset after the last whole line, and how many lines were unreadable.

    A last line without its newline is left for later (its writer may be in the middle of it) unless
    ``final`` (its writer is dead); a line that is not a JSON object is skipped and counted, so one
    damaged line never blocks the ones after it.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    records: list[dict[str, Any]] = []
    bad = 0
    end = len(data) if final else data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, offset + end, bad
