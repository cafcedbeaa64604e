"""huggingface_hub 0.36 (the last requests-based release, with hf_xet installed) pushing to hosted repos.

It negotiates the transfer: hubproxy's LFS batch answers ``transfer: basic``, so large files go over LFS with
the signed hrefs, never Xet.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.clients import client_python
from tests.helpers import AdminClient, admin_json, client_env, run_client
from tests.test_hosted import _folder

PUSH_036 = r"""
import filecmp, json, sys
from huggingface_hub import HfApi, login, snapshot_download
from huggingface_hub.utils import HfHubHTTPError
login(token=sys.argv[2])  # needs auth.accessToken.role and displayName from whoami
api, F, out = HfApi(), sys.argv[1], {}
out["repo"] = api.create_repo("alice/old", private=True).repo_id
ci = api.upload_folder(folder_path=F, repo_id="alice/old")
path = snapshot_download("alice/old", revision=ci.oid)
names = ["README.md", "config.json", "model.safetensors", "sub/notes é.txt", "empty.txt"]
out["same"] = filecmp.cmpfiles(F, path, names, shallow=False)[0] == names
out["noop"] = api.upload_folder(folder_path=F, repo_id="alice/old").oid == ci.oid
siblings = {s.rfilename: s for s in api.model_info("alice/old", files_metadata=True).siblings}
out["lfs"] = [siblings["model.safetensors"].lfs is not None, siblings["config.json"].lfs is None]
out["private"] = api.model_info("alice/old").private
api.update_repo_settings("alice/old", private=False)
out["public"] = api.model_info("alice/old").private
try:
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/old", parent_commit="0" * 40)
except HfHubHTTPError as e:
    out["stale"] = e.response.status_code
print(json.dumps(out))
"""


def test_huggingface_hub_036_pushes_over_lfs(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    python = client_python("huggingface_hub==0.36.2")
    proxy = make_proxy(anonymous_access="off", token_cache_seconds="0")
    rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap")["token"])
    rest.call("POST", "/users", {"name": "alice"})
    token = rest.call("POST", "/tokens", {"user": "alice", "role": "write"})["token"]
    env = client_env(proxy.url, tmp_path / "hf")
    result = run_client("", env, args=[str(python), "-c", PUSH_036, str(_folder(tmp_path)), token], timeout=400)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"repo": "alice/old", "same": True, "noop": True, "lfs": [True, True], "private": True,
                   "public": False, "stale": 412}
    # 0.36's upload-large-folder: workers preupload, upload over LFS and commit in chunks.
    folder = tmp_path / "large"
    for i in range(30):
        (folder / f"part{i % 3}").mkdir(parents=True, exist_ok=True)
        (folder / f"part{i % 3}" / f"f{i}.bin").write_bytes(bytes([i]) * (20_000 + i))
    run_client("", {**env, "HF_TOKEN": token}, timeout=400, args=[
        str(Path(python).parent / "hf"), "upload-large-folder", "alice/large", str(folder), "--repo-type", "model",
        "--num-workers", "2", "--no-bars", "--no-report"])
    code = ("import json; from huggingface_hub import HfApi; api = HfApi(); "
            "print(json.dumps([len(api.list_repo_files('alice/large')), api.list_repo_commits('alice/large')[0].title]))")
    files, title = json.loads(run_client("", {**env, "HF_TOKEN": token}, args=[str(python), "-c", code]).stdout)
    assert files == 31 and title == "Add files using upload-large-folder tool"
