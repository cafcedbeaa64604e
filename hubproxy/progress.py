"""Progress for long transfers: a rich bar on a terminal (with the ``progress`` extra), plain log lines otherwise."""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import TextIO

#: Seconds between plain progress lines when not on a terminal.
LINE_INTERVAL = 5.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """Bytes done of a total, with speed and ETA; ``note`` for per-item lines."""

    def __init__(self, title: str, total: int, stream: TextIO | None = None, force_plain: bool = False) -> None:
        self.title = title
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last_line = 0.0
        self._bar = None
        self._task = None
        if not force_plain and self.stream.isatty() and importlib.util.find_spec("rich") is not None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(title, total=total)
        else:
            self._print(f"{title}: {human_bytes(total)} to go")

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self._last_line >= LINE_INTERVAL:
            self._last_line = now
            self._print(self.status())

    def status(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.title}: {human_bytes(self.done)} of {human_bytes(self.total)} ({pct:.0f}%), "
                f"{human_bytes(rate)}/s, eta {eta:.0f}s")

    def note(self, line: str) -> None:
        """A line about one item (a file fetched, a blob skipped)."""
        self._print(line)

    def close(self) -> float:
        """Stop the bar; returns the seconds elapsed."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.total:
            self._print(self.status())
        return time.monotonic() - self.started
