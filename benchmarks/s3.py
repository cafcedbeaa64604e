"""S3 store benchmarks: hubproxy over an S3 store against a direct download of the same object.

Runs moto in server mode (``moto_server``) as the S3 endpoint, the fake hub as the upstream, and
prints ratios measured in the same run (medians of alternating pairs), as ../shared/BENCHMARKS.md
asks. Hot streamed reads are also set against curl reading the object from the bucket itself and against
nginx relaying that same GET as a reverse proxy (what the extra hop costs a general-purpose proxy).
The ``slow`` rows read a ``--slow-mib`` object through a relay that sends each GET's body at most
``--slow-mbps`` (a bucket that holds each connection back, as AWS S3 does; ``tests/relays.py``), against one
boto3 GET and against boto3's own parallel download through the same relay.
Run: ``python benchmarks/s3.py [--size-mib 256]`` (needs nginx for the proxy row).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boto3  # noqa: E402
from common import (  # noqa: E402
    BIG,
    REPO,
    SMALL,
    Proc,
    curl_time,
    free_port,
    pairs,
    quiet,
    random_file,
    sha256_file,
    start_fakehub,
    start_nginx_proxy,
    wait_http,
)

#: The object the slow-bucket rows read.
SLOW = "model-slow.safetensors"


def start_hubproxy_s3(upstream: str, data_dir: Path, endpoint: str, bucket: str, redirect: bool,
                      work: Path) -> tuple[Proc, str]:
    port = free_port()
    env = {**os.environ, "HUBPROXY_LOG_LEVEL": "warning", "HUBPROXY_STORE": "s3", "HUBPROXY_S3_BUCKET": bucket,
           "HUBPROXY_S3_ENDPOINT_URL": endpoint, "HUBPROXY_S3_REGION": "us-east-1", "HUBPROXY_S3_PATH_STYLE": "true",
           "HUBPROXY_S3_REDIRECT": str(redirect).lower(), "HUBPROXY_WORKERS": "1"}
    proc = Proc([sys.executable, "-m", "hubproxy", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--upstream", upstream, "--data-dir", str(data_dir)], env=env, log=work / f"hubproxy-{port}.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out: cold, hot, slow")
    ap.add_argument("--slow-mib", type=int, default=64, help="size of the object the slow rows read")
    ap.add_argument("--slow-mbps", type=float, default=100.0, help="MB/s the slow bucket sends each GET at")
    args = ap.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    size = args.size_mib * 1024 * 1024
    print(f"cores: {os.cpu_count()}  file: {args.size_mib} MiB  date: {time.strftime('%Y-%m-%d')}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hubproxy-s3-bench-"))
    procs: list[Proc] = []
    try:
        files = work / "files"
        files.mkdir()
        random_file(files / BIG, args.size_mib)
        random_file(files / SLOW, args.slow_mib)
        (files / SMALL).write_text("{}")
        sha = sha256_file(files / BIG)
        s3_port = free_port()
        moto = Proc([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(s3_port)],
                    log=work / "moto.log")
        procs.append(moto)
        endpoint = f"http://127.0.0.1:{s3_port}"
        time.sleep(2)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="reference")
        s3.upload_file(str(files / BIG), "reference", BIG)

        def direct() -> float:
            """A direct boto3 GET of the same object, read to the end (the reference)."""
            return one_get(s3, "reference", BIG)

        def stored(bucket: str) -> None:
            wait_for_object(s3, bucket, f"hubproxy/blobs/{sha[:2]}/{sha}")

        hub, hub_url = start_fakehub({BIG: files / BIG, SMALL: files / SMALL, SLOW: files / SLOW}, None)
        procs.append(hub)
        counter = [0]

        def cold() -> float:
            counter[0] += 1
            bucket = f"cold{counter[0]}"
            s3.create_bucket(Bucket=bucket)
            proc, url = start_hubproxy_s3(hub_url, work / f"d{counter[0]}", endpoint, bucket, False, work)
            try:
                curl_time(f"{url}/{REPO}/resolve/main/{SMALL}")
                took = curl_time(f"{url}/{REPO}/resolve/main/{BIG}")
                # Untimed: the upload ends after the client's download, and moto completes it with seconds of
                # CPU. Left running, that work would land in the next measurement (the direct GET after it).
                stored(bucket)
                return took
            finally:
                proc.stop()
                quiet(moto)

        skip = set(filter(None, args.skip.split(",")))
        if "cold" not in skip:
            pairs("S3 store, cold (fill, verify, upload while filling), time (x direct boto3 GET)", cold, direct,
                  args.rounds, False)
        s3.create_bucket(Bucket="hot")
        for redirect in (() if "hot" in skip else (False, True)):
            proc, url = start_hubproxy_s3(hub_url, work / f"hot-{redirect}", endpoint, "hot", redirect, work)
            procs.append(proc)
            big = f"{url}/{REPO}/resolve/main/{BIG}"
            curl_time(big, follow=True)  # stored already after the first pass: the redirect mode answers 302
            stored("hot")
            quiet(moto)
            label = "redirected (302 to presigned URL)" if redirect else "streamed through hubproxy"
            pairs(f"S3 store, hot, {label}, throughput (x direct boto3 GET)",
                  lambda big=big, redirect=redirect: size / curl_time(big, follow=redirect),
                  lambda: size / direct(), args.rounds, True)
            if not redirect:
                # The same client (curl) reading the object straight from the bucket: what the extra hop costs.
                presigned = s3.generate_presigned_url(
                    "get_object", Params={"Bucket": "hot", "Key": f"hubproxy/blobs/{sha[:2]}/{sha}"}, ExpiresIn=3600)
                pairs("S3 store, hot, streamed through hubproxy, throughput (x curl GET of a presigned URL)",
                      lambda big=big: size / curl_time(big), lambda p=presigned: size / curl_time(p), args.rounds, True)
                # A peer for the hop itself: nginx relaying the same presigned GET as a streaming reverse proxy.
                proxy, proxy_url = start_nginx_proxy(endpoint, work, "/")
                procs.append(proxy)
                relayed = proxy_url + presigned.split(endpoint, 1)[1]
                pairs("S3 store, hot, streamed through hubproxy, throughput (x nginx proxying the presigned GET)",
                      lambda big=big: size / curl_time(big), lambda r=relayed: size / curl_time(r), args.rounds, True)
        if "slow" not in skip:
            slow_rows(args, work, files, hub_url, endpoint, s3, moto, procs)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def slow_rows(args: argparse.Namespace, work: Path, files: Path, hub_url: str, endpoint: str, s3: Any,
              moto: Proc, procs: list[Proc]) -> None:
    """Hot reads of a stored object from a bucket that sends each GET's body at most ``--slow-mbps``."""
    url_file = work / "slow-relay-url"
    relay = Proc([sys.executable, "-m", "tests.relays", "--target", endpoint, "--url-file", str(url_file),
                  "--bytes-per-second", str(args.slow_mbps * 1e6)], log=work / "slow-relay.log")
    procs.append(relay)
    deadline = time.monotonic() + 30
    while not url_file.exists() or not url_file.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("the slow bucket's relay did not start")
        time.sleep(0.1)
    slow_endpoint = url_file.read_text()
    s3.create_bucket(Bucket="slow")
    proc, url = start_hubproxy_s3(hub_url, work / "slow", slow_endpoint, "slow", False, work)
    procs.append(proc)
    target = f"{url}/{REPO}/resolve/main/{SLOW}"
    curl_time(target)  # cold: filled, then stored in the bucket (uploads are not held back)
    sha = sha256_file(files / SLOW)
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    slow = boto3.client("s3", endpoint_url=slow_endpoint, region_name="us-east-1")
    wait_for_object(slow, "slow", key)
    quiet(moto)
    size = args.slow_mib * 1024 * 1024

    def boto3_parallel() -> float:
        """boto3's managed download (ranged GETs of 8 MiB, ten at once), into a sink."""
        sink = _Sink()
        t0 = time.monotonic()
        slow.download_fileobj("slow", key, sink)
        return time.monotonic() - t0

    label = f"S3 store, hot, bucket sending each GET at {args.slow_mbps:g} MB/s ({args.slow_mib} MiB), throughput"
    pairs(f"{label} (x one direct boto3 GET)", lambda: size / curl_time(target),
          lambda: size / one_get(slow, "slow", key), args.rounds, True)
    pairs(f"{label} (x boto3's parallel download_fileobj)", lambda: size / curl_time(target),
          lambda: size / boto3_parallel(), args.rounds, True)


def one_get(client: Any, bucket: str, key: str) -> float:
    """Seconds one boto3 GET of the object takes, read to the end."""
    t0 = time.monotonic()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    while body.read(8 * 1024 * 1024):
        pass
    return time.monotonic() - t0


def wait_for_object(client: Any, bucket: str, key: str) -> None:
    """Wait until ``key`` is an object of ``bucket`` (an upload completed)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client.head_object(Bucket=bucket, Key=key)
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    raise RuntimeError(f"{key} never reached bucket {bucket}")


class _Sink:
    """A writable, seekable file that keeps nothing (boto3's parallel download writes parts at their offsets)."""

    def __init__(self) -> None:
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos


if __name__ == "__main__":
    raise SystemExit(main())
