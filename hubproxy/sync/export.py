"""``hubproxy sync export``: fetch repo revisions and write them as a bundle.

Metadata comes from the source (the configured upstream, or any server speaking the Hub
protocol, such as a hubproxy); blob bytes come from the local store when it already holds them,
else from the source. Every blob is hashed on the way in and written once, however many repos
share it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubproxy.cache.prefetch import selected
from hubproxy.config import Settings
from hubproxy.hub.errors import HubError
from hubproxy.hub.routing import REPO_TYPES, RESOLVE_PREFIX, validate_repo_id, validate_revision
from hubproxy.progress import Progress, human_bytes
from hubproxy.store import make_store
from hubproxy.store.base import BlobHasher, BlobStore, is_blob_key
from hubproxy.sync.bundle import CHUNK, BundleReader, BundleWriter
from hubproxy.sync.manifest import BundleError, FileEntry, Manifest, RepoEntry, load_private_key
from hubproxy.upstream.answers import api_path, from_upstream, tree_pages
from hubproxy.upstream.client import UpstreamClient, UpstreamUnavailable, iter_body


@dataclass(frozen=True)
class RepoSpec:
    """A repo to export: ``[TYPE:]ORG/NAME[@REVISION]``."""

    repo_type: str
    repo_id: str
    revision: str

    @property
    def label(self) -> str:
        return f"{self.repo_type} {self.repo_id}@{self.revision}"


def parse_spec(text: str, default_type: str = "model") -> RepoSpec:
    """``ORG/NAME[@REVISION]``, optionally prefixed ``dataset:``, ``space:`` or ``model:``."""
    text = text.strip()
    repo_type = default_type
    head, sep, rest = text.partition(":")
    if sep and head in REPO_TYPES.values():
        repo_type, text = head, rest
    repo_id, _, revision = text.partition("@")
    try:
        if repo_id.count("/") > 1:
            raise HubError(400, "BadRequest", "a repo id has at most one slash")
        validate_repo_id(repo_id.split("/"))
        if revision:
            validate_revision(revision)
    except HubError as exc:
        raise BundleError(f"{text!r}: {exc.message} (expected [TYPE:]ORG/NAME[@REVISION])") from None
    return RepoSpec(repo_type, repo_id, revision or "main")


def read_repos_file(path: Path, default_type: str) -> list[RepoSpec]:
    """One spec per line; blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BundleError(f"repos file {path}: {exc}") from None
    return [parse_spec(line.split("#", 1)[0], default_type) for line in lines if line.split("#", 1)[0].strip()]


@dataclass
class ExportSummary:
    repos: int
    files: int
    blobs_written: int
    blobs_in_base: int
    bytes_written: int
    seconds: float
    checksum: str
    signed_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _repo_error(label: str, status: int, headers: Any, body: bytes) -> BundleError:
    code = headers.get("X-Error-Code", "")
    message = headers.get("X-Error-Message", "")
    if not message:
        try:
            message = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            message = ""
    why = {401: "missing, private or gated (the source wants a token that may see it)",
           403: "gated: the source's token has not been granted access",
           404: "not found at the source"}.get(status, "the source refused it")
    return BundleError(f"{label}: {why} [{status} {code}] {message}".rstrip())


