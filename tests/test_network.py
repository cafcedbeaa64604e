"""The upstream behind a corporate forward proxy (HTTPS_PROXY, NO_PROXY) and a private CA."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from huggingface_hub import hf_hub_download

from tests.conftest import UPSTREAM_TOKEN
from tests.fakehub import FakeHub
from tests.fixtures import odd_files
from tests.helpers import request, scrape, value
from tests.netproxy import ForwardProxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_hub(ca: trustme.CA) -> Iterator[FakeHub]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    hub = FakeHub(token=UPSTREAM_TOKEN, tls=context)
    hub.add_commit("model", "corp/model", {"config.json": b'{"corp": true}', "w.safetensors": os.urandom(300_000)})
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy()
    yield proxy
    proxy.stop()


def test_https_upstream_through_a_forward_proxy_with_a_private_ca(make_proxy, tls_hub: FakeHub, ca: trustme.CA,  # noqa: ANN001
                                                                  forward_proxy: ForwardProxy, tmp_path: Path) -> None:
    bundle = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    proxy = make_proxy(upstream=tls_hub.url, upstream_ca_bundle=str(bundle),
                       process_env={"HTTPS_PROXY": forward_proxy.url, "NO_PROXY": ""})
    for name in ("config.json", "w.safetensors"):
        local = hf_hub_download("corp/model", name, endpoint=proxy.url, cache_dir=tmp_path / "c")
        repo = tls_hub.repos[("model", "corp/model")]
        assert Path(local).read_bytes() == repo.commits[repo.branches["main"]].files[name].blob.data
    # Hub and CDN were both reached through the proxy, as tunnels.
    assert f"CONNECT 127.0.0.1:{tls_hub.port}" in forward_proxy.seen
    assert f"CONNECT 127.0.0.1:{tls_hub.cdn_port}" in forward_proxy.seen


def test_no_proxy_and_an_untrusted_certificate(make_proxy, tls_hub: FakeHub, ca: trustme.CA,  # noqa: ANN001
                                               forward_proxy: ForwardProxy, tmp_path: Path) -> None:
    bundle = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    direct = make_proxy(upstream=tls_hub.url, upstream_ca_bundle=str(bundle),
                        process_env={"HTTPS_PROXY": forward_proxy.url, "NO_PROXY": "127.0.0.1"})
    assert request("GET", direct.url + "/corp/model/resolve/main/config.json")[2] == b'{"corp": true}'
    assert forward_proxy.seen == []
    untrusted = make_proxy(upstream=tls_hub.url, process_env={"HTTPS_PROXY": forward_proxy.url})
    status, headers, body = request("GET", untrusted.url + "/corp/model/resolve/main/config.json")
    assert status == 502 and f"127.0.0.1:{tls_hub.port}" not in body.decode()


def test_plain_http_upstream_through_http_proxy(make_proxy, fakehub: FakeHub, forward_proxy: ForwardProxy) -> None:  # noqa: ANN001
    proxy = make_proxy(process_env={"HTTP_PROXY": forward_proxy.url, "NO_PROXY": ""})
    status, _, body = request("GET", proxy.url + "/alice/files/resolve/main/config.json")
    assert status == 200 and body == odd_files()["config.json"]
    assert any(line.startswith(f"GET {fakehub.url}/") for line in forward_proxy.seen), forward_proxy.seen


def test_a_parallel_fill_through_an_http_proxy_stays_on_the_proxy(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                   forward_proxy: ForwardProxy, tmp_path: Path) -> None:
    """Parts are fetched by worker threads only on direct connections: with a proxy for the URL every part
    goes through the upstream client, and so through the proxy."""
    data = os.urandom(6 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    fakehub.add_commit("model", "alice/proxied-parts", {"w.safetensors": data})
    fakehub.faults.trickle[sha] = (256 * 1024, 0.02)
    proxy = make_proxy(process_env={"HTTP_PROXY": forward_proxy.url, "NO_PROXY": ""}, fill_connections="3",
                       fill_part_bytes=str(1024 * 1024), fill_single_stream_mbps="0")
    local = hf_hub_download("alice/proxied-parts", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == data
    through_proxy = [line for line in forward_proxy.seen if f"/_cdn/{sha}" in line]
    assert len(through_proxy) == 6  # all six parts (the probe after its redirect) reached the CDN through it
    samples = scrape(proxy.url)
    assert value(samples, "hubproxy_fill_requests_total", receiver="thread") == 0
    assert value(samples, "hubproxy_fill_requests_total", receiver="event_loop") == 6


def test_a_parallel_fill_over_https_with_a_private_ca(make_proxy, tls_hub: FakeHub, ca: trustme.CA,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    """Parts after the probe are received on blocking TLS connections by worker threads: they trust the same
    private CA and reach the CDN the probe was redirected to."""
    data = os.urandom(6 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    tls_hub.add_commit("model", "corp/big", {"w.safetensors": data})
    tls_hub.faults.trickle[sha] = (256 * 1024, 0.02)  # a slow stream: the fill widens to parallel parts
    bundle = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    proxy = make_proxy(upstream=tls_hub.url, upstream_ca_bundle=str(bundle), fill_connections="3",
                       fill_part_bytes=str(1024 * 1024), fill_single_stream_mbps="0")
    local = hf_hub_download("corp/big", "w.safetensors", endpoint=proxy.url, cache_dir=tmp_path / "c")
    assert Path(local).read_bytes() == data
    assert tls_hub.peak_streams[sha] >= 3
    cdn_parts = [h["Range"] for m, p, h in tls_hub.requests if m == "GET" and p.startswith(f"CDN /_cdn/{sha}")]
    assert len(cdn_parts) >= 5  # six parts: every one after the probe went straight to the CDN
    assert tls_hub.blob_bytes[sha] == len(data)
    assert value(scrape(proxy.url), "hubproxy_fill_requests_total", receiver="thread") >= 5
