"""One cold download (unthrottled, or ``--throttle-mbps`` per connection; ``--clients`` at once) in turns between
variants: hubproxy code trees and/or settings.

Each round starts a fresh hubproxy per variant (after a pause, so that memory freed by the round before has gone
back to the VM's host, as between the cold rows of ``run.py``) in front of the fake hub, downloads the file once
with curl, and prints the time, the CPU hubproxy's processes used meanwhile, where the fill's readers were sent
the bytes from and where its hash read them (``/metrics``); the stored blob is checked against its sha256.

    python benchmarks/cold_ab.py --variant /path/to/tree:fill_direct_writes=false --variant .: --rounds 4

A variant is ``TREE:SETTINGS``: a checkout whose ``hubproxy`` package runs (``.`` for this one) and settings as
``name=value`` separated by commas (HUBPROXY_* variables). A diagnostic for changes to the cold path, not a
benchmark row: it has no reference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    BIG,
    REPO,
    SMALL,
    cpu_seconds_of_tree,
    curl_time,
    parallel_curls,
    random_file,
    sha256_file,
    start_fakehub,
    start_hubproxy,
)
from benchmarks.perfsplit import recording, summary, timeline  # noqa: E402


def counters(url: str, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return {source: float(v) for source, v in re.findall(name + r'\{source="(\w+)"\} (\S+)', text)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="TREE:name=value,... (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--pause", type=float, default=3.0, help="seconds before each download")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (hubproxy's logs) and say where")
    ap.add_argument("--throttle-mbps", type=float, default=0, help="per-connection upstream limit, MB/s (0: none)")
    ap.add_argument("--clients", type=int, default=1, help="concurrent curl downloads of the cold file (time: all)")
    ap.add_argument("--perf", action="store_true",
                    help="record every CPU with perf during each download; print where it went, and when")
    args = ap.parse_args()
    here = Path.cwd()
    work = Path(tempfile.mkdtemp(prefix="hubproxy-cold-ab-"))
    procs = []
    try:
        files = work / "files"
        files.mkdir()
        random_file(files / BIG, args.size_mib)
        sha = sha256_file(files / BIG)
        (files / SMALL).write_text('{"model_type": "bench"}')
        hub, hub_url = start_fakehub({BIG: files / BIG, SMALL: files / SMALL}, args.throttle_mbps * 1e6 or None)
        procs.append(hub)
        for rnd in range(args.rounds):
            for number, variant in enumerate(args.variant):
                tree, _, settings = variant.partition(":")
                env = dict(item.split("=", 1) for item in settings.split(",") if item)
                data = work / f"data-{rnd}"
                time.sleep(args.pause)
                # ``python -m hubproxy`` imports from its working directory first: the variant's tree.
                os.chdir(Path(tree).resolve())
                try:
                    proc, url = start_hubproxy(hub_url, data, work, **env)
                finally:
                    os.chdir(here)
                try:
                    curl_time(f"{url}/{REPO}/resolve/main/{SMALL}")
                    before = cpu_seconds_of_tree(proc.p.pid)
                    big = f"{url}/{REPO}/resolve/main/{BIG}"
                    perf_data = work / f"perf-{rnd}-{number}.data"
                    with recording(perf_data) if args.perf else contextlib.nullcontext():
                        seconds = curl_time(big) if args.clients == 1 else parallel_curls(big, args.clients)
                    cpu = cpu_seconds_of_tree(proc.p.pid) - before
                    sent = counters(url, "hubproxy_fill_sent_bytes_total")
                    hashed = counters(url, "hubproxy_fill_hashed_bytes_total")
                    stored = data / "blobs" / sha[:2] / sha
                    deadline = time.monotonic() + 60
                    while not stored.exists() and time.monotonic() < deadline:  # stored after the last byte went out
                        time.sleep(0.1)
                finally:
                    proc.stop()
                assert sha256_file(stored) == sha, "the stored blob is not the file"
                shutil.rmtree(data, ignore_errors=True)
                mib = {k: round(v / 2**20) for k, v in sent.items()}
                print(f"round {rnd + 1} {variant}: {seconds:.2f} s, hubproxy {cpu:.2f} core-s, sent MiB {mib}, "
                      f"hashed MiB { {k: round(v / 2**20) for k, v in hashed.items()} }", flush=True)
                if args.perf:
                    print(summary(perf_data), timeline(perf_data), sep="\n", flush=True)
    finally:
        for proc in procs:
            proc.stop()
        if args.keep_work:
            (files / BIG).unlink(missing_ok=True)
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
