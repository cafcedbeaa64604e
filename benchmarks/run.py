"""hubproxy benchmarks: every figure is a ratio against a reference measured in the same run.

Conditions and goals: ../shared/BENCHMARKS.md. Run: ``python benchmarks/run.py`` (needs nginx,
curl and ab from Debian's nginx-light, curl and apache2-utils; olah from PyPI for the peer rows,
found with --olah). Prints the core count, every pair and the medians; writes a JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = "bench/model"
BIG = "model.safetensors"
SMALL = "config.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


class Proc:
    """A background process that is stopped at exit."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.log = open(log or os.devnull, "ab")
        self.p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if log is None else self.log,
                                  stderr=self.log, start_new_session=True)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


def start_fakehub(files: dict[str, Path], throttle: float | None) -> tuple[Proc, str]:
    cmd = [sys.executable, "-m", "tests.fakehub"]
    for path, local in files.items():
        cmd += ["--file", f"{REPO}:{path}={local}"]
    if throttle:
        cmd += ["--throttle", str(throttle)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    wrapper = Proc.__new__(Proc)
    wrapper.p, wrapper.log = proc, open(os.devnull, "ab")
    info = json.loads(line)
    wrapper.cdn_url = info["cdn_url"]  # type: ignore[attr-defined]
    return wrapper, info["url"]


def start_hubproxy(upstream: str, data_dir: Path, workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    env = {**os.environ, "HUBPROXY_LOG_LEVEL": "warning"}
    env.setdefault("HUBPROXY_WORKERS", str(os.cpu_count() or 1))
    proc = Proc([sys.executable, "-m", "hubproxy", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--upstream", upstream, "--data-dir", str(data_dir)], env=env, log=workdir / f"hubproxy-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def start_nginx(root: Path, workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path {workdir}/nginx-body; proxy_temp_path {workdir}/nginx-proxy;
  fastcgi_temp_path {workdir}/nginx-fcgi; uwsgi_temp_path {workdir}/nginx-uwsgi; scgi_temp_path {workdir}/nginx-scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
    proc = Proc(["nginx", "-c", str(conf)], log=workdir / "nginx.out")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/" + SMALL)
    return proc, url


def start_olah(olah_bin: str, upstream: str, cdn: str, workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    netloc = upstream.split("://", 1)[1]
    repos = workdir / f"olah-repos-{port}"
    cmd = [olah_bin, "--host", "127.0.0.1", "--port", str(port), "--hf-scheme", "http", "--hf-netloc", netloc,
           "--hf-lfs-netloc", cdn.split("://", 1)[1], "--mirror-scheme", "http",
           "--mirror-netloc", f"127.0.0.1:{port}", "--mirror-lfs-netloc", f"127.0.0.1:{port}",
           "--repos-path", str(repos)]
    proc = Proc(cmd, log=workdir / f"olah-{port}.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("olah did not come up")


def curl_time(url: str, follow: bool = False) -> float:
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{http_code} %{size_download}"]
    if follow:
        cmd.append("-L")
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout.split()
    if out[1] not in ("200", "206"):
        raise RuntimeError(f"{url}: HTTP {out[1]}")
    return float(out[0])


def parallel_curls(url: str, n: int) -> float:
    """Wall time for n concurrent downloads."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(["curl", "-sS", "-o", "/dev/null", url]) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.monotonic() - t0


def rss_of_tree(pid: int) -> int:
    """Resident memory of a process and its children, in bytes."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def ab_rps(url: str, n: int = 20000, c: int = 32) -> float:
    out = subprocess.run(["ab", "-q", "-i", "-k", "-n", str(n), "-c", str(c), url], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests per second"):
            return float(line.split()[3])
    raise RuntimeError(out)


def pairs(label: str, ours, ref, rounds: int, higher_is_better: bool) -> dict:  # noqa: ANN001
    """Alternate ours/ref ``rounds`` times; print each pair and the median ratio ours/ref."""
    ratios = []
    rows = []
    for i in range(rounds):
        a = ours()
        b = ref()
        ratio = a / b
        ratios.append(ratio)
        rows.append((a, b))
        print(f"  {label} pair {i + 1}: hubproxy/peer {a:.3f}  reference {b:.3f}  ratio {ratio:.3f}", flush=True)
    med = statistics.median(ratios)
    print(f"{label}: median ratio {med:.3f} ({'higher' if higher_is_better else 'lower'} is better)", flush=True)
    return {"label": label, "pairs": rows, "median_ratio": med}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--throttle-mbps", type=float, default=100.0, help="per-connection upstream limit, MB/s")
    ap.add_argument("--olah", default=shutil.which("olah-cli"), help="olah-cli binary for the peer rows")
    ap.add_argument("--skip", default="", help="comma list of rows to skip: hot1,hot8,cold,coldfast,head,olah")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    size = args.size_mib * 1024 * 1024
    print(f"cores: {os.cpu_count()}  file: {args.size_mib} MiB  date: {time.strftime('%Y-%m-%d')}", flush=True)
    results: dict = {"cores": os.cpu_count(), "size_mib": args.size_mib, "rows": []}
    work = Path(tempfile.mkdtemp(prefix="hubproxy-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    procs: list[Proc] = []
    try:
        files = work / "files"
        files.mkdir()
        with open(files / BIG, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1024 * 1024))
        (files / SMALL).write_text(json.dumps({"model_type": "bench"}))
        hub, hub_url = start_fakehub({BIG: files / BIG, SMALL: files / SMALL}, None)
        procs.append(hub)
        nginx, nginx_url = start_nginx(files, work)
        procs.append(nginx)
        hp, hp_url = start_hubproxy(hub_url, work / "hp-data", work)
        procs.append(hp)
        big = f"{hp_url}/{REPO}/resolve/main/{BIG}"
        small = f"{hp_url}/{REPO}/resolve/main/{SMALL}"
        curl_time(big)  # fill the cache
        curl_time(small)
        if "hot1" not in skip:
            results["rows"].append(pairs("hot, 1 client, throughput (x nginx)",
                                         lambda: size / curl_time(big), lambda: size / curl_time(f"{nginx_url}/{BIG}"),
                                         args.rounds, True))
        if "hot8" not in skip:
            peak = [0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_of_tree(hp.p.pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            row = pairs("hot, 8 clients, aggregate throughput (x nginx)",
                        lambda: 8 * size / parallel_curls(big, 8),
                        lambda: 8 * size / parallel_curls(f"{nginx_url}/{BIG}", 8), args.rounds, True)
            stop.set()
            row["hubproxy_peak_rss_mb"] = peak[0] / 1e6
            print(f"  hubproxy peak RSS during 8 clients: {peak[0] / 1e6:.0f} MB", flush=True)
            results["rows"].append(row)
        if "head" not in skip:
            results["rows"].append(pairs("HEAD cached small file, req/s (x nginx)",
                                         lambda: ab_rps(small), lambda: ab_rps(f"{nginx_url}/{SMALL}"),
                                         args.rounds, True))
            print(f"  hubproxy HEAD req/s (last run): {ab_rps(small):.0f}", flush=True)

        def cold_pair(label: str, upstream_url: str) -> dict:
            counter = [0]

            def ours() -> float:
                counter[0] += 1
                proc, url = start_hubproxy(upstream_url, work / f"cold-{label[:4]}-{counter[0]}", work)
                try:
                    curl_time(f"{url}/{REPO}/resolve/main/{SMALL}")  # metadata warm-up is not what we time
                    return curl_time(f"{url}/{REPO}/resolve/main/{BIG}")
                finally:
                    proc.stop()
                    shutil.rmtree(work / f"cold-{label[:4]}-{counter[0]}", ignore_errors=True)

            return pairs(label, ours, lambda: curl_time(f"{upstream_url}/{REPO}/resolve/main/{BIG}", follow=True),
                         args.rounds, False)

        if "cold" not in skip:
            slow, slow_url = start_fakehub({BIG: files / BIG, SMALL: files / SMALL}, args.throttle_mbps * 1e6)
            procs.append(slow)
            results["rows"].append(cold_pair(f"cold, upstream {args.throttle_mbps:.0f} MB/s per connection, time (x direct)",
                                             slow_url))
        if "coldfast" not in skip:
            results["rows"].append(cold_pair("cold, unthrottled loopback, time (x direct)", hub_url))
        if "olah" not in skip and args.olah:
            olah, olah_url = start_olah(args.olah, hub_url, hub.cdn_url, work)  # type: ignore[attr-defined]
            procs.append(olah)
            o_big = f"{olah_url}/{REPO}/resolve/main/{BIG}"
            t_cold_olah = curl_time(o_big, follow=True)
            print(f"  olah cold (unthrottled): {t_cold_olah:.2f}s", flush=True)
            results["rows"].append(pairs("hot, 1 client, hubproxy vs olah throughput (x olah)",
                                         lambda: size / curl_time(big), lambda: size / curl_time(o_big, follow=True),
                                         args.rounds, True))
            o_small = f"{olah_url}/{REPO}/resolve/main/{SMALL}"
            curl_time(o_small, follow=True)
            results["rows"].append(pairs("HEAD cached small file, hubproxy vs olah req/s (x olah)",
                                         lambda: ab_rps(small, 500, 8), lambda: ab_rps(o_small, 500, 8),
                                         args.rounds, True))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    save_results("bench", results)
    return 0


def save_results(name: str, results: dict) -> None:
    """Write a run's results as JSON under benchmarks/results/ (dated)."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
