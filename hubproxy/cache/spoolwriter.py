"""A lane's writes into the spool file, made by a thread of their own so that the lane receives the next batch
while the disk takes the last.

A direct write (``SpoolFile.write_aligned``) returns only once the disk has the bytes: 1 MiB takes about
0.5 ms on the benchmarks' VM, about as long as receiving it. Written by the lane itself, receiving and writing
took turns and the machine idled a fifth of a cold GiB's time. Batches are written in the order they were
received, and ``landed`` is told of each once it is in the file, so the prefix followers see is always on disk.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable

from hubproxy.cache.spool import SpoolFile


class SpoolWriter:
    """Writes batches received from ``start`` on, in order, in a thread of its own; tells ``landed(end)`` after
    each. ``close`` must be called (it waits for the write in progress: the file stays open until then)."""

    def __init__(self, spool: SpoolFile, start: int, landed: Callable[[int], None]) -> None:
        self.spool = spool
        self.landed = landed
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[memoryview, int]] = collections.deque()
        #: Every byte before this is written.
        self.written = start
        self.error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fill-writer", daemon=True)
        self._thread.start()

    def put(self, batch: memoryview, offset: int) -> None:
        """Write ``batch`` at ``offset`` (where the last batch ended); raises the error a write met before."""
        with self._cond:
            self._raise()
            self._queue.append((batch, offset))
            self._cond.notify_all()

    def wait_written(self, end: int) -> None:
        """Block until every byte before ``end`` is written; raises the error a write met."""
        with self._cond:
            while self.written < end and self.error is None:
                self._cond.wait()
            self._raise()

    def close(self, drain: bool) -> None:
        """Stop the thread once what was put is written (``drain``), or after the write in progress; wait for it.
        Raises the error a write met if ``drain``."""
        with self._cond:
            self._closing = True
            if not drain:
                self._queue.clear()
            self._cond.notify_all()
        self._thread.join()
        if drain:
            with self._cond:
                self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, offset = self._queue.popleft()
            try:
                self.spool.write_aligned(batch, offset)
            except BaseException as exc:  # noqa: BLE001 (handed to the lane, which raises it)
                with self._cond:
                    self.error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self.written = offset + len(batch)
                self._cond.notify_all()
            with contextlib.suppress(RuntimeError):  # the event loop closed: nobody is told any more
                self.landed(self.written)
