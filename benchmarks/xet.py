"""Xet benchmarks for hosted repos, ratios in one run (conditions: ../shared/BENCHMARKS.md, "Xet").

- upload: 1 GiB ``upload_file`` with the default client (hf_xet: xorbs and a shard to hubproxy's CAS) against
  the LFS upload (``HF_HUB_DISABLE_XET=1``) of a file of the same size through the same hubproxy;
- download: ``hf_hub_download`` of the hosted 1 GiB file through Xet (reconstruction, signed xorb ranges)
  against the same call over plain HTTP (``HF_HUB_DISABLE_XET=1``), both from a fresh client cache;
- hubproxy's peak RSS during each. Run: ``python benchmarks/xet.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Proc, random_file, sampled_peak, save_results  # noqa: E402
from upload import client, fresh, start, timed_client  # noqa: E402

DOWNLOAD = r"""
import sys, time
from huggingface_hub import hf_hub_download
t0 = time.monotonic()
hf_hub_download(sys.argv[1], "model.safetensors", cache_dir=sys.argv[2])
print(time.monotonic() - t0)
"""


def download(url: str, token: str, work: Path, repo: str, cache: Path, **extra: str) -> float:
    home = cache.with_name(cache.name + "-home")  # a fresh client (as on another machine): no Xet cache either
    try:
        return timed_client(DOWNLOAD, [repo, str(cache)], url, token, home, **extra)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  file: {args.size_mib} MiB  date: {time.strftime('%Y-%m-%d')}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hubproxy-xet-bench-"))
    procs: list[Proc] = []
    results: dict = {"cores": os.cpu_count(), "rows": []}
    try:
        big = random_file(work / "big.bin", args.size_mib)
        proc, url, token = start(work, "xet", hosted_upload_mode="lfs")
        procs.append(proc)
        up, down, peaks = [], [], []
        for i in range(args.rounds):  # uploads: alternate pairs
            fresh(big, 2 * i)
            os.sync()
            t_xet, p1 = sampled_peak(proc.p.pid, lambda i=i: client(url, token, work, big, f"admin/xet{i}"))
            fresh(big, 2 * i + 1)
            os.sync()
            t_lfs, p2 = sampled_peak(proc.p.pid, lambda i=i: client(url, token, work, big, f"admin/lfs{i}",
                                                                    HF_HUB_DISABLE_XET="1"))
            up.append(t_xet / t_lfs)
            peaks.append(max(p1, p2))
            print(f"  upload pair {i + 1}: Xet {t_xet:.2f}s LFS {t_lfs:.2f}s ratio {t_xet / t_lfs:.3f}; hubproxy peak "
                  f"RSS {max(p1, p2) / 1e6:.0f} MB", flush=True)
        for i in range(args.rounds):  # downloads of the same file both ways, in alternating order, disks settled
            timings = {}
            for way in (("xet", "http") if i % 2 == 0 else ("http", "xet")):
                os.sync()
                time.sleep(2)
                extra = {"HF_HUB_DISABLE_XET": "1"} if way == "http" else {}
                timings[way], peak = sampled_peak(proc.p.pid, lambda i=i, way=way, extra=extra: download(
                    url, token, work, f"admin/xet{i}", work / f"c-{way}", **extra))
                peaks.append(peak)
            down.append(timings["http"] / timings["xet"])  # throughput ratio: Xet's over plain HTTP's
            print(f"  download pair {i + 1}: Xet {timings['xet']:.2f}s HTTP {timings['http']:.2f}s throughput ratio "
                  f"{timings['http'] / timings['xet']:.3f}; hubproxy peak RSS {peaks[-1] / 1e6:.0f} MB", flush=True)
        print(f"Xet upload {args.size_mib} MiB: median time ratio {statistics.median(up):.3f} of LFS (lower is better)",
              flush=True)
        print(f"Xet download {args.size_mib} MiB: median throughput ratio {statistics.median(down):.3f} of plain HTTP "
              f"(higher is better); max peak RSS {max(peaks) / 1e6:.0f} MB", flush=True)
        results["rows"].append({"label": "Xet", "upload_ratios": up, "download_ratios": down, "peak_rss": peaks})
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("xet", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
