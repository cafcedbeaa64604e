"""Air-gapped bundles: export from a hubproxy, import into an offline one, serve to unchanged clients."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from tests.fakehub import FakeHub
from tests.helpers import ROOT, client_env, free_port, request, run_client
from tests.test_frameworks import LOAD_DATASET, ModelLoader, _reference


def sync(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``hubproxy sync ...`` in its own process, as an operator runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "hubproxy", "sync", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def offline_proxy(make_proxy, data_dir: Path, **env: str):  # noqa: ANN001, ANN201
    """A hubproxy with --offline whose upstream address does not even answer."""
    return make_proxy(data_dir=data_dir, upstream=f"http://127.0.0.1:{free_port()}", args=["--offline"], token=None,
                      **env)


def resolve_gets(proxy, fragment: str) -> int:  # noqa: ANN001
    """GET requests for ``fragment`` in a hubproxy's access log (written within 0.2 s of each request)."""
    time.sleep(0.5)
    return sum(1 for line in proxy.log().splitlines() if '"method": "GET"' in line and fragment in line)


def tree_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_import_serves_offline(make_proxy, fakehub: FakeHub, model_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    inside_net = make_proxy()
    # Warm one repo: its blobs are then taken from the local store, not fetched again.
    snapshot_download("alice/tiny-gpt2", endpoint=inside_net.url, cache_dir=tmp_path / "warm")
    fakehub.reset_counts()
    warm_gets = resolve_gets(inside_net, "/alice/tiny-gpt2/resolve/")
    assert warm_gets > 0
    bundle = tmp_path / "models.tar"
    proc = sync("export", "--data-dir", str(inside_net.data_dir), "--source", inside_net.url, "--repo", "alice/tiny-gpt2",
                "--repo", "dataset:alice/tiny-ds", "--repo", "alice/files@main", "--out", str(bundle), "--json")
    summary = json.loads(proc.stdout)
    # Not on a terminal: plain progress lines (bytes, speed, ETA) and one line per file.
    assert "MB/s, eta" in proc.stderr or "KB/s, eta" in proc.stderr, proc.stderr
    assert "alice/tiny-gpt2: config.json" in proc.stderr and "from the store" in proc.stderr
    assert summary["repos"] == 3 and summary["blobs_written"] > 0 and bundle.is_file()
    tiny = fakehub.repos[("model", "alice/tiny-gpt2")]
    tiny_files = {p: f.blob.data for p, f in tiny.commits[tiny.branches["main"]].files.items()}
    assert not any("GET /alice/tiny-gpt2/resolve" in p for p in fakehub.paths()), "warm blobs were fetched again"
    assert any("GET /alice/files/resolve" in p for p in fakehub.paths())  # cold ones came through the hubproxy
    # The warm repo's bytes came from the local store: not one more download from the hubproxy either.
    assert resolve_gets(inside_net, "/alice/tiny-gpt2/resolve/") == warm_gets
    assert resolve_gets(inside_net, "/alice/files/resolve/") > 0
    verified = json.loads(sync("verify", str(bundle), "--json").stdout)
    assert verified["checksum"] == summary["checksum"] and len(verified["repos"]) == 3

    site = tmp_path / "airgap"
    imported = json.loads(sync("import", str(bundle), "--data-dir", str(site), "--json").stdout)
    assert imported["blobs_stored"] == summary["blobs_written"]
    again = json.loads(sync("import", str(bundle), "--data-dir", str(site), "--json").stdout)  # idempotent
    assert again["blobs_stored"] == 0 and again["blobs_skipped"] == summary["blobs_written"]
    offline = offline_proxy(make_proxy, site)

    # Same bytes as through the connected hubproxy, for a snapshot and for single files.
    a = tree_files(Path(snapshot_download("alice/tiny-gpt2", endpoint=inside_net.url, cache_dir=tmp_path / "a")))
    b = tree_files(Path(snapshot_download("alice/tiny-gpt2", endpoint=offline.url, cache_dir=tmp_path / "b")))
    assert a == b == tiny_files
    files = fakehub.repos[("model", "alice/files")]
    for path, f in files.commits[files.branches["main"]].files.items():
        local = hf_hub_download("alice/files", path, endpoint=offline.url, cache_dir=tmp_path / "c")
        assert Path(local).read_bytes() == f.blob.data, path
    # Metadata a client reads, offline: repo info, file listings, paths-info, refs.
    api = HfApi(endpoint=offline.url)
    online = HfApi(endpoint=inside_net.url)
    assert api.model_info("alice/tiny-gpt2").sha == tiny.branches["main"]
    assert sorted(api.list_repo_files("alice/files")) == sorted(online.list_repo_files("alice/files"))
    assert {e.path for e in api.list_repo_tree("alice/files", recursive=False)} == \
        {e.path for e in online.list_repo_tree("alice/files", recursive=False)}
    info = api.model_info("alice/tiny-gpt2", files_metadata=True)
    assert {s.rfilename: s.size for s in info.siblings} == {p: len(d) for p, d in tiny_files.items()}
    assert api.file_exists("alice/tiny-gpt2", "config.json") and not api.file_exists("alice/tiny-gpt2", "nope.bin")
    assert [b.name for b in api.list_repo_refs("alice/tiny-gpt2").branches] == ["main"]
    # transformers and datasets, unchanged, through the offline hubproxy: the same results.
    ref = _reference(model_dir)
    env = client_env(offline.url, tmp_path / "hf")
    with ModelLoader(env, tmp_path / "client.log") as client:
        loaded = client.load("alice/tiny-gpt2", tmp_path / "hf" / "hub")
    assert loaded["params"] == ref["params"] and loaded["ids"] == ref["ids"]
    rows_offline = run_client("", env, args=[sys.executable, "-c", LOAD_DATASET, "alice/tiny-ds"]).stdout
    rows_online = run_client("", client_env(inside_net.url, tmp_path / "hf-online"),
                             args=[sys.executable, "-c", LOAD_DATASET, "alice/tiny-ds"]).stdout
    assert json.loads(rows_offline.strip().splitlines()[-1]) == json.loads(rows_online.strip().splitlines()[-1])
    # Offline, listings show what the site holds.
    assert sorted(m.id for m in api.list_models()) == ["alice/files", "alice/tiny-gpt2"]
    assert [d.id for d in api.list_datasets(search="tiny")] == ["alice/tiny-ds"]
    # What the bundle did not carry is an offline miss, not a wrong answer.
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info("gpt2")
    assert err.value.response.status_code == 504


def test_damaged_bundles_are_rejected(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    source = make_proxy()
    bundle = tmp_path / "bundle"
    sync("export", "--source", source.url, "--repo", "alice/tiny-gpt2", "--out", str(bundle))
    blob = max((p for p in (bundle / "blobs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    member = str(blob.relative_to(bundle))
    good = blob.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    blob.write_bytes(bytes(flipped))
    for verb in ("verify", "import"):
        proc = sync(verb, str(bundle), "--data-dir", str(tmp_path / "site"), check=False)
        assert proc.returncode == 1 and member in proc.stderr and "corrupt" in proc.stderr, proc.stderr
    # Nothing from it is served, and the bad blob did not reach the store.
    site = offline_proxy(make_proxy, tmp_path / "site")
    for method in ("HEAD", "GET"):  # (plain requests: a client would back off on these 504s for 20 s)
        status, headers, _ = request(method, site.url + "/alice/tiny-gpt2/resolve/main/config.json")
        assert status == 504 and headers["x-error-code"] == "OfflineCacheMiss"
    assert not list((tmp_path / "site" / "blobs").rglob(blob.name))
    site.stop()
    # A truncated blob, and a manifest edited by hand, are named too.
    blob.write_bytes(good[: len(good) // 2])
    proc = sync("verify", str(bundle), check=False)
    assert proc.returncode == 1 and member in proc.stderr and "truncated" in proc.stderr
    blob.write_bytes(good)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["repos"][0]["revision"] = "evil"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = sync("verify", str(bundle), check=False)
    assert proc.returncode == 1 and "manifest.json" in proc.stderr and "checksum" in proc.stderr
    # A tar cut short is refused at the tar level.
    tar = tmp_path / "b.tar"
    sync("export", "--source", source.url, "--repo", "alice/tiny-gpt2", "--out", str(tar))
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 3])
    proc = sync("import", str(tar), "--data-dir", str(tmp_path / "site2"), check=False)
    assert proc.returncode == 1 and str(tar) in proc.stderr


def test_interrupted_import_is_resumed(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    big = os.urandom(96 * 1024 * 1024)
    fakehub.add_commit("model", "alice/big", {"config.json": b'{"big": true}', "model.safetensors": big,
                                              "README.md": b"# big\n"})
    bundle = tmp_path / "bundle"
    sync("export", "--source", fakehub.url, "--repo", "alice/big", "--out", str(bundle),
         env={"HUBPROXY_UPSTREAM_TOKEN": "hf_upstream_secret_token"})
    site = tmp_path / "site"
    proc = subprocess.Popen([sys.executable, "-m", "hubproxy", "sync", "import", str(bundle), "--data-dir", str(site)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={k: v for k, v in os.environ.items() if not k.startswith("HUBPROXY_")})
    part = site / "tmp" / (hashlib.sha256(big).hexdigest() + ".part")
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, "the import never started the big blob"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    # Killed mid-blob: nothing of the repo is visible.
    ls = subprocess.run([sys.executable, "-m", "hubproxy", "cache", "ls", "--json", "--data-dir", str(site)],
                        capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert not [r for r in json.loads(ls) if r["repo_id"] == "alice/big"]
    resumed = json.loads(sync("import", str(bundle), "--data-dir", str(site), "--json").stdout)
    assert resumed["blobs_stored"] + resumed["blobs_skipped"] == resumed["blobs"] == 3
    assert not list((site / "tmp").glob("*.part"))
    offline = offline_proxy(make_proxy, site)
    local = hf_hub_download("alice/big", "model.safetensors", endpoint=offline.url, cache_dir=tmp_path / "c")
    assert Path(local).read_bytes() == big


def test_incremental_bundle(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    weights1, weights2 = os.urandom(300_000), os.urandom(300_000)
    v1 = fakehub.add_commit("model", "alice/family", {"config.json": b'{"v": 1}', "w.safetensors": weights1,
                                                       "tokenizer.json": b'{"t": 1}'})
    token = {"HUBPROXY_UPSTREAM_TOKEN": "hf_upstream_secret_token"}
    full, delta = tmp_path / "full.tar", tmp_path / "delta.tar"
    sync("export", "--source", fakehub.url, "--repo", "alice/family", "--out", str(full), env=token)
    v2 = fakehub.add_commit("model", "alice/family", {"config.json": b'{"v": 2}', "w.safetensors": weights2,
                                                       "tokenizer.json": b'{"t": 1}'}, replace=True)
    summary = json.loads(sync("export", "--source", fakehub.url, "--repo", "alice/family", "--repo", f"alice/family@{v1}",
                              "--since", str(full), "--out", str(delta), "--json", env=token).stdout)
    # Only the two changed files travel; the tokenizer and all of v1 are in the base bundle already.
    assert summary["blobs_written"] == 2 and summary["blobs_in_base"] == 3
    assert summary["bytes_written"] == len(weights2) + len(b'{"v": 2}')
    site = tmp_path / "site"
    proc = sync("import", str(delta), "--data-dir", str(site), check=False)
    assert proc.returncode == 1 and "import the base bundle first" in proc.stderr
    sync("import", str(full), "--data-dir", str(site))
    sync("import", str(delta), "--data-dir", str(site))
    offline = offline_proxy(make_proxy, site)
    get = lambda rev, path: Path(hf_hub_download("alice/family", path, revision=rev,  # noqa: E731
                                                 endpoint=offline.url, cache_dir=tmp_path / "c")).read_bytes()
    assert get("main", "config.json") == b'{"v": 2}' and get("main", "w.safetensors") == weights2
    assert get(v1, "config.json") == b'{"v": 1}' and get(v1, "w.safetensors") == weights1
    assert HfApi(endpoint=offline.url).model_info("alice/family").sha == v2


def test_signed_bundles(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    sync("keygen", str(tmp_path / "export"))
    sync("keygen", str(tmp_path / "other"))
    assert (tmp_path / "export.key").stat().st_mode & 0o077 == 0
    signing = {"HUBPROXY_SYNC_SIGNING_KEY": str(tmp_path / "export.key")}
    trusted = {"HUBPROXY_SYNC_TRUSTED_KEYS": str(tmp_path / "export.pub")}
    signed, unsigned = tmp_path / "signed", tmp_path / "unsigned"
    sync("export", "--source", fakehub.url, "--repo", "gpt2", "--out", str(signed), env=signing)
    repos_file = tmp_path / "repos.txt"
    repos_file.write_text("# what the site asked for\ngpt2   # the canonical one\n\nspace:alice/demo@main\n")
    listed = json.loads(sync("export", "--source", fakehub.url, "--repos-file", str(repos_file), "--out", str(unsigned),
                             "--json").stdout)
    assert listed["repos"] == 2 and listed["signed_by"] is None
    assert json.loads(sync("verify", str(signed), "--json", env=trusted).stdout)["signed_by"]
    # Trusted keys configured: an unsigned bundle, or one signed by another key, is refused.
    proc = sync("import", str(unsigned), "--data-dir", str(tmp_path / "site"), env=trusted, check=False)
    assert proc.returncode == 1 and "not signed" in proc.stderr
    other = {"HUBPROXY_SYNC_TRUSTED_KEYS": str(tmp_path / "other.pub")}
    proc = sync("import", str(signed), "--data-dir", str(tmp_path / "site"), env=other, check=False)
    assert proc.returncode == 1 and "does not verify" in proc.stderr
    # A signed manifest changed after signing fails even with a recomputed checksum.
    from hubproxy.sync.manifest import Manifest

    manifest = Manifest.from_bytes((signed / "manifest.json").read_bytes())
    manifest.repos[0].revision = "tampered"
    signature = manifest.signature
    manifest.seal(None)
    manifest.signature = signature
    (signed / "manifest.json").write_bytes(manifest.to_bytes())
    proc = sync("import", str(signed), "--data-dir", str(tmp_path / "site"), env=trusted, check=False)
    assert proc.returncode == 1 and "does not verify" in proc.stderr
    assert not (tmp_path / "site" / "blobs").exists()  # refused before the store was touched


def test_export_of_gated_or_missing_repo_fails(fakehub: FakeHub, tmp_path: Path) -> None:
    for repo, words in (("alice/gated", "gated"), ("alice/nothing-here", "alice/nothing-here")):
        out = tmp_path / f"{repo.replace('/', '_')}.tar"
        proc = sync("export", "--source", fakehub.url, "--repo", "gpt2", "--repo", repo, "--out", str(out), check=False)
        assert proc.returncode == 1 and repo in proc.stderr and words in proc.stderr, proc.stderr
        assert not list(tmp_path.glob(out.name + "*")), "a failed export left a bundle behind"
    proc = sync("export", "--source", fakehub.url, "--repo", "../etc", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 1 and "expected [TYPE:]ORG/NAME" in proc.stderr


def test_a_partially_imported_revision_behaves_like_one_without_those_files(make_proxy, fakehub: FakeHub,  # noqa: ANN001
                                                                            model_dir: Path, tmp_path: Path) -> None:
    """Files left out with --exclude are missing at the site: optional ones are skipped at once, not retried."""
    bundle = tmp_path / "partial"
    sync("export", "--data-dir", str(tmp_path / "src"), "--source", fakehub.url, "--repo", "alice/tiny-gpt2",
         "--exclude", "generation_config.json", "--exclude", "*.md", "--out", str(bundle),
         env={"HUBPROXY_UPSTREAM_TOKEN": "hf_upstream_secret_token"})
    site = tmp_path / "site"
    sync("import", str(bundle), "--data-dir", str(site))
    offline = offline_proxy(make_proxy, site)
    api = HfApi(endpoint=offline.url)
    files = api.list_repo_files("alice/tiny-gpt2")
    assert "config.json" in files and "generation_config.json" not in files
    assert "generation_config.json" not in {s.rfilename for s in api.model_info("alice/tiny-gpt2").siblings}
    assert not api.file_exists("alice/tiny-gpt2", "generation_config.json")
    snapshot = Path(snapshot_download("alice/tiny-gpt2", endpoint=offline.url, cache_dir=tmp_path / "snap"))
    assert (snapshot / "config.json").exists() and not (snapshot / "generation_config.json").exists()
    with ModelLoader(client_env(offline.url, tmp_path / "hf"), tmp_path / "client.log") as client:
        t0 = time.monotonic()
        loaded = client.load("alice/tiny-gpt2", tmp_path / "hf" / "hub")
        assert time.monotonic() - t0 < 15  # no five retries with back-off on the optional file
    assert loaded["params"] == _reference(model_dir)["params"]
    log = offline.log()
    assert "generation_config.json" in log and '"status": 504' not in log
