"""The permission matrix: each role against each repo class, through huggingface_hub with a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from tests.fakehub import FakeHub
from tests.helpers import ROOT, AdminClient, wait_until

OK, HIDDEN, NO_PULL = "ok", "hidden", "no-pull"


def admin(data_dir: Path, db: str | None, *args: str) -> dict | list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    if db:
        env["HUBPROXY_DATABASE_URL"] = db
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "admin", *args, "--data-dir", str(data_dir), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def outcome(endpoint: str, token: str, repo: str, cache: Path) -> str:
    try:
        hf_hub_download(repo, "config.json", endpoint=endpoint, cache_dir=cache, token=token)
        return OK
    except GatedRepoError as exc:  # a subclass of RepositoryNotFoundError: test it first
        assert "does not allow pulling" in str(exc)
        return NO_PULL
    except RepositoryNotFoundError:
        return HIDDEN


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_permission_matrix(make_proxy, fakehub: FakeHub, tmp_path: Path, database: str, request) -> None:  # noqa: ANN001
    db = request.getfixturevalue("pg_url") if database == "postgresql" else None
    extra = {"database_url": db} if db else {}
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0", **extra)
    d = proxy.data_dir
    tokens = {"admin": admin(d, db, "bootstrap")["token"]}
    rest = AdminClient(proxy.url, tokens["admin"])
    rest.call("POST", "/projects", {"name": "research", "allow": ["models:alice/*"], "deny": ["models:alice/gated*"]})
    rest.call("POST", "/projects", {"name": "other", "allow": ["models:gpt2"]})
    for user, project, role in (("viewer", "research", "viewer"), ("dev", "research", "developer"),
                                ("maint", "research", "maintainer"), ("outsider", "other", "developer")):
        tokens[user] = rest.user(user, project, role)
    # alice/files is cached (an admin pulled it; its blob is stored just after the last byte is sent);
    # alice/tiny-gpt2 is not yet.
    assert outcome(proxy.url, tokens["admin"], "alice/files", tmp_path / "warm") == OK
    assert wait_until(lambda: any(r["files_cached"] for r in rest.call("GET", "/cache"))), "never stored"
    expected = {
        "viewer": {"alice/files": OK, "alice/tiny-gpt2": NO_PULL, "alice/gated": HIDDEN, "gpt2": HIDDEN},
        "outsider": {"alice/files": HIDDEN, "alice/tiny-gpt2": HIDDEN, "alice/gated": HIDDEN, "gpt2": OK},
        "dev": {"alice/files": OK, "alice/tiny-gpt2": OK, "alice/gated": HIDDEN, "gpt2": HIDDEN},
        "maint": {"alice/files": OK, "alice/tiny-gpt2": OK, "alice/gated": HIDDEN, "gpt2": HIDDEN},
        "admin": {"alice/files": OK, "alice/tiny-gpt2": OK, "alice/gated": OK, "gpt2": OK},
    }
    got = {user: {repo: outcome(proxy.url, tokens[user], repo, tmp_path / f"{user}-{repo.replace('/', '_')}")
                  for repo in repos} for user, repos in expected.items()}
    assert got == expected
    # Metadata is isolated too: a hidden repo answers like a missing one on every route.
    api = HfApi(endpoint=proxy.url, token=tokens["viewer"])
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/gated")
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_files("gpt2")
    assert not api.repo_exists("alice/gated") and api.repo_exists("alice/files")
    # Listings (paginated upstream and followed through hubproxy's Link) show only what each caller may see.
    def listed(user: str) -> list[str]:
        return sorted(m.id for m in HfApi(endpoint=proxy.url, token=tokens[user]).list_models())

    every = listed("admin")
    assert {"gpt2", "alice/gated", "alice/files"} <= set(every)
    assert listed("viewer") == [m for m in every if m.startswith("alice/") and not m.startswith("alice/gated")]
    assert listed("outsider") == ["gpt2"]
    assert [m.id for m in HfApi(endpoint=proxy.url, token=tokens["outsider"]).list_models(search="alice")] == []
    # The audit trail names the project that granted each download.
    # Events are written in batches about once a second: wait for the viewer's download to land.
    def viewer_events() -> list[dict]:
        return rest.call("GET", "/audit/downloads?user=viewer")

    assert wait_until(lambda: [e for e in viewer_events() if e["status"] == 200], 15), "never audited"
    events = [e for e in viewer_events() if e["status"] == 200]
    assert [(e["repo_id"], e["project"]) for e in events] == [("alice/files", "research")]
    # Refused attempts are recorded too, with their outcome (the client's HEAD was all it sent).
    def refused() -> set[tuple[str, str]]:
        return {(e["repo_id"], e["error"]) for e in viewer_events() if e["outcome"] == "refused"}

    expected_refusals = {("alice/tiny-gpt2", "GatedRepo"), ("alice/gated", "RepoNotFound"), ("gpt2", "RepoNotFound")}
    wait_until(lambda: refused() == expected_refusals)
    assert refused() == expected_refusals
