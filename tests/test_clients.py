"""The real huggingface_hub client (with hf_xet installed) against hubproxy."""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fakehub import FakeHub
from tests.helpers import ProxyProcess, client_env, request, run_client


def _files(hub: FakeHub, repo: str, rtype: str = "model") -> dict[str, bytes]:
    r = hub.repos[(rtype, repo)]
    return {p: f.blob.data for p, f in r.commits[r.branches["main"]].files.items()}


def test_xet_is_installed() -> None:
    import hf_xet  # noqa: F401  - the default install; hubproxy must keep it on plain HTTP


def test_hf_hub_download(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    files = _files(fakehub, "alice/files")
    for name in ("config.json", "weights.bin", "sub dir/notes \u00e9.txt", "empty.txt", "model.safetensors"):
        local = hf_hub_download("alice/files", name, endpoint=proxy.url, cache_dir=tmp_path)
        assert Path(local).read_bytes() == files[name]
        # The blob name is the Hub's own: sha256 for LFS, git sha1 otherwise.
        blob = Path(local).resolve().name
        assert blob in (hashlib.sha256(files[name]).hexdigest(),
                        hashlib.sha1(b"blob %d\0" % len(files[name]) + files[name]).hexdigest())
    assert fakehub.count(contains="xet") == 0


def test_snapshot_download_sharded_model(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    files = _files(fakehub, "alice/tiny-gpt2-sharded")
    assert sum(1 for p in files if p.endswith(".safetensors")) >= 2
    folder = Path(snapshot_download("alice/tiny-gpt2-sharded", endpoint=proxy.url, cache_dir=tmp_path))
    got = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert got == files
    # Patterns, and the dataset and space types.
    folder = Path(snapshot_download("alice/tiny-ds", repo_type="dataset", endpoint=proxy.url,
                                    cache_dir=tmp_path, allow_patterns=["*.parquet"]))
    assert [p.name for p in folder.rglob("*.parquet")] == ["train-00000-of-00001.parquet"]
    folder = Path(snapshot_download("alice/demo", repo_type="space", endpoint=proxy.url, cache_dir=tmp_path))
    assert (folder / "app.py").read_bytes() == b"print('hi')\n"


def test_hfapi_metadata(make_proxy, fakehub: FakeHub) -> None:  # noqa: ANN001
    proxy = make_proxy(tree_page_size="2")
    api = HfApi(endpoint=proxy.url)
    files = _files(fakehub, "alice/files")
    info = api.model_info("alice/files", files_metadata=True)
    assert info.sha == fakehub.repos[("model", "alice/files")].branches["main"]
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes == {p: len(b) for p, b in files.items()}
    assert info.siblings and all(s.lfs is None or s.lfs.sha256 for s in info.siblings)
    assert sorted(api.list_repo_files("alice/files")) == sorted(files)
    refs = api.list_repo_refs("alice/files")
    assert [b.name for b in refs.branches] == ["main"]
    got = api.get_paths_info("alice/files", ["config.json", "sub dir", "nope"])
    assert sorted(type(e).__name__ for e in got) == ["RepoFile", "RepoFolder"]
    assert api.file_exists("alice/files", "config.json")
    assert not api.file_exists("alice/files", "nope.json")
    assert api.repo_exists("alice/files") and not api.repo_exists("alice/nope")
    assert api.repo_exists("alice/tiny-ds", repo_type="dataset")
    tree = list(api.list_repo_tree("alice/files", recursive=True, expand=True))
    assert all(getattr(e, "last_commit", None) for e in tree)
    commits = api.list_repo_commits("alice/files")
    assert commits and commits[0].commit_id == info.sha


def test_client_errors(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    proxy = make_proxy(token=None)  # no upstream token: the gated and private repos stay closed
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nope", "config.json", endpoint=proxy.url, cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/private", "config.json", endpoint=proxy.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/files", "config.json", revision="nobranch", endpoint=proxy.url, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/files", "nope.json", endpoint=proxy.url, cache_dir=tmp_path)
    with pytest.raises(GatedRepoError):
        hf_hub_download("alice/gated", "model.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    # Gated metadata is public, content is not.
    assert HfApi(endpoint=proxy.url).model_info("alice/gated").gated == "manual"


def test_gated_repo_with_upstream_token(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    data = _files(fakehub, "alice/gated")["model.safetensors"]
    local = hf_hub_download("alice/gated", "model.safetensors", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == data
    # The client never sent a token; hubproxy used its own upstream token, and never leaked it.
    assert fakehub.token not in proxy.log()


def test_hffilesystem_random_ranges(proxy: ProxyProcess, fakehub: FakeHub) -> None:
    data = _files(fakehub, "alice/files")["weights.bin"]
    fs = HfFileSystem(endpoint=proxy.url, skip_instance_cache=True)
    assert "alice/files/config.json" in fs.ls("alice/files", detail=False)
    assert fs.info("alice/files/weights.bin")["size"] == len(data)
    rng = random.Random(7)
    with fs.open("alice/files/weights.bin", "rb", block_size=1024) as f:
        for _ in range(25):
            start = rng.randrange(0, len(data))
            n = rng.randrange(1, 5000)
            f.seek(start)
            assert f.read(n) == data[start:start + n]
    assert fs.read_bytes("alice/files/sub dir/notes \u00e9.txt") == "caf\u00e9 notes\n".encode()
    assert sorted(fs.glob("alice/files/**/*.txt")) == [
        "alice/files/empty.txt", "alice/files/sub dir/deeper/a.txt", "alice/files/sub dir/notes \u00e9.txt"]


def test_hf_cli_download(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    env = client_env(proxy.url, tmp_path / "hf")
    hf = str(Path(sys.executable).with_name("hf"))
    out = tmp_path / "out"
    run_client("", env, args=[hf, "download", "alice/tiny-gpt2", "--local-dir", str(out)])
    assert {p: (out / p).read_bytes() for p in _files(fakehub, "alice/tiny-gpt2")} == _files(fakehub, "alice/tiny-gpt2")
    res = run_client("", env, args=[hf, "download", "alice/tiny-ds", "--repo-type", "dataset"])
    snapshot = Path(res.stdout.strip().splitlines()[-1].split("path:")[-1].strip())
    assert (snapshot / "README.md").read_bytes() == _files(fakehub, "alice/tiny-ds", "dataset")["README.md"]
    res = run_client("", env, args=[hf, "download", "alice/files", "config.json"])
    assert Path(res.stdout.strip().splitlines()[-1].split("path:")[-1].strip()).read_bytes() == (
        _files(fakehub, "alice/files")["config.json"])


def test_endpoint_with_path_prefix(make_proxy, fakehub: FakeHub, tmp_path: Path) -> None:  # noqa: ANN001
    """HF_ENDPOINT may carry a path prefix."""
    proxy = make_proxy(path_prefix="/hf", tree_page_size="2")
    endpoint = proxy.url + "/hf"
    files = _files(fakehub, "alice/files")
    local = hf_hub_download("alice/files", "weights.bin", endpoint=endpoint, cache_dir=tmp_path)
    assert Path(local).read_bytes() == files["weights.bin"]
    assert sorted(HfApi(endpoint=endpoint).list_repo_files("alice/files")) == sorted(files)
    with pytest.raises(HfHubHTTPError, match="served under /hf"):
        HfApi(endpoint=proxy.url).model_info("alice/files")  # outside the prefix: nothing is served


def test_revisions_with_slashes(proxy: ProxyProcess, fakehub: FakeHub, tmp_path: Path) -> None:
    """refs/pr/N and branch names with '/' arrive encoded as one segment (and refs/pr/N also literally)."""
    fakehub.add_commit("model", "alice/prs", {"f.txt": b"main"})
    fakehub.add_commit("model", "alice/prs", {"f.txt": b"pr one"}, branch="refs/pr/1")
    fakehub.add_commit("model", "alice/prs", {"f.txt": b"feature"}, branch="feat/x")
    got = hf_hub_download("alice/prs", "f.txt", revision="refs/pr/1", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(got).read_bytes() == b"pr one"
    got = hf_hub_download("alice/prs", "f.txt", revision="feat/x", endpoint=proxy.url, cache_dir=tmp_path)
    assert Path(got).read_bytes() == b"feature"
    assert HfApi(endpoint=proxy.url).model_info("alice/prs", revision="feat/x").sha == (
        fakehub.repos[("model", "alice/prs")].branches["feat/x"])
    status, _, body = request("GET", proxy.url + "/alice/prs/resolve/refs/pr/1/f.txt")
    assert status == 200 and body == b"pr one"
