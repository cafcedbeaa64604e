"""Multipart LFS uploads (``docs/protocol.md``, "Writes"): large objects arrive in numbered parts.

The batch answer lists a signed URL per part (``header``: ``chunk_size`` and ``"1"``, ``"2"``, ...) and
the upload href becomes the completion URL. Each part is kept on disk as it arrives (a retried part
replaces itself) and answered with an ``ETag``; completion feeds the parts in order through the same
verifying ingest as a single upload, so an object that does not hash to its oid is refused whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from starlette.requests import Request

from hubproxy.cache.ingest import IngestError, begin_ingest
from hubproxy.cache.spool import Spool
from hubproxy.hub.errors import HubError, bad_request
from hubproxy.limits import BodyTooLarge, read_body, receive_into
from hubproxy.repos.model import RepoRef
from hubproxy.store.base import BlobStore
from hubproxy.threads import run_in

READ = 8 * 1024 * 1024


def part_count(size: int, chunk: int) -> int:
    return max(1, -(-size // chunk))


class Multipart:
    """Parts on disk under ``root``, one folder per (repo, object, uploader)."""

    def __init__(self, root: str, engine: Engine, store: BlobStore, spool: Spool, max_age: float) -> None:
        self.root = Path(root)
        self.engine = engine
        self.store = store
        self.spool = spool
        self.root.mkdir(parents=True, exist_ok=True)
        for old in self.root.iterdir():  # parts of uploads nobody completed within their links' lifetime
            if time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)

    def folder(self, repo: RepoRef, oid: str, by: str) -> Path:
        return self.root / hashlib.sha256(f"{repo.type}|{repo.id}|{oid}|{by}".encode()).hexdigest()[:32]

    async def put_part(self, request: Request, folder: Path, number: int, length: int) -> str:
        """Keep one part (exactly ``length`` bytes); its ETag."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{number}.tmp"
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            def write(data: bytes) -> None:
                digest.update(data)
                out.write(data)

            try:
                written = await receive_into(request, write, length)
            except BodyTooLarge:
                written = length + 1
        if written != length:
            tmp.unlink(missing_ok=True)
            raise HubError(400, None, f"part {number} is not {length} bytes long")
        os.replace(tmp, folder / str(number))
        return f'"{digest.hexdigest()[:32]}"'

    async def complete(self, request: Request, folder: Path, oid: str, size: int, chunk: int) -> None:
        """Assemble the parts in order into the object, verified; the parts are removed either way."""
        try:
            body = json.loads(await read_body(request, 1024 * 1024) or b"{}")
        except (BodyTooLarge, ValueError):
            raise bad_request("the completion body is not a JSON object of parts") from None
        count = part_count(size, chunk)
        listed = sorted(int(p.get("partNumber", 0)) for p in body.get("parts", []) if isinstance(p, dict))
        if body.get("oid") != oid or listed != list(range(1, count + 1)):
            raise bad_request(f"completion must list parts 1 to {count} of {oid}")
        missing = [n for n in listed if not (folder / str(n)).is_file()]
        if missing:
            raise bad_request(f"parts {missing[:10]} were not uploaded")
        try:
            await run_in(self.store.pool, self._assemble, folder, oid, size, count)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _assemble(self, folder: Path, oid: str, size: int, count: int) -> None:
        ingest = begin_ingest(self.store, self.spool, self.engine, oid, size)
        digest, seen = hashlib.sha256(), 0
        try:
            for n in range(1, count + 1):
                with open(folder / str(n), "rb") as part:
                    while block := part.read(READ):
                        seen += len(block)
                        if ingest is not None:
                            ingest.write(block)
                        else:
                            digest.update(block)
            if ingest is not None:
                ingest.finish()
            elif seen != size or digest.hexdigest() != oid:
                raise IngestError(f"the parts are not LFS object {oid}")
        except IngestError as exc:
            if ingest is not None:
                ingest.abort()
            raise HubError(400, None, f"Upload refused, nothing was stored: {exc}") from None
