"""Access control as outside testers attacked it: other spellings of ids, hidden versus missing repos,
viewers and what is really stored. Real clients with tokens, raw HTTP where a client would hide the answer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from tests.fakehub import FakeHub
from tests.helpers import AdminClient, admin_json, hubproxy_cli, request, wait_until


def _secured(make_proxy, fakehub: FakeHub, deny: list[str]) -> tuple:  # noqa: ANN001
    """A proxy with anonymous access off, a project allowing acme/*, and a developer's and a viewer's token."""
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0", revision_ttl="0")
    d = proxy.data_dir
    tokens = {"admin": admin_json(d, "bootstrap")["token"]}
    rest = AdminClient(proxy.url, tokens["admin"])
    rest.call("POST", "/projects", {"name": "research", "allow": ["models:acme/*"], "deny": deny})
    for user, role in (("dev", "developer"), ("viewer", "viewer")):
        tokens[user] = rest.user(user, "research", role)
    return proxy, tokens


def test_other_spellings_of_a_denied_repo_stay_denied(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    for name in ("acme/tiny", "acme/secret-model", "acme/allowed"):
        fakehub.add_commit("model", name, {"config.json": json.dumps({"name": name}).encode()})
    fakehub.renames[("model", "acme/old-name")] = "acme/secret-model"
    proxy, tokens = _secured(make_proxy, fakehub, ["models:acme/tiny", "models:acme/secret-*"])
    auth = {"Authorization": f"Bearer {tokens['dev']}"}
    # A trailing newline (or any control character) is no repo id at all.
    for target in ("/acme/tiny%0A/resolve/main/config.json", "/api/models/acme/tiny%0A/tree/main",
                   "/api/models/acme/tiny%0a", "/acme/ti%00ny/resolve/main/config.json"):
        status, headers, body = request("GET", proxy.url + target, auth)
        assert status == 400 and headers["x-error-code"] == "BadRequest", target
        assert "\n" not in headers.get("link", "")

    def download(repo: str) -> str:
        return hf_hub_download(repo, "config.json", endpoint=proxy.url, token=tokens["dev"],
                               cache_dir=tmp_path / repo.replace("/", "_"))

    for spelling in ("acme/Secret-Model", "ACME/SECRET-MODEL", "acme/old-name", "acme/TINY"):
        with pytest.raises(RepositoryNotFoundError):
            download(spelling)
    # An allowed repo works under any spelling, and is known by one canonical id everywhere.
    assert json.loads(Path(download("ACME/Allowed")).read_text()) == {"name": "acme/allowed"}
    assert json.loads(Path(download("acme/allowed")).read_text()) == {"name": "acme/allowed"}
    assert HfApi(endpoint=proxy.url, token=tokens["dev"]).model_info("Acme/ALLOWED").id == "acme/allowed"
    rest = AdminClient(proxy.url, tokens["admin"])
    assert wait_until(lambda: len(rest.call("GET", "/audit/downloads?user=dev")) >= 6, 15)
    events = rest.call("GET", "/audit/downloads?user=dev")
    assert {e["repo_id"] for e in events if e["outcome"] == "complete"} == {"acme/allowed"}
    refused = {e["repo_id"] for e in events if e["outcome"] == "refused"}
    assert refused == {"acme/secret-model", "acme/tiny"}  # audited under the names the upstream gave
    assert [r["repo_id"] for r in rest.call("GET", "/cache")] == ["acme/allowed"]


def test_viewers_get_only_what_is_stored(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    fakehub.add_commit("model", "acme/fresh", {"config.json": b'{"fresh": 1}'})
    proxy, tokens = _secured(make_proxy, fakehub, [])

    def viewer_download() -> str:
        return hf_hub_download("acme/fresh", "config.json", endpoint=proxy.url, token=tokens["viewer"],
                               cache_dir=tmp_path / f"v{time.monotonic_ns()}")

    # A developer's probe of a missing file leaves a negative entry: that is no content.
    auth = {"Authorization": f"Bearer {tokens['dev']}"}
    assert request("HEAD", proxy.url + "/acme/fresh/resolve/main/nope.txt", auth)[0] == 404
    with pytest.raises(GatedRepoError):
        viewer_download()
    hf_hub_download("acme/fresh", "config.json", endpoint=proxy.url, token=tokens["dev"], cache_dir=tmp_path / "dev")
    assert json.loads(Path(viewer_download()).read_text()) == {"fresh": 1}
    # A viewer reads what is stored, and pulls nothing else of the repo either.
    fakehub.add_commit("model", "acme/fresh", {"extra.json": b'{"new": 1}'})
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/fresh", "extra.json", endpoint=proxy.url, token=tokens["viewer"],
                        cache_dir=tmp_path / "extra")
    hubproxy_cli(proxy.data_dir, "cache", "purge", "acme/fresh")
    with pytest.raises(GatedRepoError):  # at once: the gate asks what is stored, it does not remember
        viewer_download()
