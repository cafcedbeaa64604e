"""Request targets: which route a path is, what its repo, revision and path are, and what is refused."""

from __future__ import annotations

import pytest

from hubproxy.hub.errors import HubError
from hubproxy.hub.routing import Route, RouteKind, classify, parse_bool, resolve_url_path, split_raw_path

COMMIT = "a" * 40


def route(raw: str) -> Route:
    return classify(split_raw_path(raw.encode()))


@pytest.mark.parametrize(("raw", "expected"), [
    ("/gpt2/resolve/main/config.json", Route(RouteKind.RESOLVE, "model", "gpt2", "main", "config.json")),
    ("/alice/m/resolve/main/sub%20dir/a%C3%A9.txt", Route(RouteKind.RESOLVE, "model", "alice/m", "main", "sub dir/aé.txt")),
    ("/datasets/alice/d/resolve/v1.0/data/x.parquet", Route(RouteKind.RESOLVE, "dataset", "alice/d", "v1.0", "data/x.parquet")),
    ("/spaces/alice/s/resolve/main/app.py", Route(RouteKind.RESOLVE, "space", "alice/s", "main", "app.py")),
    ("/alice/m/resolve/refs%2Fpr%2F3/w.bin", Route(RouteKind.RESOLVE, "model", "alice/m", "refs/pr/3", "w.bin")),
    ("/alice/m/resolve/refs/pr/3/w.bin", Route(RouteKind.RESOLVE, "model", "alice/m", "refs/pr/3", "w.bin")),
    ("/alice/m/resolve/refs/convert/parquet/x", Route(RouteKind.RESOLVE, "model", "alice/m", "refs/convert/parquet", "x")),
    ("/api/models/alice/m", Route(RouteKind.INFO, "model", "alice/m", None)),
    ("/api/models/gpt2/revision/" + COMMIT, Route(RouteKind.INFO, "model", "gpt2", COMMIT)),
    ("/api/datasets/alice/d/tree/main/a%2Fb", Route(RouteKind.TREE, "dataset", "alice/d", "main", "a/b")),
    ("/api/datasets/alice/d/tree/main/a/b/", Route(RouteKind.TREE, "dataset", "alice/d", "main", "a/b")),
    ("/api/models/alice/m/tree/main", Route(RouteKind.TREE, "model", "alice/m", "main", "")),
    ("/api/models/alice/m/paths-info/main", Route(RouteKind.PATHS_INFO, "model", "alice/m", "main")),
    ("/api/models/alice/m/refs", Route(RouteKind.REFS, "model", "alice/m")),
    ("/api/models/alice/m/commits/main", Route(RouteKind.COMMITS, "model", "alice/m", "main")),
    ("/api/models/alice/m/xet-read-token/main", Route(RouteKind.XET_TOKEN, "model", "alice/m", "main", "xet-read-token")),
    ("/api/models/alice/m/discussions", Route(RouteKind.WRITE, "model", "alice/m", path="discussions")),
    ("/api/models/alice/m/likers", Route(RouteKind.UNSUPPORTED, "model", "alice/m", path="likers")),
    ("/api/models/alice/m/commit/feat%2Fx", Route(RouteKind.WRITE, "model", "alice/m", "feat/x", "commit")),
    ("/api/repos/create", Route(RouteKind.REPOS, path="create")),
    ("/api/validate-yaml", Route(RouteKind.VALIDATE_YAML)),
    ("/alice/m.git/info/lfs/objects/batch", Route(RouteKind.LFS_BATCH, "model", "alice/m")),
    ("/datasets/acme/d.git/info/lfs/objects/batch", Route(RouteKind.LFS_BATCH, "dataset", "acme/d")),
    ("/_hubproxy/lfs/upload/model/a/b/x/1", Route(RouteKind.LFS_TRANSFER)),
    ("/api/models", Route(RouteKind.LISTING, "model")),
    ("/api/datasets/", Route(RouteKind.LISTING, "dataset")),
    ("/api/whoami-v2", Route(RouteKind.WHOAMI)),
    ("/api/telemetry/hf_hub_download", Route(RouteKind.TELEMETRY)),
    ("/api/models/alice/m?blobs=true", Route(RouteKind.INFO, "model", "alice/m", None)),
])
def test_routes(raw: str, expected: Route) -> None:
    assert route(raw) == expected


@pytest.mark.parametrize(("raw", "status"), [
    ("/alice/m/resolve/main/../x", 400), ("/alice/m/resolve/main/%2e%2e/x", 400), ("/alice/m/resolve/main//x", 400),
    ("/alice/m/resolve/main/a%00b", 400), ("/alice/m/resolve/main/a%0Ab", 400), ("/alice/m/resolve/main/a%5Cb", 400),
    ("/alice/m/resolve/main/%ff", 400), ("/alice/m/resolve/main", 400), ("/al..ice/m/resolve/main/x", 400),
    ("/alice/m/resolve/main/" + "x" * 300, 400), ("/a/b/c/d", 404), ("/api/unknown/x", 404),
    ("/api/models/alice/m/revision/main/extra", 404), ("/alice/m\u00e9/resolve/main/x", 400),
])
def test_refused_targets(raw: str, status: int) -> None:
    with pytest.raises(HubError) as caught:
        classify(split_raw_path(raw.encode("utf-8")))
    assert caught.value.status == status


def test_resolve_url_path_round_trips() -> None:
    for repo_type, repo_id, rev, path in (("model", "gpt2", "main", "config.json"),
                                          ("dataset", "alice/d", "refs/pr/1", "sub dir/é.txt"),
                                          ("space", "alice/s", COMMIT, "a#b?.py")):
        again = route(resolve_url_path(repo_type, repo_id, rev, path))
        assert (again.repo_type, again.repo_id, again.revision, again.path) == (repo_type, repo_id, rev, path)


@pytest.mark.parametrize(("text", "value"), [("true", True), ("True", True), ("1", True), ("false", False),
                                             ("False", False), ("0", False), (None, False)])
def test_query_booleans(text: str | None, value: bool) -> None:
    assert parse_bool(text) is value


def test_other_query_booleans_are_refused() -> None:
    with pytest.raises(HubError):
        parse_bool("maybe")
