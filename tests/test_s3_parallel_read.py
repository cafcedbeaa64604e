"""A large stored object read from a bucket that holds each connection back goes on with ranged GETs in parallel
(``store/parallelread.py``); from a fast bucket it stays one GET.

The bucket is moto behind a relay that sends each GET's body no faster than ``RATE`` (``tests/relays.py``);
the relay records every request, so a test can tell which ranges hubproxy asked for.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from hubproxy.store.parallelread import JUDGE_BYTES, PART_BYTES
from tests.fakehub import FakeHub
from tests.helpers import request, s3_settings, scrape, value, wait_until
from tests.netproxy import ForwardProxy
from tests.relays import S3FaultRelay

MIB = 1024 * 1024
#: Bytes per second the relay sends each GET's body at: far below ``s3_read_single_stream_mbps``.
RATE = 24 * MIB
#: Bytes a slow stream is timed over before the read goes parallel (two looks).
JUDGED = 2 * JUDGE_BYTES
#: The blob: the judged start, then five whole parts and a short one.
SIZE = JUDGED + 5 * PART_BYTES + 3 * MIB
#: The parts after the judged start, in order.
PARTS = [(JUDGED + i * PART_BYTES, min(SIZE, JUDGED + (i + 1) * PART_BYTES)) for i in range(6)]


@pytest.fixture
def relay(s3_endpoint: str) -> Iterator[S3FaultRelay]:
    relay = S3FaultRelay(s3_endpoint)
    yield relay
    relay.stop()


def _stored(relay: S3FaultRelay, client: object, bucket: str, sha: str) -> None:
    key = f"hubproxy/blobs/{sha[:2]}/{sha}"
    assert wait_until(lambda: key in {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}, 30)


def _ranges(relay: S3FaultRelay, since: int, sha: str) -> list[tuple[int, int]]:
    """The byte ranges of the GETs of the blob ``sha`` relayed since the ``since``-th request."""
    out = []
    for method, path, headers in relay.seen[since:]:
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", headers.get("range", ""))
        if method == "GET" and sha in path and m:
            out.append((int(m.group(1)), int(m.group(2)) + 1))
    return out


def _cold_then_stored(make_proxy, fakehub: FakeHub, relay: S3FaultRelay, bucket: tuple[str, object],  # noqa: ANN001
                      repo: str, env: dict[str, str] | None = None) -> tuple[object, bytes, str]:
    name, client = bucket
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", repo, {"w.safetensors": data})
    proxy = make_proxy(process_env=env, **s3_settings(relay.url, name))
    status, _, body = request("GET", f"{proxy.url}/{repo}/resolve/main/w.safetensors")  # cold: from the fill
    assert status == 200 and body == data
    _stored(relay, client, name, sha)
    return proxy, data, sha


@pytest.mark.parametrize("reads", ["raw", "boto3"])
def test_a_slow_bucket_is_read_with_ranged_gets_in_parallel(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                            relay: S3FaultRelay, bucket, tmp_path: Path,
                                                            reads: str) -> None:
    """``raw``: reads on connections of hubproxy's own (a plain-http endpoint); ``boto3``: a forward proxy on the
    way to the bucket, through which boto3 makes every read."""
    forward_proxy = ForwardProxy() if reads == "boto3" else None
    try:
        env = {"HTTP_PROXY": forward_proxy.url, "NO_PROXY": ""} if forward_proxy else None
        proxy, data, sha = _cold_then_stored(make_proxy, fakehub, relay, bucket, f"alice/slow-parts-{reads}", env)
        relay.bytes_per_second = RATE
        since = len(relay.seen)
        path = hf_hub_download(f"alice/slow-parts-{reads}", "w.safetensors", endpoint=proxy.url,
                               cache_dir=tmp_path / "hf")
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
        assert value(scrape(proxy.url), "hubproxy_store_large_reads_total", mode="parallel") >= 1
        ranges = _ranges(relay, since, sha)
        # The first GET asks for the whole blob; once judged slow, it carries the first part after its judged start,
        # and the rest comes in parts by ranged GETs, each asked once.
        assert ranges[0] == (0, SIZE)
        assert sorted(ranges[1:]) == PARTS[1:]
        if forward_proxy is not None:
            assert any(sha in seen for seen in forward_proxy.seen)
    finally:
        if forward_proxy is not None:
            forward_proxy.stop()


def test_a_fast_bucket_is_read_with_one_get(make_proxy, fakehub: FakeHub, s3_endpoint: str,  # noqa: ANN001
                                            bucket) -> None:
    """Straight from moto, the first stream is judged fast and carries the whole read: one GET, as before; and
    ``/metrics`` says how each large read went."""
    name, client = bucket
    data = os.urandom(SIZE)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/fast-one-get", {"w.safetensors": data})
    proxy = make_proxy(**s3_settings(s3_endpoint, name))
    url = f"{proxy.url}/alice/fast-one-get/resolve/main/w.safetensors"
    assert request("GET", url)[2] == data
    assert wait_until(lambda: f"hubproxy/blobs/{sha[:2]}/{sha}" in
                      {o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])}, 30)
    before = scrape(proxy.url)
    status, _, body = request("GET", url)
    assert status == 200 and body == data
    after = scrape(proxy.url)
    reads = {mode: value(after, "hubproxy_store_large_reads_total", mode=mode)
             - value(before, "hubproxy_store_large_reads_total", mode=mode) for mode in ("stream", "parallel")}
    assert reads == {"stream": 1, "parallel": 0}


def test_a_part_cut_short_is_asked_for_again_from_where_it_stopped(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                   relay: S3FaultRelay, bucket) -> None:
    """One part's answer is cut mid-body: that part is asked for again from the byte it reached, and the client
    gets every byte right; a range a client asks for is read the same way."""
    proxy, data, sha = _cold_then_stored(make_proxy, fakehub, relay, bucket, "alice/cut-part")
    relay.bytes_per_second = RATE
    relay.cut_once = (PARTS[1][0], 3 * MIB)
    since = len(relay.seen)
    status, _, body = request("GET", f"{proxy.url}/alice/cut-part/resolve/main/w.safetensors")
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    ranges = _ranges(relay, since, sha)
    assert PARTS[1] in ranges and (PARTS[1][0] + 3 * MIB, PARTS[1][1]) in ranges  # the cut part, then its rest
    assert relay.cut_once is None
    # The first stream cut while it carries the first part: a ranged GET fetches that part instead.
    relay.cut_once = (0, JUDGED + 2 * MIB)
    since = len(relay.seen)
    status, _, body = request("GET", f"{proxy.url}/alice/cut-part/resolve/main/w.safetensors")
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    ranges = _ranges(relay, since, sha)
    assert ranges[0] == (0, SIZE) and PARTS[0] in ranges and relay.cut_once is None
    # A client's own range (past the first byte) is judged and split the same way.
    since = len(relay.seen)
    status, _, body = request("GET", f"{proxy.url}/alice/cut-part/resolve/main/w.safetensors",
                              {"Range": f"bytes={MIB}-{40 * MIB - 1}"})
    assert status == 206 and body == data[MIB:40 * MIB]
    ranges = _ranges(relay, since, sha)
    assert ranges[0] == (MIB, 40 * MIB) and len(ranges) > 2
    # After its judged start and the first stream's part, the parts of the client's range, each asked once.
    after = MIB + JUDGED + PART_BYTES
    assert sorted(ranges[1:]) == [(pos, min(40 * MIB, pos + PART_BYTES)) for pos in range(after, 40 * MIB, PART_BYTES)]
