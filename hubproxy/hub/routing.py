"""URL grammar of the Hub: repo types, one- and two-segment repo ids, encoded revisions and paths.

Parsing works on the raw (still percent-encoded) path so that ``refs%2Fpr%2F1`` stays one
segment. Everything returned here is decoded and validated; nothing that could escape a
directory or smuggle a second path to the upstream gets through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, unquote

from hubproxy.hub.errors import HubError, bad_request

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: Resolve-URL prefix per repo type (models have none).
RESOLVE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
#: Sub-route keywords after ``/api/{T}/a/`` that make ``a`` a one-segment repo id (``docs/protocol.md``, "URLs").
SUBROUTES = {
    "revision", "tree", "paths-info", "refs", "commits", "preupload", "commit", "branch", "tag",
    "xet-read-token", "xet-write-token", "auth-check", "lfs-files", "safetensors-metadata",
    "super-squash", "discussions", "settings", "likers", "treesize",
}
#: Sub-routes that change a repo (or refuse to: pull requests) and ``auth-check``: hosted repos only.
WRITE_SUBROUTES = {"preupload", "commit", "branch", "tag", "settings", "super-squash", "discussions", "auth-check"}

MAX_PATH_LENGTH = 1024
MAX_SEGMENT_LENGTH = 255
MAX_REVISION_LENGTH = 255
_REPO_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,96}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RouteKind(str, Enum):
    """What a request is: the dispatch key, and the ``route`` label of its metrics (never a repo id)."""

    RESOLVE = "resolve"
    INFO = "info"
    TREE = "tree"
    PATHS_INFO = "paths-info"
    REFS = "refs"
    COMMITS = "commits"
    XET_TOKEN = "xet-token"
    UNSUPPORTED = "api-other"
    LISTING = "listing"
    WHOAMI = "whoami"
    HARNESSES = "agent-harnesses"
    TELEMETRY = "telemetry"
    HEALTH = "health"
    READY = "ready"
    METRICS = "metrics"
    ADMIN = "admin"
    RELAY = "relay"
    REPOS = "repos"
    VALIDATE_YAML = "validate-yaml"
    WRITE = "write"
    LFS_BATCH = "lfs-batch"
    LFS_TRANSFER = "lfs-transfer"
    WEBHOOKS = "webhooks"
    XET_CAS = "xet-cas"
    OTHER = "other"


@dataclass(frozen=True)
class Route:
    """A parsed request target."""

    kind: RouteKind
    repo_type: str = "model"
    repo_id: str = ""
    revision: str | None = None
    path: str = ""


def is_commit(rev: str | None) -> bool:
    """A full 40-hex commit id (immutable)."""
    return bool(rev) and bool(_COMMIT.fullmatch(rev or ""))


def parse_bool(value: str | None, default: bool = False) -> bool:
    """Query booleans: ``true``/``True``/``1`` and ``false``/``False``/``0``."""
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise bad_request(f"Invalid boolean query value: {value!r}")


def split_raw_path(raw_path: bytes) -> list[str]:
    """Split the raw path on ``/``; segments stay percent-encoded."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise bad_request("Request path must be percent-encoded ASCII") from None
    if "?" in text:
        text = text.split("?", 1)[0]
    return text.split("/")[1:] if text.startswith("/") else text.split("/")


