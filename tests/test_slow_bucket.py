"""A bucket slow to answer holds no worker thread: requests that need none of its bytes are still served.

A stored blob streamed from S3 waits on the bucket: for the head of its GET (spliced reads, ``rawget.py``), or
for the GET and every piece of its body (reads through boto3: an https endpoint, or a proxy in the way); with
``s3_redirect``, each redirect waits for a HEAD that proves the object is there; and every verified cold file
waits until it is stored in the bucket (its upload completed, or one PUT). Those waits used to run in the worker threads every disk and database call of the process shares; with as many
reads waiting as threads, a request for another file waited for the bucket too. They now run in threads of
their own (``store/s3.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import request, s3_settings, scrape, value, wait_until
from tests.netproxy import ForwardProxy
from tests.relays import S3FaultRelay

MIB = 1024 * 1024
#: More reads waiting on the bucket than the process has worker threads (``runtime.WORKER_THREADS``, 32).
WAITING = 40
#: Seconds the bucket holds each GET.
DELAY = 5.0


@pytest.fixture
def slow_bucket(s3_endpoint: str) -> Iterator[S3FaultRelay]:
    relay = S3FaultRelay(s3_endpoint)
    yield relay
    relay.stop()


@pytest.mark.parametrize("reads", ["spliced", "boto3", "redirected"])
def test_reads_waiting_on_a_slow_bucket_leave_the_others_served(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                bucket: tuple[str, object], slow_bucket: S3FaultRelay,
                                                                tmp_path: Path, reads: str) -> None:
    """``boto3``: a forward proxy on the way to the bucket, through which boto3 makes every read; ``redirected``:
    ``s3_redirect``, clients are sent to the bucket."""
    name, s3 = bucket
    blob = os.urandom(4 * MIB)
    sha = hashlib.sha256(blob).hexdigest()
    fakehub.add_commit("model", f"alice/slow-bucket-{reads}", {"w.safetensors": blob})
    other = os.urandom(2 * MIB)
    fakehub.add_commit("model", f"alice/beside-slow-bucket-{reads}", {"w.safetensors": other})
    forward_proxy = ForwardProxy() if reads == "boto3" else None
    try:
        env = {"HTTP_PROXY": forward_proxy.url, "NO_PROXY": ""} if forward_proxy else None
        redirect = "true" if reads == "redirected" else "false"
        proxy = make_proxy(process_env=env, **s3_settings(slow_bucket.url, name, s3_redirect=redirect))
        path = f"/alice/slow-bucket-{reads}/resolve/main/w.safetensors"
        status, _, body = request("GET", proxy.url + path)  # cold: the fill's answer, in every mode
        assert status == 200 and body == blob
        assert wait_until(lambda: s3.list_objects_v2(Bucket=name, Prefix=f"hubproxy/blobs/{sha[:2]}/{sha}")  # type: ignore[attr-defined]
                          .get("KeyCount"), 20)
        # Reads of the stored blob wait (its GETs, and the HEADs that a redirect or a first read asks).
        slow_bucket.delay, slow_bucket.delayed = DELAY, lambda method, target: sha in target
        relayed = value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total")
        bodies: list[bytes] = []

        def read() -> None:
            status, headers, body = request("GET", proxy.url + path, timeout=60)
            if status == 302:  # redirected: the client reads the object from the bucket itself
                status, _, body = request("GET", headers["location"], timeout=60)
            bodies.append(body)

        readers = [threading.Thread(target=read, daemon=True) for _ in range(WAITING)]
        for reader in readers:
            reader.start()
        time.sleep(0.5)  # every read is waiting on the bucket
        started = time.monotonic()
        local = hf_hub_download(f"alice/beside-slow-bucket-{reads}", "w.safetensors", endpoint=proxy.url,
                                cache_dir=tmp_path)
        took = time.monotonic() - started
        assert Path(local).read_bytes() == other
        assert took < DELAY / 2, f"a cold download beside {WAITING} reads waiting on the bucket took {took:.1f}s"
        for reader in readers:
            reader.join(60)
        assert len(bodies) == WAITING and all(b == blob for b in bodies)
        relayed = value(scrape(proxy.url), "hubproxy_zero_copy_bytes_total") - relayed
        # Spliced: every body went from the bucket's socket to the client's (``rawget.py``). Otherwise only the
        # other client's file went out that way (``sendfile`` from its fill's spool).
        if reads == "spliced":
            assert relayed > WAITING * (len(blob) - 65536)
        else:
            assert relayed <= len(other)
        if forward_proxy is not None:
            assert any(seen.startswith("GET ") and sha in seen for seen in forward_proxy.seen)
    finally:
        if forward_proxy is not None:
            forward_proxy.stop()


def test_blobs_being_stored_in_a_slow_bucket_leave_the_others_served(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                     bucket: tuple[str, object],
                                                                     slow_bucket: S3FaultRelay, tmp_path: Path) -> None:
    """Each cold file's client has its bytes once they are verified; the fill then stores the blob (one PUT for a
    small one), which the bucket holds ``DELAY`` seconds. The first 32 such stores held every worker thread, and
    the other fills, their clients and another client's download waited for them."""
    name, s3 = bucket
    files = {f"part-{i}.bin": os.urandom(256 * 1024) for i in range(WAITING)}
    fakehub.add_commit("model", "alice/slow-stores", files)
    other = os.urandom(2 * MIB)
    fakehub.add_commit("model", "alice/beside-slow-stores", {"w.safetensors": other})
    proxy = make_proxy(**s3_settings(slow_bucket.url, name))
    slow_bucket.delay, slow_bucket.delayed = DELAY, lambda method, target: method == "PUT"
    bodies: dict[str, bytes] = {}

    def download(path: str) -> None:
        bodies[path] = request("GET", f"{proxy.url}/alice/slow-stores/resolve/main/{path}", timeout=60)[2]

    started = time.monotonic()
    clients = [threading.Thread(target=download, args=(path,), daemon=True) for path in files]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    took = time.monotonic() - started
    # Each client has its bytes once they are verified, whatever the bucket does with the others' blobs.
    assert bodies == files
    assert took < DELAY / 2, f"{WAITING} cold downloads whose blobs are being stored took {took:.1f}s"
    started = time.monotonic()  # the blobs are still being stored: every PUT is held
    local = hf_hub_download("alice/beside-slow-stores", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    took = time.monotonic() - started
    assert Path(local).read_bytes() == other
    assert took < DELAY / 2, f"a cold download beside {WAITING} blobs being stored took {took:.1f}s"
    # Nothing is lost: every blob reaches the bucket.
    assert wait_until(lambda: s3.list_objects_v2(Bucket=name, Prefix="hubproxy/blobs/")  # type: ignore[attr-defined]
                      .get("KeyCount", 0) >= WAITING + 1, 60)
