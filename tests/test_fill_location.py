"""A cold file's fill goes straight to the CDN URL that the upstream's HEAD of that file had just given,
and back through the upstream when that URL no longer works (``upstream/locations.py``)."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from pathlib import Path

from huggingface_hub import hf_hub_download

from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, request, scrape, value

MIB = 1024 * 1024


def _lfs_file(hub: FakeHub, repo: str, size: int = 3 * MIB) -> str:
    data = os.urandom(size)
    hub.add_commit("model", repo, {"w.safetensors": data})
    return hashlib.sha256(data).hexdigest()


def _asked(hub: FakeHub, repo: str, sha: str) -> dict[str, list[str]]:
    """The upstream requests for the file: HEADs and GETs of its resolve URL, and GETs of its CDN URL."""
    asked: dict[str, list[str]] = {"HEAD": [], "GET": [], "CDN": []}
    for method, path, _ in hub.requests:
        if f"/{repo}/resolve/" in path and method in ("HEAD", "GET"):
            asked[method].append(path)
        elif method == "GET" and path.startswith(f"CDN /_cdn/{sha}"):
            asked["CDN"].append(path)
    return asked


def test_a_cold_download_fetches_from_the_cdn_url_the_head_gave(proxy: ProxyProcess, fakehub: FakeHub,
                                                                tmp_path: Path) -> None:
    sha = _lfs_file(fakehub, "alice/located")
    local = hf_hub_download("alice/located", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == sha
    asked = _asked(fakehub, "alice/located", sha)
    # As the client itself would: one HEAD of the resolve URL, then the bytes from the CDN, no second resolve.
    assert len(asked["HEAD"]) == 1, asked
    assert asked["GET"] == [], asked
    assert len(asked["CDN"]) == 1, asked


def test_an_expired_cdn_url_sends_the_fill_back_through_the_upstream(proxy: ProxyProcess, fakehub: FakeHub,
                                                                     tmp_path: Path) -> None:
    sha = _lfs_file(fakehub, "alice/located-expiring")
    fakehub.faults.cdn_expires[sha] = 0  # the first CDN request finds every link handed out so far expired
    local = hf_hub_download("alice/located-expiring", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == sha
    asked = _asked(fakehub, "alice/located-expiring", sha)
    assert len(asked["HEAD"]) == 1, asked
    assert len(asked["GET"]) == 1, asked  # the fill asked the upstream for a fresh link, once
    assert len(asked["CDN"]) == 2, asked  # the refused link, then the fresh one
    assert "failed after" not in proxy.log()


def test_the_probe_to_the_cdn_url_is_received_off_the_event_loop(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    """With the CDN URL known from the HEAD, the fill's first request goes on a blocking connection read by a lane
    thread, as the parts after it do: its first bytes reach the client as soon as they arrive (here the CDN sends
    64 KiB, then nothing for 4 s), and every byte is hashed from the buffer it arrived in."""
    size = 8 * 64 * 1024
    sha = _lfs_file(fakehub, "alice/probe-lane", size)
    proxy = make_proxy()
    path = "/alice/probe-lane/resolve/main/w.safetensors"
    assert request("HEAD", proxy.url + path)[0] == 200  # as clients do first: the CDN URL is known now
    fakehub.faults.trickle[sha] = (64 * 1024, 4.0)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    try:
        started = time.monotonic()
        conn.request("GET", path)
        resp = conn.getresponse()
        first = resp.read1(64 * 1024)
        waited = time.monotonic() - started
        assert resp.status == 200 and first
        assert waited < 3.0, f"the first bytes came after {waited:.1f} s, with the CDN's second piece"
        fakehub.faults.trickle.pop(sha)  # the rest at once
        body = first + resp.read()
    finally:
        conn.close()
    assert hashlib.sha256(body).hexdigest() == sha
    samples = scrape(proxy.url)
    assert value(samples, "hubproxy_fill_requests_total", receiver="event_loop") == 0
    assert value(samples, "hubproxy_fill_requests_total", receiver="thread") == 1
    assert value(samples, "hubproxy_fill_hashed_bytes_total", source="spool") == 0
    assert value(samples, "hubproxy_fill_hashed_bytes_total", source="buffer") == size
