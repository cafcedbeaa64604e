"""Upload benchmarks for hosted repos: ratios against the least work an upload needs, measured in the same run.

- 1 GiB ``upload_file`` with ``HF_HUB_DISABLE_XET=1`` (LFS: batch, PUT, verify, commit) through hubproxy, timed
  inside the client around the call, against sha256 of the file plus a copy of it into the store's
  filesystem; hubproxy's peak RSS (all its processes) meanwhile.
- a 256 MiB inline (regular-mode) upload with the default client: hubproxy's peak RSS.

Conditions: ../shared/BENCHMARKS.md ("upload"). Run: ``python benchmarks/upload.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    Proc,
    free_port,
    random_file,
    sampled_peak,
    save_results,
    sha256_file,
    wait_http,
)

UPLOAD = r"""
import sys, time
from huggingface_hub import HfApi
api = HfApi()
api.create_repo(sys.argv[2], exist_ok=True)
t0 = time.monotonic()
api.upload_file(path_or_fileobj=sys.argv[1], path_in_repo="model.safetensors", repo_id=sys.argv[2])
print(time.monotonic() - t0)
"""


def start(work: Path, name: str, **settings: str) -> tuple[Proc, str, str]:
    data = work / name
    env = {**os.environ, "HUBPROXY_LOG_LEVEL": "warning", **{f"HUBPROXY_{k.upper()}": v for k, v in settings.items()}}
    boot = subprocess.run([sys.executable, "-m", "hubproxy", "admin", "bootstrap", "--data-dir", str(data), "--json"],
                          capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    admin = json.loads(boot.stdout)["name"]
    token = json.loads(subprocess.run(
        [sys.executable, "-m", "hubproxy", "admin", "token-create", admin, "--role", "write", "--data-dir", str(data),
         "--json"], capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout)["token"]
    port = free_port()
    proc = Proc([sys.executable, "-m", "hubproxy", "serve", "--port", str(port), "--data-dir", str(data),
                 "--upstream", "http://127.0.0.1:9"], env=env, log=work / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url, token


def timed_client(script: str, args: list[str], url: str, token: str, home: Path, **extra: str) -> float:
    """Run a client script (it prints the seconds it timed itself) against hubproxy, as a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", **extra})
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return float(out.stdout.strip().splitlines()[-1])


def client(url: str, token: str, work: Path, path: Path, repo: str, **extra: str) -> float:
    return timed_client(UPLOAD, [str(path), repo], url, token, work / "hf", **extra)


def minimum_work(path: Path, store_dir: Path) -> float:
    """sha256 of the file and a copy of it into the store's filesystem."""
    t0 = time.monotonic()
    target = store_dir / sha256_file(path)
    shutil.copyfile(path, target)
    os.fsync(os.open(target, os.O_RDONLY))
    elapsed = time.monotonic() - t0
    target.unlink()
    return elapsed


def fresh(path: Path, round_no: int) -> None:
    """Make the file a new object (its first bytes change), so every round uploads and stores it anew."""
    with open(path, "r+b") as f:
        f.write(round_no.to_bytes(8, "big") + os.urandom(8))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--regular-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}  file: {args.size_mib} MiB  date: {time.strftime('%Y-%m-%d')}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hubproxy-upload-bench-"))
    procs: list[Proc] = []
    results: dict = {"cores": os.cpu_count(), "rows": []}
    try:
        big = random_file(work / "big.bin", args.size_mib)
        proc, url, token = start(work, "lfs", hosted_upload_mode="lfs")
        procs.append(proc)
        store_dir = work / "copies"
        store_dir.mkdir()
        ratios, peaks = [], []
        for i in range(args.rounds):
            fresh(big, i)
            os.sync()  # no write-back of an earlier round in either side's time
            ours, peak = sampled_peak(proc.p.pid, lambda i=i: client(url, token, work, big, f"admin/up{i}",
                                                                     HF_HUB_DISABLE_XET="1"))
            os.sync()
            ref = minimum_work(big, store_dir)
            ratios.append(ours / ref)
            peaks.append(peak)
            print(f"  LFS upload pair {i + 1}: hubproxy {ours:.2f}s  sha256+copy {ref:.2f}s  ratio {ours / ref:.3f}  "
                  f"hubproxy peak RSS {peak / 1e6:.0f} MB", flush=True)
        print(f"LFS upload {args.size_mib} MiB: median ratio {statistics.median(ratios):.3f} (lower is better); "
              f"max peak RSS {max(peaks) / 1e6:.0f} MB", flush=True)
        results["rows"].append({"label": "LFS upload (x sha256+copy)", "ratios": ratios, "peak_rss": peaks})
        proc.stop()
        regular = random_file(work / "regular.bin", args.regular_mib)
        proc, url, token = start(work, "regular", xet="false")  # inline mode is the no-Xet path
        procs.append(proc)
        seconds, peak = sampled_peak(proc.p.pid, lambda: client(url, token, work, regular, "admin/inline"))
        print(f"inline (regular-mode) upload {args.regular_mib} MiB: {seconds:.2f}s, hubproxy peak RSS "
              f"{peak / 1e6:.0f} MB", flush=True)
        results["rows"].append({"label": "regular upload", "seconds": seconds, "peak_rss": peak})
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("upload", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
