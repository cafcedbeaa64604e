"""``hubproxy serve`` as operators run it: HTTPS from flags, OpenMetrics for scrapers that ask, build info, and an
access log that says where each file's bytes came from."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import trustme

from tests.fakehub import FakeHub
from tests.helpers import ROOT, free_port, request, wait_until


def test_https_from_flags(tmp_path: Path, fakehub: FakeHub) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBPROXY_", "HF_"))}
    proc = subprocess.Popen([sys.executable, "-m", "hubproxy", "serve", "--port", str(port), "--upstream", fakehub.url,
                             "--data-dir", str(tmp_path / "d"), "--tls-certfile", str(tmp_path / "server.pem"),
                             "--tls-keyfile", str(tmp_path / "key.pem"), "--log-level", "warning"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/health", context=context, timeout=2) as r:
                    return json.loads(r.read())["status"] == "ok"
            except OSError:
                return False

        assert wait_until(healthy, timeout=30)
    finally:
        proc.terminate()
        proc.wait(30)
    bad = subprocess.run([sys.executable, "-m", "hubproxy", "serve", "--tls-certfile", str(tmp_path / "server.pem"),
                          "--data-dir", str(tmp_path / "e")], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "go together" in bad.stderr  # one clear line, not a traceback


def test_serve_help_names_defaults_and_variables() -> None:
    out = subprocess.run([sys.executable, "-m", "hubproxy", "serve", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60).stdout
    for flag, variable in (("--workers", "HUBPROXY_WORKERS"), ("--log-level", "HUBPROXY_LOG_LEVEL"),
                           ("--database-url", "HUBPROXY_DATABASE_URL"), ("--tls-certfile", "HUBPROXY_TLS_CERTFILE")):
        assert flag in out and variable in out.replace("\n", "").replace(" ", "")
    assert "default 1" in out  # workers


def test_openmetrics_build_info_and_the_cache_in_the_access_log(make_proxy) -> None:  # noqa: ANN001
    proxy = make_proxy(log_format="json")
    status, headers, body = request("GET", proxy.url + "/metrics",
                                    {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF") and b'hubproxy_build_info{python="' in body
    status, headers, body = request("GET", proxy.url + "/metrics")
    assert headers["content-type"].startswith("text/plain") and b"hubproxy_build_info" in body
    for _ in range(2):
        assert request("GET", proxy.url + "/alice/files/resolve/main/config.json")[0] == 200
        time.sleep(0.1)

    def caches() -> list[str]:
        lines = [json.loads(line) for line in proxy.log().splitlines() if '"hubproxy.access"' in line]
        return [x["cache"] for x in lines if x["path"].endswith("/config.json") and x["method"] == "GET"]

    assert wait_until(lambda: caches() == ["miss", "hit"], timeout=10), caches()
