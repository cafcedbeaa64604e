"""``hubproxy sync import`` and ``verify``: check a bundle, load its blobs and metadata into hubproxy.

Import is two phases. First every blob the bundle carries is streamed into the store, hashed on
the way and committed only when it matches (blobs already stored are skipped, so an interrupted
import is simply run again). Only when every blob the repos need is stored does one database
transaction add the files, refs, metadata answers and pins that make the repos visible: a
damaged bundle never makes anything servable.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from hubproxy.cache import records
from hubproxy.cache.ingest import IngestError, begin_ingest
from hubproxy.cache.spool import Spool
from hubproxy.config import Settings
from hubproxy.db import make_engine
from hubproxy.hosted.imports import hosted_namespaces, publish
from hubproxy.hub.routing import is_commit
from hubproxy.progress import Progress, human_bytes
from hubproxy.repos import rows
from hubproxy.repos.model import REF_KINDS, entry_of
from hubproxy.repos.rows import Ref
from hubproxy.store import make_store
from hubproxy.store.base import BlobStore
from hubproxy.sync.bundle import BundleReader
from hubproxy.sync.manifest import BundleError, Manifest, blob_member, load_public_keys

#: Seconds to wait for another process's fill of a blob this import also carries.
FOLLOW_TIMEOUT = 600.0


@dataclass
class SyncSummary:
    """What a verify or an import found and did."""

    bundle: str
    checksum: str
    signed_by: str | None
    repos: list[str]
    files: int
    blobs: int
    blobs_stored: int
    blobs_skipped: int
    bytes: int
    seconds: float
    from_base: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def open_checked(path: Path, settings: Settings) -> tuple[BundleReader, Manifest, str | None]:
    """Open a bundle, check its manifest's checksum and signature; the caller closes the reader."""
    reader = BundleReader(path)
    try:
        manifest = reader.manifest()
        signer = manifest.check_signature(load_public_keys(settings.sync_trusted_keys))
    except BaseException:
        reader.close()
        raise
    return reader, manifest, signer


def verify(path: Path, settings: Settings, progress_plain: bool = False) -> SyncSummary:
    """Check a bundle without importing it: manifest, signature, every carried blob's size and hash."""
    reader, manifest, signer = open_checked(path, settings)
    with reader:
        _check_sizes(manifest)
        progress = Progress(f"verify {path.name}", sum(manifest.blobs.values()), force_plain=progress_plain)
        try:
            for key, size in manifest.blobs.items():
                reader.read_blob(key, size, progress=progress.advance)
        finally:
            seconds = progress.close()
    from_base = len(set(manifest.referenced_blobs()) - set(manifest.blobs))
    return SyncSummary(str(path), manifest.checksum or "", signer, [r.label for r in manifest.repos],
                       sum(len(r.files) for r in manifest.repos), len(manifest.blobs), 0, 0,
                       sum(manifest.blobs.values()), seconds, from_base)


def _check_sizes(manifest: Manifest) -> None:
    for repo in manifest.repos:
        for f in repo.files:
            carried = manifest.blobs.get(f.blob)
            if carried is not None and carried != f.size:
                raise BundleError(f"manifest.json: {repo.label} {f.path} says {f.size} bytes but its blob "
                                  f"{f.blob} is listed with {carried}")


