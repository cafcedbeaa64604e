"""Giving large hosted files that arrived without Xet (over LFS, or inline) a Xet form, in the background.

huggingface_hub refuses plain-HTTP downloads above 50 GB; through Xet it downloads files of any size. So
hosted LFS files of at least ``xet_convert_min_bytes`` are uploaded to hubproxy's own CAS with the real
``hf_xet`` client (the same chunking, compression and hashes as any client's upload), through the same
checked routes; from then on they are announced with their Xet hash. A loop looks for such files after
every commit and at intervals (a conversion a crash interrupted is simply done again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time

from sqlalchemy import and_, exists, select
from sqlalchemy.engine import Engine

from hubproxy.background import wake_or_timeout
from hubproxy.db.models import entries, repos, xet_files
from hubproxy.store.base import BlobStore
from hubproxy.xet.tokens import XetGrant, issue

log = logging.getLogger(__name__)
TOKEN_SECONDS = 6 * 3600


class XetConverter:
    """Converts hosted LFS files of at least ``min_bytes`` to Xet form through the CAS at ``cas_url``."""

    def __init__(self, engine: Engine, store: BlobStore, secret: bytes, cas_url: str, min_bytes: int, tmp_dir: str,
                 interval: float = 60.0) -> None:
        self.engine = engine
        self.store = store
        self.secret = secret
        self.cas_url = cas_url
        self.min_bytes = min_bytes
        self.tmp_dir = tmp_dir
        self.interval = interval
        self.wake = asyncio.Event()
        self.failed: dict[str, float] = {}

    async def run(self) -> None:
        await asyncio.sleep(1.0)  # the server is serving (the client uploads to it) before the first round
        while True:
            try:
                for repo_type, repo_id, sha256 in await asyncio.to_thread(self._candidates):
                    await self.convert(repo_type, repo_id, sha256)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("xet conversion round failed")
            await wake_or_timeout(self.wake, self.interval)
            self.wake.clear()

    def _candidates(self) -> list[tuple[str, str, str]]:
        """Hosted LFS files large enough to need Xet and not in Xet form yet (one repo each)."""
        hosted = and_(repos.c.repo_type == entries.c.repo_type, repos.c.repo_id == entries.c.repo_id,
                      repos.c.source == "hosted")
        query = (select(entries.c.repo_type, entries.c.repo_id, entries.c.blob)
                 .select_from(entries.join(repos, hosted))
                 .where(entries.c.lfs.is_(True), entries.c.size >= self.min_bytes,
                        ~exists().where(xet_files.c.sha256 == entries.c.blob))
                 .distinct().limit(20))
        with self.engine.connect() as conn:
            found = [(r[0], r[1], r[2]) for r in conn.execute(query)]
        seen: set[str] = set()
        now = time.time()
        return [f for f in found if not (f[2] in seen or seen.add(f[2]) or self.failed.get(f[2], 0) > now)]

    async def convert(self, repo_type: str, repo_id: str, sha256: str) -> None:
        path, temporary = await asyncio.to_thread(self._local_copy, sha256)
        if path is None:
            return
        grant = XetGrant(repo_type, repo_id, "write", "hubproxy", int(time.time()) + TOKEN_SECONDS)
        try:
            await asyncio.to_thread(self._upload, path, sha256, issue(self.secret, grant), grant.expires)
            log.info("converted %s of %s to Xet", sha256, repo_id)
        except Exception as exc:  # noqa: BLE001 - retried later
            self.failed[sha256] = time.time() + 600
            log.warning("could not convert %s of %s to Xet: %s", sha256, repo_id, exc)
        finally:
            if temporary:
                os.unlink(path)

    def _local_copy(self, sha256: str) -> tuple[str | None, bool]:
        """A path with the blob's bytes: the store's own file, or a temporary copy (S3)."""
        local = getattr(self.store, "path", None)
        if local is not None:
            try:
                if os.path.exists(local(sha256)):
                    return local(sha256), False
            except ValueError:
                return None, False
        size = self.store.stat(sha256)
        if size is None:
            return None, False
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        with os.fdopen(fd, "wb") as out:

            async def copy() -> bool:
                body = await self.store.read(sha256, 0, size, 8 << 20)
                if body is None:
                    return False
                async for piece in body:
                    out.write(piece)
                return True

            copied = asyncio.run(copy())
        if not copied:
            os.unlink(tmp)
            return None, False
        return tmp, True

    def _upload(self, path: str, sha256: str, token: str, expires: int) -> None:
        # hf_xet keeps a cache of what it uploaded; the server's goes into its data dir, not a home folder.
        os.environ.setdefault("HF_XET_CACHE", os.path.join(os.path.dirname(self.tmp_dir), "xet-client-cache"))
        import hf_xet

        session = hf_xet.XetSession()
        with session.new_upload_commit(endpoint=self.cas_url, token=token, token_expiry_unix_secs=expires) as commit:
            commit.start_upload_file(path, sha256=sha256)
