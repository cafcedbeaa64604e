"""hubproxy benchmarks: every figure is a ratio against a reference measured in the same run.

Conditions and goals: ../shared/BENCHMARKS.md. Run: ``python benchmarks/run.py`` (needs nginx,
curl and ab from Debian's nginx-light, curl and apache2-utils; olah from PyPI for the peer rows,
found with --olah; the hf_transfer row builds a huggingface_hub 0.36 + hf_transfer environment once).
Prints the core count, every pair and the medians; writes a JSON result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import (  # noqa: E402
    BIG,
    REPO,
    SMALL,
    Proc,
    ab_stats,
    curl_time,
    evict_from_page_cache,
    pairs,
    parallel_curls,
    random_file,
    sampled_peak,
    save_results,
    sha256_file,
    start_bare_asgi,
    start_fakehub,
    start_hubproxy,
    start_nginx,
    start_olah,
    start_verifying_relay,
    upstream_bytes,
)
from snapshot import make_repo, snapshot_time  # noqa: E402

ROWS = "disk1,hot1,hot8,hot64,head,cold,coldhft,hftvia,cold8,coldfast,coldfloor,repocold,repohot,olah"
HF_TRANSFER_DOWNLOAD = """
import sys, time
from huggingface_hub import hf_hub_download
t = time.monotonic()
hf_hub_download(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3])
print(time.monotonic() - t)
"""


def hf_transfer_time(python: Path, upstream_url: str, cache_dir: Path) -> float:
    """huggingface_hub 0.36 with hf_transfer downloading the big file straight from ``upstream_url``."""
    env = {**os.environ, "HF_ENDPOINT": upstream_url, "HF_HUB_ENABLE_HF_TRANSFER": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_XET": "1",  # the fake hub announces Xet; hf_transfer is the plain-HTTP path
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        out = subprocess.run([str(python), "-c", HF_TRANSFER_DOWNLOAD, REPO, BIG, str(cache_dir)], env=env,
                             capture_output=True, text=True, check=True).stdout
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return float(out.split()[-1])


def main() -> int:  # noqa: C901, PLR0915 - one row after another
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--hot64-mib", type=int, default=256, help="file size for the 64-client row")
    ap.add_argument("--repo-weight-mib", type=int, default=64, help="size of each of the repo rows' 3 weight files")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--throttle-mbps", type=float, default=100.0, help="per-connection upstream limit, MB/s")
    ap.add_argument("--olah", default=shutil.which("olah-cli"), help="olah-cli binary for the peer rows")
    ap.add_argument("--skip", default="", help=f"comma list of rows to skip: {ROWS}")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    size = args.size_mib * 1024 * 1024
    print(f"cores: {os.cpu_count()}  file: {args.size_mib} MiB  date: {time.strftime('%Y-%m-%d')}", flush=True)
    results: dict = {"cores": os.cpu_count(), "size_mib": args.size_mib, "rows": []}
    rows = results["rows"]
    work = Path(tempfile.mkdtemp(prefix="hubproxy-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    procs: list[Proc] = []
    try:
        files = work / "files"
        files.mkdir()
        random_file(files / BIG, args.size_mib)
        medium = "medium.safetensors"
        random_file(files / medium, args.hot64_mib)
        (files / SMALL).write_text('{"model_type": "bench"}')
        served = {BIG: files / BIG, SMALL: files / SMALL, medium: files / medium}
        hub, hub_url = start_fakehub(served, None)
        procs.append(hub)
        nginx, nginx_url = start_nginx(files, work)
        procs.append(nginx)
        hp, hp_url = start_hubproxy(hub_url, work / "hp-data", work)
        procs.append(hp)
        big = f"{hp_url}/{REPO}/resolve/main/{BIG}"
        small = f"{hp_url}/{REPO}/resolve/main/{SMALL}"
        for url in (big, small, f"{hp_url}/{REPO}/resolve/main/{medium}"):
            curl_time(url)  # fill the cache
        # A fast fill writes past the page cache (``fill_direct_writes``), while nginx's files were just written
        # through it: the first read of each stored blob comes from the disk. The hot rows compare cached bytes
        # with cached bytes (one untimed read first); the disk row compares first reads from the disk.
        big_sha = sha256_file(files / BIG)
        if "disk1" not in skip:
            stored = work / "hp-data" / "blobs" / big_sha[:2] / big_sha

            def from_disk(path: Path, url: str) -> float:
                evict_from_page_cache(path)
                return size / curl_time(url)

            rows.append(pairs("first read from the disk, 1 client, throughput (x nginx, its file also evicted)",
                              lambda: from_disk(stored, big), lambda: from_disk(files / BIG, f"{nginx_url}/{BIG}"),
                              args.rounds, True))
        for url in (big, f"{hp_url}/{REPO}/resolve/main/{medium}"):
            curl_time(url)  # in the page cache now, as nginx's files are
        if "hot1" not in skip:
            rows.append(pairs("hot, 1 client, throughput (x nginx)", lambda: size / curl_time(big),
                              lambda: size / curl_time(f"{nginx_url}/{BIG}"), args.rounds, True))
        for n, name, mib, row in ((8, BIG, args.size_mib, "hot8"), (64, medium, args.hot64_mib, "hot64")):
            if row in skip:
                continue
            ours_url, ref_url = f"{hp_url}/{REPO}/resolve/main/{name}", f"{nginx_url}/{name}"
            total = n * mib * 1024 * 1024
            row_result, peak = sampled_peak(hp.p.pid, lambda n=n, o=ours_url, r=ref_url, t=total: pairs(
                f"hot, {n} clients, aggregate throughput (x nginx)", lambda: t / parallel_curls(o, n),
                lambda: t / parallel_curls(r, n), args.rounds, True))
            row_result["hubproxy_peak_rss_mb"] = peak / 1e6
            print(f"  hubproxy peak RSS during {n} clients: {peak / 1e6:.0f} MB", flush=True)
            rows.append(row_result)
        if "head" not in skip:
            stats: dict[str, list[tuple[float, float]]] = {"ours": [], "ref": [], "bare": []}

            def head(which: str, url: str) -> float:
                stats[which].append(ab_stats(url))
                return stats[which][-1][0]

            row = pairs("HEAD cached small file, 32 connections, req/s (x nginx)", lambda: head("ours", small),
                        lambda: head("ref", f"{nginx_url}/{SMALL}"), args.rounds, True)
            row["hubproxy_rps"] = statistics.median(r for r, _ in stats["ours"])
            row["hubproxy_p99_ms"] = statistics.median(p for _, p in stats["ours"])
            row["nginx_p99_ms"] = statistics.median(p for _, p in stats["ref"])
            print(f"  hubproxy HEAD: {row['hubproxy_rps']:.0f} req/s, p99 {row['hubproxy_p99_ms']:.0f} ms "
                  f"(nginx p99 {row['nginx_p99_ms']:.0f} ms); medians", flush=True)
            rows.append(row)
            # The floor: what uvicorn itself answers on this machine, with an app that does nothing.
            bare, bare_url = start_bare_asgi(work)
            try:
                floor = pairs("HEAD cached small file, 32 connections, req/s (x a do-nothing app under uvicorn)",
                              lambda: head("ours", small), lambda: head("bare", f"{bare_url}/{REPO}/resolve/main/{SMALL}"),
                              args.rounds, True)
            finally:
                bare.stop()
            floor["bare_rps"] = statistics.median(r for r, _ in stats["bare"])
            floor["bare_p99_ms"] = statistics.median(p for _, p in stats["bare"])
            print(f"  do-nothing app under uvicorn: {floor['bare_rps']:.0f} req/s, p99 {floor['bare_p99_ms']:.0f} ms; "
                  "medians", flush=True)
            rows.append(floor)

        counter = [0]

        def cold_ours(upstream_url: str, clients: int = 1, fetch: Callable[[str], float] | None = None) -> float:
            """A fresh hubproxy (empty cache) in front of ``upstream_url``: time of the first download(s), by curl
            or by ``fetch`` (given hubproxy's URL)."""
            counter[0] += 1
            data = work / f"cold-{counter[0]}"
            proc, url = start_hubproxy(upstream_url, data, work)
            try:
                curl_time(f"{url}/{REPO}/resolve/main/{SMALL}")  # metadata warm-up is not what we time
                if fetch is not None:
                    return fetch(url)
                if clients == 1:
                    return curl_time(f"{url}/{REPO}/resolve/main/{BIG}")
                return parallel_curls(f"{url}/{REPO}/resolve/main/{BIG}", clients)
            finally:
                proc.stop()
                shutil.rmtree(data, ignore_errors=True)

        throttle = f"upstream {args.throttle_mbps:.0f} MB/s per connection"
        slow_url = None
        if {"cold", "coldhft", "hftvia", "cold8"} - skip:
            slow, slow_url = start_fakehub(served, args.throttle_mbps * 1e6)
            procs.append(slow)
        if "cold" not in skip:
            rows.append(pairs(f"cold, {throttle}, time (x direct, one stream)", lambda: cold_ours(slow_url),
                              lambda: curl_time(f"{slow_url}/{REPO}/resolve/main/{BIG}", follow=True),
                              args.rounds, False))
        if {"coldhft", "hftvia"} - skip:
            from tests.clients import client_python

            python = client_python("huggingface_hub==0.36.2", "hf_transfer")
            cache = Path("/dev/shm" if os.path.isdir("/dev/shm") else work) / f"hft-{os.getpid()}"
            # One download first, untimed: the reference's first run (its environment just built, its imports and
            # the fake hub's pages cold) took 3.3-3.9 s against 1.1-2.5 s for the runs after it.
            hf_transfer_time(python, slow_url, cache)
        if "coldhft" not in skip:
            rows.append(pairs(f"cold, {throttle}, time (x hf_transfer direct)", lambda: cold_ours(slow_url),
                              lambda: hf_transfer_time(python, slow_url, cache), args.rounds, False))
        if "hftvia" not in skip:
            # The users who keep HF_HUB_ENABLE_HF_TRANSFER=1: hf_transfer's 10 MiB chunks, all at once, against a
            # cold hubproxy; the upstream should still send the blob once.
            sent: list[float] = []

            def hft_via_hubproxy() -> float:
                before = upstream_bytes(slow_url).get(big_sha, 0)
                took = cold_ours(slow_url, fetch=lambda url: hf_transfer_time(python, url, cache))
                sent.append((upstream_bytes(slow_url).get(big_sha, 0) - before) / size)
                return took

            row = pairs(f"cold, {throttle}, hf_transfer through hubproxy, time (x hf_transfer direct)",
                        hft_via_hubproxy, lambda: hf_transfer_time(python, slow_url, cache), args.rounds, False)
            row["upstream_bytes_x_blob"] = sent
            print(f"  upstream bytes of each hf_transfer download through hubproxy: "
                  f"{', '.join(f'{b:.4f}x' for b in sent)} the blob", flush=True)
            rows.append(row)
        if "cold8" not in skip:
            ratios = []
            for i in range(args.rounds):
                before = upstream_bytes(slow_url).get(big_sha, 0)
                took = cold_ours(slow_url, clients=8)
                sent = upstream_bytes(slow_url).get(big_sha, 0) - before
                ratios.append(sent / size)
                print(f"  8 cold clients, round {i + 1}: {took:.2f}s, upstream bytes {sent / size:.4f}x the blob",
                      flush=True)
            print(f"8 clients cold, {throttle}: upstream bytes median {statistics.median(ratios):.4f}x, "
                  f"max {max(ratios):.4f}x the blob (lower is better)", flush=True)
            rows.append({"label": "8 clients cold, upstream bytes (x blob)", "pairs": ratios,
                         "median_ratio": statistics.median(ratios)})
        if "coldfast" not in skip:
            rows.append(pairs("cold, unthrottled loopback, time (x direct)", lambda: cold_ours(hub_url),
                              lambda: curl_time(f"{hub_url}/{REPO}/resolve/main/{BIG}", follow=True),
                              args.rounds, False))
        if "coldfloor" not in skip:
            # The floor under that row: a relay that only receives, hashes and sends (``verifying_relay.py``).
            relay, relay_url = start_verifying_relay(hub_url, big_sha, work)
            procs.append(relay)
            relayed = f"{relay_url}/{REPO}/resolve/main/{BIG}"
            rows.append(pairs("cold, unthrottled loopback, verifying relay (receive, sha256, send; nothing stored), "
                              "time (x direct)", lambda: curl_time(relayed),
                              lambda: curl_time(f"{hub_url}/{REPO}/resolve/main/{BIG}", follow=True),
                              args.rounds, False))
            rows.append(pairs("cold, unthrottled loopback, time (x the verifying relay)", lambda: cold_ours(hub_url),
                              lambda: curl_time(relayed), args.rounds, False))
        if {"repocold", "repohot"} - skip:
            # A whole repo as users first pull one (``snapshot.py``), from an unthrottled upstream of its own.
            repo_hub, repo_url = start_fakehub(make_repo(work / "repo", args.repo_weight_mib), None)
            procs.append(repo_hub)
            cache = work / "snapshot-cache"
            if "repocold" not in skip:
                rows.append(pairs("repo (15 files) cold, snapshot_download time (x direct)",
                                  lambda: cold_ours(repo_url, fetch=lambda url: snapshot_time(url, REPO, cache)),
                                  lambda: snapshot_time(repo_url, REPO, cache), args.rounds, False))
            if "repohot" not in skip:
                warm, warm_url = start_hubproxy(repo_url, work / "repo-hot", work)
                procs.append(warm)
                snapshot_time(warm_url, REPO, cache)  # every file stored
                rows.append(pairs("repo (15 files) hot, snapshot_download time (x direct)",
                                  lambda: snapshot_time(warm_url, REPO, cache),
                                  lambda: snapshot_time(repo_url, REPO, cache), args.rounds, False))
        if "olah" not in skip and args.olah:
            olah, olah_url = start_olah(args.olah, hub_url, hub.cdn_url, work)  # type: ignore[attr-defined]
            procs.append(olah)
            o_big = f"{olah_url}/{REPO}/resolve/main/{BIG}"
            print(f"  olah cold (unthrottled): {curl_time(o_big, follow=True):.2f}s", flush=True)
            rows.append(pairs("hot, 1 client, hubproxy vs olah throughput (x olah)", lambda: size / curl_time(big),
                              lambda: size / curl_time(o_big, follow=True), args.rounds, True))
            o_small = f"{olah_url}/{REPO}/resolve/main/{SMALL}"
            curl_time(o_small, follow=True)
            rows.append(pairs("HEAD cached small file, hubproxy vs olah req/s (x olah)",
                              lambda: ab_stats(small, 500, 8)[0], lambda: ab_stats(o_small, 500, 8)[0],
                              args.rounds, True))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("bench", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
