"""Where the CPU went during one measurement: ``perf record -a`` around it, then the samples per process and thread
with each thread's leading symbols, and (``--timeline``) the busiest threads' share of a core in each tenth of a
second (the sha256 thread's share says whether the hash was starved or waited for bytes).

Used by ``cold_ab.py --perf``; also on its own over a recording already made::

    python benchmarks/perfsplit.py perf.data [--top 6] [--timeline]

A diagnostic: it needs ``perf`` and permission to record every CPU (root, or ``kernel.perf_event_paranoid`` low).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

FREQUENCY = 999  # samples per second per CPU
#: Given to perf to start recording before the measured block begins.
STARTUP_SECONDS = 0.5


@contextlib.contextmanager
def recording(out: Path) -> Iterator[None]:
    """Record every CPU into ``out`` while the block runs."""
    proc = subprocess.Popen(
        ["perf", "record", "-a", "-F", str(FREQUENCY), "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(STARTUP_SECONDS)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def summary(data: Path, top: int = 6, min_share: float = 0.01) -> str:
    """Samples per process, then per thread (as core-seconds) with each thread's ``top`` symbols."""
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    threads: dict[tuple[str, int, int], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in script.splitlines():
        parts = line.split(None, 3)  # comm pid/tid ip symbol (dso)
        if len(parts) < 3 or "/" not in parts[1]:
            continue
        pid, tid = (int(x) for x in parts[1].split("/"))
        symbol, _, dso = (parts[3] if len(parts) > 3 else "?").rpartition(" (")
        if symbol == "[unknown]":
            symbol = Path(dso.rstrip(")")).name
        threads[(parts[0], pid, tid)][symbol or "?"] += 1
    total = sum(sum(c.values()) for c in threads.values()) or 1
    per_process: collections.Counter[tuple[str, int]] = collections.Counter()
    for (comm, pid, _), symbols in threads.items():
        per_process[(comm, pid)] += sum(symbols.values())
    lines = [f"{total / FREQUENCY:.2f} core-seconds sampled"]
    for (comm, pid), n in per_process.most_common():
        if n / total < min_share:
            continue
        lines.append(f"{comm} {pid}: {n / FREQUENCY:.2f} core-s")
        for (_, tpid, tid), symbols in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
            count = sum(symbols.values())
            if tpid != pid or count / total < min_share:
                continue
            leading = ", ".join(f"{sym} {k / count:.0%}" for sym, k in symbols.most_common(top))
            lines.append(f"    {tid}: {count / FREQUENCY:.2f} core-s: {leading}")
    return "\n".join(lines)


def timeline(data: Path, threads: int = 5, step: float = 0.1) -> str:
    """The ``threads`` busiest threads' share of one core (percent) in each ``step`` seconds of the recording; the
    other threads summed per process (``pid*``) where that is 2% of the samples or more, the rest as ``other``."""
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "comm,pid,tid,time"],
                            capture_output=True, text=True, check=True).stdout
    samples = []
    for line in script.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "/" in parts[1]:
            pid, tid = (int(x) for x in parts[1].split("/"))
            samples.append((parts[0], pid, tid, float(parts[2].rstrip(":"))))
    if not samples:
        return "no samples"
    start = min(s[3] for s in samples)
    busiest = [tid for tid, _ in collections.Counter(s[2] for s in samples if s[2]).most_common(threads)]
    names = {tid: f"{comm[:6]}/{tid}" for comm, _, tid, _ in samples if tid in busiest}
    rest = collections.Counter(pid for _, pid, tid, _ in samples if tid not in busiest)
    shown = {pid for pid, n in rest.items() if n >= len(samples) / 50}  # the rest of a process with 2% or more
    buckets: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for comm, pid, tid, at in samples:
        column = names.get(tid) or (f"{comm[:6]}/{pid}*" if pid in shown else "other")
        buckets[int((at - start) / step)][column] += 1
    columns = [names[tid] for tid in busiest]
    columns += sorted({k for counts in buckets.values() for k in counts} - set(columns) - {"other"}) + ["other"]
    per_bucket = FREQUENCY * step / 100  # samples that make one percent of a core
    lines = ["    s " + " ".join(f"{c[-13:]:>13}" for c in columns)]
    for b in sorted(buckets):
        lines.append(f"{b * step:5.2f} " + " ".join(f"{buckets[b][c] / per_bucket:13.0f}" for c in columns))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--top", type=int, default=6)
    ap.add_argument("--timeline", action="store_true")
    args = ap.parse_args()
    print(summary(args.data, args.top))
    if args.timeline:
        print(timeline(args.data))


if __name__ == "__main__":
    main()