def _decode(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise bad_request("Path segment is not valid UTF-8 once decoded") from None


def _check_text(text: str, what: str) -> None:
    if _CONTROL.search(text):
        raise bad_request(f"{what} contains control characters")
    if "\\" in text:
        raise bad_request(f"{what} contains a backslash")


def validate_repo_id(segments: list[str]) -> str:
    """Decode and validate one or two repo id segments (``docs/protocol.md``, "URLs")."""
    parts = [_decode(s) for s in segments]
    for part in parts:
        if not _REPO_SEGMENT.fullmatch(part) or part in (".", "..") or "--" in part or ".." in part:
            raise HubError(400, "BadRequest", f"Invalid repo id segment: {part[:100]!r}")
    repo_id = "/".join(parts)
    if repo_id.endswith(".git"):
        raise bad_request(f"Invalid repo id: {repo_id!r}")
    return repo_id


def validate_revision(rev: str) -> str:
    """Validate a decoded revision: branch, tag, commit or ``refs/...``."""
    if not rev:
        raise bad_request("Empty revision")
    if len(rev) > MAX_REVISION_LENGTH:
        raise bad_request("Revision is too long")
    _check_text(rev, "Revision")
    parts = rev.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad_request(f"Invalid revision: {rev[:100]!r}")
    return rev


def validate_repo_path(parts: list[str], what: str = "Path") -> str:
    """Validate decoded path parts inside a repo; returns the joined relative path."""
    for part in parts:
        if part in ("", ".", ".."):
            raise bad_request(f"{what} has an empty, '.' or '..' segment")
        if "/" in part:
            raise bad_request(f"{what} contains an encoded slash")
        _check_text(part, what)
        # A second round of decoding must not reveal a traversal either (%252e%252e).
        twice = unquote(part)
        if twice in (".", "..") or "/" in twice or "\\" in twice:
            raise bad_request(f"{what} contains an encoded traversal")
        if len(part.encode()) > MAX_SEGMENT_LENGTH:
            raise bad_request(f"{what} has a segment longer than {MAX_SEGMENT_LENGTH} bytes")
    path = "/".join(parts)
    if len(path.encode()) > MAX_PATH_LENGTH:
        raise bad_request(f"{what} is longer than {MAX_PATH_LENGTH} bytes")
    return path


def _take_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Take the revision from the front of ``segments`` (one encoded segment, or literal refs/x/y)."""
    if not segments or not segments[0]:
        raise bad_request("Missing revision")
    if segments[0] == "refs" and len(segments) >= 3 and segments[1] in ("pr", "convert"):
        rev = "/".join(_decode(s) for s in segments[:3])
        rest = segments[3:]
    else:
        rev = _decode(segments[0])
        rest = segments[1:]
    return validate_revision(rev), rest


def parse_resolve(segments: list[str]) -> Route | None:
    """``/{P}{repo}/resolve/{rev}/{path}`` or None if this is not a resolve URL."""
    repo_type = "model"
    if segments and segments[0] in ("datasets", "spaces"):
        repo_type = REPO_TYPES[segments[0]]
        segments = segments[1:]
    for idx in (1, 2):
        if len(segments) > idx and segments[idx] == "resolve":
            repo_id = validate_repo_id(segments[:idx])
            rev, rest = _take_revision(segments[idx + 1 :])
            if not rest:
                raise bad_request("Missing file path")
            path = validate_repo_path([_decode(s) for s in rest])
            return Route(RouteKind.RESOLVE, repo_type, repo_id, rev, path)
    return None


def resolve_url_path(repo_type: str, repo_id: str, revision: str, path: str) -> str:
    """The resolve path of a file, as the Hub's URL grammar spells it (revision as one encoded segment)."""
    return f"/{RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def parse_api(segments: list[str]) -> Route:
    """Parse ``/api/{T}/{repo}[/{sub}/...]`` (segments start after ``api``)."""
    if not segments or segments[0] not in REPO_TYPES or len(segments) < 2:
        raise HubError(404, None, "Not found")
    repo_type = REPO_TYPES[segments[0]]
    rest = segments[1:]
    if len(rest) >= 2 and rest[1] not in SUBROUTES:
        id_segments, rest = rest[:2], rest[2:]
    else:
        id_segments, rest = rest[:1], rest[1:]
    if rest and rest[-1] == "" and len(rest) == 1:
        rest = []
    repo_id = validate_repo_id(id_segments)
    if not rest:
        return Route(RouteKind.INFO, repo_type, repo_id, None)
    sub, args = rest[0], rest[1:]
    if sub == "revision":
        rev, extra = _take_revision(args)
        if extra and extra != [""]:
            raise HubError(404, None, "Not found")
        return Route(RouteKind.INFO, repo_type, repo_id, rev)
    if sub == "tree":
        rev, extra = _take_revision(args)
        parts: list[str] = []
        for seg in extra:
            parts.extend(_decode(seg).split("/"))  # one %2F-encoded segment or literal slashes
        if parts and parts[-1] == "":
            parts = parts[:-1]
        path = validate_repo_path(parts) if parts else ""
        return Route(RouteKind.TREE, repo_type, repo_id, rev, path)
    if sub == "paths-info":
        rev, _ = _take_revision(args)
        return Route(RouteKind.PATHS_INFO, repo_type, repo_id, rev)
    if sub == "refs" and not args:
        return Route(RouteKind.REFS, repo_type, repo_id)
    if sub == "commits":
        rev, _ = _take_revision(args)
        return Route(RouteKind.COMMITS, repo_type, repo_id, rev)
    if sub in ("xet-read-token", "xet-write-token"):
        rev = _decode(args[0]) if args and args[0] else None  # a branch, a commit, or "None" (pull requests)
        return Route(RouteKind.XET_TOKEN, repo_type, repo_id, rev, sub)
    if sub in WRITE_SUBROUTES:
        rev = _take_revision(args)[0] if args and args != [""] else None
        return Route(RouteKind.WRITE, repo_type, repo_id, rev, sub)
    return Route(RouteKind.UNSUPPORTED, repo_type, repo_id, path=sub)


def parse_lfs_batch(segments: list[str]) -> Route | None:
    """``/{P}{repo}.git/info/lfs/objects/batch`` (git LFS's batch endpoint), or None."""
    if len(segments) < 6 or segments[-4:] != ["info", "lfs", "objects", "batch"]:
        return None
    head = segments[:-4]
    repo_type = "model"
    if head[0] in ("datasets", "spaces"):
        repo_type, head = REPO_TYPES[head[0]], head[1:]
    if len(head) != 2 or not head[1].endswith(".git"):
        return None
    return Route(RouteKind.LFS_BATCH, repo_type, validate_repo_id([head[0], head[1][:-4]]))


def classify(segments: list[str]) -> Route:
    """The route of a Hub request (after any ``path_prefix``): special API routes, listings, a repo's API
    routes or a file. Malformed repo ids, revisions and paths raise a 400 here, before anything else runs."""
    if segments and segments[0] == "api":
        rest = segments[1:]
        if rest == ["whoami-v2"]:
            return Route(RouteKind.WHOAMI)
        if rest == ["agent-harnesses"]:
            return Route(RouteKind.HARNESSES)
        if rest and rest[0] == "telemetry":
            return Route(RouteKind.TELEMETRY)
        if rest and rest[0] in REPO_TYPES and rest[1:] in ([], [""]):
            return Route(RouteKind.LISTING, REPO_TYPES[rest[0]])
        if len(rest) == 2 and rest[0] == "repos":
            return Route(RouteKind.REPOS, path=rest[1])
        if rest == ["validate-yaml"]:
            return Route(RouteKind.VALIDATE_YAML)
        if rest[:2] == ["settings", "webhooks"]:
            return Route(RouteKind.WEBHOOKS, path="/".join(rest[2:]))
        return parse_api(rest)
    if segments[:2] == ["_hubproxy", "lfs"]:
        return Route(RouteKind.LFS_TRANSFER)
    if segments[:2] == ["_hubproxy", "xet"]:
        return Route(RouteKind.XET_CAS)
    route = parse_lfs_batch(segments) or parse_resolve(segments)
    if route is None:
        raise HubError(404, None, "Not found")
    return route
