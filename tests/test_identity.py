"""Identity: bootstrap, tokens (hashed, expiring, revocable), hf auth, anonymous access, token hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from tests.conftest import UPSTREAM_TOKEN
from tests.fakehub import FakeHub
from tests.helpers import ROOT, client_env, request, run_client


def admin(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "admin", *args, "--data-dir", str(data_dir), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"hubproxy admin {args}: {proc.stdout}\n{proc.stderr}")
    return proc


def test_bootstrap_and_hf_auth(proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    token = json.loads(admin(proxy.data_dir, "bootstrap").stdout)["token"]
    assert token.startswith("hf_") and len(token) == 37
    assert admin(proxy.data_dir, "bootstrap", check=False).returncode == 1  # only on a fresh install
    assert token.encode() not in (proxy.data_dir / "hubproxy.db").read_bytes()  # stored as a hash only
    env = client_env(proxy.url, tmp_path / "hf")
    hf = str(Path(sys.executable).with_name("hf"))
    run_client("", env, args=[hf, "auth", "login", "--token", token])
    out = run_client("", env, args=[hf, "auth", "whoami"]).stdout
    assert "admin" in out
    me = HfApi(endpoint=proxy.url, token=token).whoami()
    assert me["name"] == "admin" and me["auth"]["accessToken"]["role"] == "write"
    status, h, _ = request("GET", proxy.url + "/api/whoami-v2")
    assert status == 401 and h["x-error-message"] == "Invalid credentials in Authorization header"
    listed = json.loads(admin(proxy.data_dir, "token-list").stdout)
    assert listed[0]["prefix"] == token[:7] and "token" not in listed[0]
    assert fakehub.count(contains="whoami") == 0  # never asked upstream


def test_anonymous_off_and_token_lifecycle(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0")
    admin(proxy.data_dir, "user-create", "ci-bot", "--service")
    token = json.loads(admin(proxy.data_dir, "token-create", "ci-bot", "--name", "ci").stdout)["token"]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/files", "config.json", endpoint=proxy.url, cache_dir=tmp_path / "a", token=False)
    with pytest.raises(HfHubHTTPError, match="Invalid credentials"):
        hf_hub_download("alice/files", "config.json", endpoint=proxy.url, cache_dir=tmp_path / "b",
                        token="hf_" + "x" * 34)
    local = hf_hub_download("alice/files", "config.json", endpoint=proxy.url, cache_dir=tmp_path / "c", token=token)
    assert Path(local).exists()
    assert request("GET", proxy.url + "/health")[0] == 200  # probes need no token
    token_id = json.loads(admin(proxy.data_dir, "token-list", "ci-bot").stdout)[0]["id"]
    admin(proxy.data_dir, "token-revoke", str(token_id))
    status, h, _ = request("HEAD", proxy.url + "/alice/files/resolve/main/config.json",
                           {"Authorization": f"Bearer {token}"})
    assert status == 401 and h["x-error-message"] == "Invalid credentials in Authorization header"
    short = json.loads(admin(proxy.data_dir, "token-create", "ci-bot", "--expires-days", "0.00002").stdout)["token"]
    assert request("HEAD", proxy.url + "/alice/files/resolve/main/config.json",
                   {"Authorization": f"Bearer {short}"})[0] == 200
    time.sleep(2)
    assert request("HEAD", proxy.url + "/alice/files/resolve/main/config.json",
                   {"Authorization": f"Bearer {short}"})[0] == 401
    fresh = json.loads(admin(proxy.data_dir, "token-create", "ci-bot").stdout)["token"]
    admin(proxy.data_dir, "user-disable", "ci-bot")
    assert request("HEAD", proxy.url + "/alice/files/resolve/main/config.json",
                   {"Authorization": f"Bearer {fresh}"})[0] == 401
    time.sleep(0.5)
    used = {t["id"]: t["last_used_at"] for t in json.loads(admin(proxy.data_dir, "token-list").stdout)}
    assert used[token_id] is not None  # recorded in a batch


def test_client_tokens_never_reach_upstream_or_logs(proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    token = json.loads(admin(proxy.data_dir, "bootstrap").stdout)["token"]
    stale_hub_token = "hf_" + "S" * 34  # a user's Hub token: anonymous read still works (zero setup)
    for i, tok in enumerate((token, stale_hub_token)):
        local = hf_hub_download("alice/files", "weights.bin", endpoint=proxy.url, cache_dir=tmp_path / f"c{i}",
                                token=tok, revision=fakehub.repos[("model", "alice/files")].branches["main"])
        assert Path(local).stat().st_size == 3 * 1024 * 1024 + 17
        HfApi(endpoint=proxy.url, token=tok).model_info("alice/tiny-gpt2")
    sent = [v for _, _, headers in fakehub.requests for v in headers.values()]
    assert not any(token in v or stale_hub_token in v for v in sent)
    assert any(UPSTREAM_TOKEN in v for v in sent)  # hubproxy used its own upstream token
    log = proxy.log()
    assert token not in log and stale_hub_token not in log and UPSTREAM_TOKEN not in log