class Importer:
    """Loads bundles into the store and database the settings name."""

    def __init__(self, settings: Settings, pin: bool = True, progress_plain: bool = False) -> None:
        self.settings = settings
        self.pin = pin
        self.progress_plain = progress_plain

    def run(self, path: Path) -> SyncSummary:
        reader, manifest, signer = open_checked(path, self.settings)
        with reader:
            _check_sizes(manifest)
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            engine = make_engine(self.settings.db_url)
            store = make_store(self.settings)
            try:
                missing = [(r, f) for r in manifest.repos for f in r.files
                           if f.blob not in manifest.blobs and store.stat(f.blob) is None]
                if missing:
                    repo, f = missing[0]
                    raise BundleError(
                        f"{path}: an incremental bundle (on top of {manifest.base}); {len(missing)} file(s) need "
                        f"blobs from its base that this hubproxy does not have, e.g. {repo.label} {f.path} "
                        f"({f.blob}): import the base bundle first")
                stored, skipped, seconds = self._load_blobs(reader, manifest, store, engine, path)
                self._publish(manifest, engine)
            finally:
                engine.dispose()
        return SyncSummary(str(path), manifest.checksum or "", signer, [r.label for r in manifest.repos],
                           sum(len(r.files) for r in manifest.repos), len(manifest.blobs), stored, skipped,
                           sum(manifest.blobs.values()), seconds,
                           len(set(manifest.referenced_blobs()) - set(manifest.blobs)))

    def _load_blobs(self, reader: BundleReader, manifest: Manifest, store: BlobStore, engine: Engine,
                    path: Path) -> tuple[int, int, float]:
        """Phase one: every carried blob verified into the store. Returns (stored, skipped, seconds)."""
        progress = Progress(f"import {path.name}", sum(manifest.blobs.values()), force_plain=self.progress_plain)
        spool = Spool(self.settings.data_dir)
        stored = skipped = 0
        names = {f.blob: f"{r.repo_id}: {f.path}" for r in manifest.repos for f in r.files}
        try:
            for key, size in manifest.blobs.items():
                try:
                    ingest = begin_ingest(store, spool, engine, key, size, FOLLOW_TIMEOUT)
                except IngestError as exc:
                    raise BundleError(str(exc)) from None
                if ingest is None:  # stored already (or by a hubproxy filling it meanwhile)
                    skipped += 1
                    progress.advance(size)
                    continue
                try:
                    reader.read_blob(key, size, sink=ingest.write, progress=progress.advance)
                    ingest.finish()
                except IngestError as exc:
                    raise BundleError(f"{path}: {blob_member(key)}: {exc}") from None
                except BaseException:
                    ingest.abort()
                    raise
                stored += 1
                progress.note(f"stored {names.get(key, key)} ({human_bytes(size)})")
        finally:
            seconds = progress.close()
        return stored, skipped, seconds

    def _publish(self, manifest: Manifest, engine: Engine) -> None:
        """Phase two, one transaction: listings, repo info, refs and pins become visible together.

        Files the export left out (``--include``/``--exclude``) are recorded as such: while the upstream
        cannot be asked they are missing, as an optional file a client probes for would be.
        """
        now = time.time()
        with engine.begin() as conn:
            hosted = hosted_namespaces(conn, self.settings.personal_namespaces)
            for repo in manifest.repos:
                t, rid, commit = repo.repo_type, repo.repo_id, repo.commit
                carried = {f.path for f in repo.files}
                if "/" in rid and rid.split("/")[0].lower() in hosted:
                    if left_out(repo.tree, carried):
                        raise BundleError(f"{repo.label}: {rid.split('/')[0]} is a hosted namespace here, and a "
                                          "hosted repo is imported whole: export it without --include/--exclude")
                    publish(conn, repo, self.settings.hosted_default_visibility)
                    continue
                info = dict(repo.info)
                if isinstance(info.get("siblings"), list):
                    info["siblings"] = [x for x in info["siblings"] if not isinstance(x, dict)
                                        or x.get("rfilename") in carried]
                revision_refs = []
                if not is_commit(repo.revision):
                    revision_refs.append(Ref(repo.revision, commit, "seen", now))
                if repo.revision == repo.info.get("defaultBranch", "main"):
                    revision_refs.append(Ref("", commit, "default", now))
                rows.import_rows(conn, t, rid, commit, json.dumps(info, separators=(",", ":")),
                                 [entry_of(e) for e in repo.tree if isinstance(e, dict) and "path" in e],
                                 left_out(repo.tree, carried), revision_refs)
                if repo.refs is not None:
                    listed = [Ref(r["name"], r["targetCommit"], kind, now) for group, kind in REF_KINDS.items()
                              for r in repo.refs.get(group) or [] if isinstance(r, dict) and r.get("name")
                              and is_commit(r.get("targetCommit"))]
                    rows.replace_listed_refs(conn, t, rid, listed, now)
                if self.pin:
                    records.pin(conn, t, rid, commit, repo.revision)


def left_out(tree: list[dict[str, Any]], carried: set[str]) -> list[str]:
    """Paths of files the listing has and the bundle does not carry."""
    return [e["path"] for e in tree if e.get("type") == "file" and e.get("path") not in carried]
