"""What every benchmark shares: starting the servers, timing clients, alternating pairs, saving results."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the test servers and helpers benchmarks share with the tests

from tests.helpers import evict_from_page_cache  # noqa: E402,F401 - re-exported for the benchmarks

REPO = "bench/model"
BIG = "model.safetensors"
SMALL = "config.json"
#: Server processes for hubproxy (unless a benchmark says otherwise) and for the HEAD row's do-nothing app.
WORKERS = str(os.cpu_count() or 1)


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


def start_hubproxy(upstream: str, data_dir: Path, workdir: Path, **settings: str) -> tuple[Proc, str]:
    """hubproxy on a free port; ``settings`` as HUBPROXY_* variables."""
    port = free_port()
    env = {**os.environ, "HUBPROXY_LOG_LEVEL": "warning", **{f"HUBPROXY_{k.upper()}": v for k, v in settings.items()}}
    env.setdefault("HUBPROXY_WORKERS", WORKERS)
    proc = Proc([sys.executable, "-m", "hubproxy", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--upstream", upstream, "--data-dir", str(data_dir)], env=env, log=workdir / f"hubproxy-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def start_verifying_relay(upstream: str, sha256: str | None, workdir: Path) -> tuple[Proc, str]:
    """``verifying_relay.py`` in front of ``upstream`` (hashing every answer against ``sha256``; relaying only if
    None)."""
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).with_name("verifying_relay.py")), "--port", str(port),
           "--upstream", upstream, *(["--sha256", sha256] if sha256 else ["--no-hash"])]
    proc = Proc(cmd, log=workdir / f"relay-{port}.log")
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_bare_asgi(workdir: Path) -> tuple[Proc, str]:
    """``bare_asgi.py`` under uvicorn as hubproxy runs (uvloop, httptools, ``WORKERS``, no access log)."""
    port = free_port()
    proc = Proc([sys.executable, "-m", "uvicorn", "benchmarks.bare_asgi:app", "--port", str(port), "--loop", "uvloop",
                 "--http", "httptools", "--workers", WORKERS, "--no-access-log", "--log-level",
                 "warning"], env={**os.environ, "PYTHONPATH": str(ROOT)}, log=workdir / f"bare-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def _run_nginx(workdir: Path, name: str, server: str, probe: str) -> tuple[Proc, str]:
    """nginx (2 workers, sendfile and tcp_nopush on, no access log) with one ``server`` block; ``{port}`` in
    ``server`` is its port. Returns the process and its base URL once ``probe`` (a path) answers."""
    port = free_port()
    conf = workdir / f"{name}.conf"
    server = server.replace("{port}", str(port))
    conf.write_text(f"""
worker_processes 2;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on;
  client_body_temp_path {workdir}/{name}-body; proxy_temp_path {workdir}/{name}-proxy;
  fastcgi_temp_path {workdir}/{name}-fcgi; uwsgi_temp_path {workdir}/{name}-uwsgi; scgi_temp_path {workdir}/{name}-scgi;
  {server}
}}
""")
    proc = Proc(["nginx", "-c", str(conf)], log=workdir / f"{name}.out")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + probe)
    return proc, url


def start_nginx(root: Path, workdir: Path) -> tuple[Proc, str]:
    """nginx serving the files under ``root`` (the reference for hot reads)."""
    return _run_nginx(workdir, "nginx", f"server {{ listen 127.0.0.1:{{port}}; root {root}; }}", "/" + SMALL)


def start_nginx_proxy(origin: str, workdir: Path, probe: str) -> tuple[Proc, str]:
    """nginx as a streaming reverse proxy of ``origin`` (``http://host:port``; responses not buffered to disk or
    held, the ``Host`` header the origin's own, so presigned URLs stay valid): a peer for relayed reads."""
    netloc = origin.split("://", 1)[1]
    server = (f"server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass {origin}; proxy_buffering off; "
              f"proxy_http_version 1.1; proxy_set_header Host {netloc}; }} }}")
    return _run_nginx(workdir, "nginx-proxy", server, probe)


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


def tree_pids(pid: int) -> list[int]:
    """A process and its children (hubproxy's worker processes)."""
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    return pids


def cpu_seconds_of_tree(pid: int) -> float:
    """User and system CPU a process and its children have used so far."""
    ticks = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def quiet(proc: Proc, busy: float = 0.05, step: float = 0.5, timeout: float = 60) -> None:
    """Wait until ``proc`` and its children use less than ``busy`` of a core over ``step`` seconds: work a step
    left behind (a server finishing what it was sent) must not run into the next measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds_of_tree(proc.p.pid)
        time.sleep(step)
        if cpu_seconds_of_tree(proc.p.pid) - before < busy * step:
            return


def rss_of_tree(pid: int) -> int:
    """Resident memory of a process and its children, in bytes."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def ab_stats(url: str, n: int = 20000, c: int = 32) -> tuple[float, float]:
    """ApacheBench HEAD requests (``-i``) on keep-alive connections: requests per second and the p99 in ms."""
    out = subprocess.run(["ab", "-q", "-i", "-k", "-n", str(n), "-c", str(c), url], capture_output=True, text=True,
                         check=True).stdout
    rps = p99 = None
    for line in out.splitlines():
        if line.startswith("Requests per second"):
            rps = float(line.split()[3])
        elif line.strip().startswith("99%"):
            p99 = float(line.split()[1])
    if rps is None or p99 is None:
        raise RuntimeError(out)
    return rps, p99


def ab_rps(url: str, n: int = 20000, c: int = 32) -> float:
    return ab_stats(url, n, c)[0]


def upstream_bytes(hub_url: str) -> dict[str, int]:
    """Bytes the fake hub has sent of each blob so far."""
    with urllib.request.urlopen(hub_url + "/_fake/blob-bytes", timeout=10) as resp:
        return json.loads(resp.read())


def sampled_peak(pid: int, run):  # noqa: ANN001, ANN201
    """Run ``run()`` while sampling the RSS of ``pid`` and its children; returns (its result, peak bytes)."""
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_of_tree(pid))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        return run(), peak[0]
    finally:
        stop.set()
        thread.join()


def random_file(path: Path, mib: int) -> Path:
    """Write ``mib`` MiB of random bytes to ``path`` (a blob no cache holds yet); returns ``path``."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1024 * 1024))
    return path


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


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


def save_results(name: str, results: dict) -> None:
    """Write a run's results as JSON under benchmarks/results/ (dated)."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=1))


