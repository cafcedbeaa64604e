"""Which URLs hubproxy may fetch on a direct connection of its own (``direct.py``): fill parts, raw S3 reads."""

from __future__ import annotations

import pytest

from hubproxy.direct import route


def test_a_url_with_no_proxy_in_the_way_is_fetched_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert route("https://CDN.example.org:8443/blob?sig=1") == ("https", "cdn.example.org:8443")
    assert route("http://127.0.0.1:9000/x") == ("http", "127.0.0.1:9000")
    assert route("ftp://example.org/x") is None


def test_a_proxy_sends_the_parts_through_the_upstream_client(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert route("https://cdn.example.org/blob") is None  # through the proxy: aiohttp's tunnel, not ours
    assert route("https://hub.internal.corp/blob") == ("https", "hub.internal.corp")  # NO_PROXY: direct
    assert route("http://cdn.example.org/blob") == ("http", "cdn.example.org")  # HTTPS_PROXY is for https only
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    assert route("http://cdn.example.org/blob") is None