class Exporter:
    """Builds one bundle from a list of repo specs."""

    def __init__(self, settings: Settings, source: str | None, include: list[str], exclude: list[str],
                 progress_plain: bool = False) -> None:
        self.settings = dataclasses.replace(settings, upstream=source or settings.upstream, offline=False)
        self.include = include
        self.exclude = exclude
        self.progress_plain = progress_plain
        self.upstream = UpstreamClient(self.settings)
        self.store: BlobStore | None = None

    async def _repo(self, spec: RepoSpec) -> RepoEntry:
        try:
            resp = await self.upstream.fetch("GET", api_path(spec.repo_type, spec.repo_id, "revision", spec.revision),
                                             params={"blobs": "true"})
        except UpstreamUnavailable as exc:
            raise BundleError(f"{spec.label}: the source {self.settings.upstream_url} is unreachable "
                              f"({exc.detail})") from None
        if resp.status != 200:
            raise _repo_error(spec.label, resp.status, resp.headers, resp.body)
        info = from_upstream(resp).json()
        commit = info.get("sha")
        if not isinstance(commit, str) or len(commit) != 40:
            raise BundleError(f"{spec.label}: the source's repo info has no commit sha")
        try:
            entries = await tree_pages(self.upstream, api_path(spec.repo_type, spec.repo_id, "tree", commit),
                                       {"recursive": "true", "expand": "false"})
            refs_resp = await self.upstream.fetch("GET", api_path(spec.repo_type, spec.repo_id, "refs"))
        except UpstreamUnavailable as exc:
            raise BundleError(f"{spec.label}: the source became unreachable ({exc.detail})") from None
        except HubError as exc:
            raise BundleError(f"{spec.label}: the source refused its tree [{exc.status} {exc.code}] "
                              f"{exc.message}") from None
        if entries is None:
            raise BundleError(f"{spec.label}: the source has no tree at {commit}")
        files = []
        for e in entries:
            if e.get("type") != "file" or not selected(e["path"], self.include, self.exclude):
                continue
            lfs = e.get("lfs")
            blob = lfs["oid"] if lfs else e.get("oid")
            if not is_blob_key(blob):
                raise BundleError(f"{spec.label}: {e['path']} has no content hash in the source's tree")
            files.append(FileEntry(e["path"], blob, int(lfs["size"] if lfs else e["size"]), bool(lfs)))
        if not files:
            raise BundleError(f"{spec.label}: no file matches the include/exclude patterns")
        refs = from_upstream(refs_resp).json() if refs_resp.status == 200 else None
        commit_info = await self._commit_info(spec, commit)
        # Metadata of a gated repo is public; its files are not. Ask for one file now, before anything is written.
        try:
            probe = await self.upstream.head_file(_resolve_path(spec.repo_type, spec.repo_id, commit, files[0].path))
        except UpstreamUnavailable as exc:
            raise BundleError(f"{spec.label}: the source became unreachable ({exc.detail})") from None
        if probe.status >= 400:
            raise _repo_error(spec.label, probe.status, probe.headers, b"")
        return RepoEntry(spec.repo_type, spec.repo_id, spec.revision, commit, info, entries, refs, files,
                         commit_info)

    async def _commit_info(self, spec: RepoSpec, commit: str) -> dict[str, Any] | None:
        """The exported commit's title, message, author and date (a hosted repo imported elsewhere keeps them)."""
        try:
            resp = await self.upstream.fetch("GET", api_path(spec.repo_type, spec.repo_id, "commits", commit),
                                             params={"limit": "1"})
            first = from_upstream(resp).json()[0] if resp.status == 200 else None
        except (UpstreamUnavailable, ValueError, IndexError, KeyError, TypeError):
            return None
        if not isinstance(first, dict) or first.get("id") != commit:
            return None
        return {k: first.get(k) for k in ("title", "message", "authors", "date")}

    async def _copy_blob(self, writer: BundleWriter, key: str, size: int, where: tuple[RepoEntry, FileEntry],
                         progress: Progress) -> str:
        """Write one blob into the bundle; returns where it came from (store or source)."""
        staged = writer.staging_file(key)
        hasher = BlobHasher(key, size)
        written = 0
        origin = "source"
        with staged.open("wb") as out:
            body = None
            if self.store is not None and await asyncio.to_thread(self.store.stat, key) == size:
                body = await self.store.read(key, 0, size, CHUNK)
                origin = "store"
            if body is None:
                repo, entry = where
                path = _resolve_path(repo.repo_type, repo.repo_id, repo.commit, entry.path)
                try:
                    resp = await self.upstream.open_stream(path)
                except UpstreamUnavailable as exc:
                    raise BundleError(f"{repo.label}: {entry.path}: source unreachable ({exc.detail})") from None
                if resp.status != 200:
                    resp.release()
                    raise _repo_error(f"{repo.label}: {entry.path}", resp.status, resp.headers, b"")

                async def stream() -> Any:
                    try:
                        async for chunk in iter_body(resp):
                            yield chunk
                    finally:
                        resp.release()

                body = stream()
            async for chunk in body:
                out.write(chunk)
                hasher.update(chunk)
                written += len(chunk)
                progress.advance(len(chunk))
        if written != size or hasher.hexdigest() != key:
            staged.unlink()
            repo, entry = where
            raise BundleError(f"{repo.label}: {entry.path}: the {origin} gave {written} bytes that do not match "
                              f"its hash {key} and size {size}")
        writer.add_blob(key, staged)
        return origin

    async def run(self, specs: list[RepoSpec], out: Path, since: Path | None) -> ExportSummary:
        if not specs:
            raise BundleError("nothing to export: give --repo or --repos-file")
        base_checksum, in_base = None, set()
        if since is not None:
            base = _read_base(since)
            base_checksum, in_base = base.checksum, set(base.referenced_blobs())
        signing_key = load_private_key(self.settings.sync_signing_key) if self.settings.sync_signing_key else None
        await self.upstream.start()
        if self.settings.store != "local" or (self.settings.data_dir / "blobs").is_dir():
            self.store = make_store(self.settings)  # reuse what the local cache holds
        try:
            repos = [await self._repo(spec) for spec in dict.fromkeys(specs)]
            wanted: dict[str, tuple[RepoEntry, FileEntry]] = {}
            for repo in repos:
                for f in repo.files:
                    wanted.setdefault(f.blob, (repo, f))
            carried = {k: w[1].size for k, w in wanted.items() if k not in in_base}
            writer = BundleWriter(out)
            progress = Progress(f"export {out.name}", sum(carried.values()), force_plain=self.progress_plain)
            try:
                for key, size in carried.items():
                    origin = await self._copy_blob(writer, key, size, wanted[key], progress)
                    repo, entry = wanted[key]
                    progress.note(f"{repo.repo_id}: {entry.path} ({human_bytes(size)}, from the {origin})")
                manifest = Manifest(repos, carried, datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                    self.settings.upstream_url, base_checksum)
                manifest.seal(signing_key)
                writer.close(manifest)
            except BaseException:
                writer.abort()
                progress.close()
                raise
            seconds = progress.close()
        finally:
            await self.upstream.close()
        assert manifest.checksum is not None
        return ExportSummary(len(repos), sum(len(r.files) for r in repos), len(carried),
                             len(wanted) - len(carried), sum(carried.values()), seconds, manifest.checksum,
                             manifest.signature["key_id"] if manifest.signature else None)


def _resolve_path(repo_type: str, repo_id: str, commit: str, path: str) -> str:
    return f"/{RESOLVE_PREFIX[repo_type]}{repo_id}/resolve/{commit}/{quote(path)}"


def _read_base(path: Path) -> Manifest:
    """``--since``: a previous bundle, or its manifest.json on its own."""
    if path.is_file() and path.suffix == ".json":
        try:
            return Manifest.from_bytes(path.read_bytes())
        except OSError as exc:
            raise BundleError(f"--since {path}: {exc}") from None
    with BundleReader(path) as reader:
        return reader.manifest()
