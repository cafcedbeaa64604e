"""Revision index and metadata cache: memory in front of the database.

Answers about a commit never change, so they are kept in memory (bounded LRU) after the
first database read; the hot path then does no database I/O at all. Database calls run in
worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from hubproxy.db import BlobRecord, FileRecord, MetaRecord, RefRecord, upsert

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A small bounded LRU map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        self._data.pop(key, None)

    def drop_where(self, predicate: Callable[[K], bool]) -> None:
        """Forget every key ``predicate`` accepts."""
        for key in [k for k in self._data if predicate(k)]:
            del self._data[key]


#: ``size`` of a file record meaning "in the listing, but left out of the bundle imported here".
LEFT_OUT = -1


@dataclass(frozen=True)
class FileInfo:
    """What a path is at a commit."""

    blob: str | None  # None: the upstream said the path does not exist (or, with size LEFT_OUT, not imported)
    size: int
    is_lfs: bool
    etag: str  # what clients see as ETag (the blob key, or an upstream etag we cannot verify)

    @property
    def left_out(self) -> bool:
        """A file of an imported revision that its bundle did not carry."""
        return self.blob is None and self.size == LEFT_OUT


@dataclass(frozen=True)
class RefInfo:
    commit: str
    fetched_at: float


@dataclass(frozen=True)
class CachedAnswer:
    """A metadata answer as it will be replayed."""

    status: int
    headers: dict[str, str]
    body: bytes
    fetched_at: float

    def age(self) -> float:
        return time.time() - self.fetched_at


class Index:
    """Maps (repo, revision, path) to blobs, branches to commits, requests to metadata answers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._files: LRU[tuple[str, str, str, str], FileInfo] = LRU(200_000)
        self._refs: dict[tuple[str, str, str], RefInfo] = {}
        self._meta: LRU[str, CachedAnswer] = LRU(2_000)

    async def _db(self, fn: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with Session(self.engine, expire_on_commit=False) as session:
                return fn(session)

        return await asyncio.to_thread(run)

    async def _upsert(self, model: type[SQLModel], values: dict[str, Any]) -> None:
        def run() -> None:
            with self.engine.begin() as conn:
                upsert(conn, model, values)

        await asyncio.to_thread(run)

    def forget_repo(self, repo_type: str, repo_id: str) -> None:
        """Drop what memory holds about a repo (it was purged; the database no longer has it)."""
        self._files.drop_where(lambda k: k[0] == repo_type and k[1] == repo_id)
        for key in [k for k in self._refs if k[0] == repo_type and k[1] == repo_id]:
            del self._refs[key]
        marker = f"|{repo_type}|{repo_id}|"
        self._meta.drop_where(lambda k: marker in k)

    # -- refs -------------------------------------------------------------------------
    async def get_ref(self, repo_type: str, repo_id: str, name: str, max_age: float | None = None) -> RefInfo | None:
        """The last known commit of a ref. A memory copy older than ``max_age`` is re-read from the
        database, where another replica or a ``sync import`` may have recorded a newer one."""
        key = (repo_type, repo_id, name)
        ref = self._refs.get(key)
        if ref is not None and (max_age is None or time.time() - ref.fetched_at < max_age):
            return ref
        rec = await self._db(lambda s: s.get(RefRecord, key))
        if rec is None:
            return ref
        if ref is not None and ref.fetched_at >= rec.fetched_at:
            return ref
        ref = RefInfo(rec.commit, rec.fetched_at)
        self._refs[key] = ref
        return ref

    async def set_ref(self, repo_type: str, repo_id: str, name: str, commit: str) -> None:
        now = time.time()
        key = (repo_type, repo_id, name)
        self._refs[key] = RefInfo(commit, now)

        await self._upsert(RefRecord, {"repo_type": repo_type, "repo_id": repo_id, "name": name, "commit": commit,
                                       "fetched_at": now})

    # -- files ------------------------------------------------------------------------
    def peek_file(self, repo_type: str, repo_id: str, commit: str, path: str) -> FileInfo | None:
        """Memory only: the hot path's first look."""
        return self._files.get((repo_type, repo_id, commit, path))

    async def get_file(self, repo_type: str, repo_id: str, commit: str, path: str) -> FileInfo | None:
        key = (repo_type, repo_id, commit, path)
        info = self._files.get(key)
        if info is not None:
            return info
        rec = await self._db(lambda s: s.get(FileRecord, key))
        if rec is None:
            return None
        info = FileInfo(rec.blob, rec.size, rec.is_lfs, rec.blob or "")
        self._files.put(key, info)
        return info

    async def put_file(self, repo_type: str, repo_id: str, commit: str, path: str, info: FileInfo) -> None:
        self._files.put((repo_type, repo_id, commit, path), info)
        blob = info.blob

        await self._upsert(FileRecord, {"repo_type": repo_type, "repo_id": repo_id, "commit": commit, "path": path,
                                        "blob": blob, "size": info.size, "is_lfs": info.is_lfs,
                                        "fetched_at": time.time()})

    async def left_out_paths(self, repo_type: str, repo_id: str, commit: str) -> set[str]:
        """Paths of an imported revision its bundle left out."""
        def read(s: Session) -> set[str]:
            rows = s.exec(select(FileRecord.path).where(  # type: ignore[call-overload]
                FileRecord.repo_type == repo_type, FileRecord.repo_id == repo_id, FileRecord.commit == commit,
                FileRecord.blob == None, FileRecord.size == LEFT_OUT))  # noqa: E711 - SQL NULL
            return set(rows)

        return await self._db(read)

    # -- metadata answers -------------------------------------------------------------
    async def get_meta(self, key: str) -> CachedAnswer | None:
        ans = self._meta.get(key)
        if ans is not None:
            return ans
        rec = await self._db(lambda s: s.get(MetaRecord, key))
        if rec is None:
            return None
        ans = CachedAnswer(rec.status, json.loads(rec.headers), rec.body, rec.fetched_at)
        self._meta.put(key, ans)
        return ans

    async def put_meta(self, key: str, status: int, headers: dict[str, str], body: bytes) -> CachedAnswer:
        ans = CachedAnswer(status, headers, body, time.time())
        self._meta.put(key, ans)

        await self._upsert(MetaRecord, {"key": key, "status": status, "headers": json.dumps(headers), "body": body,
                                        "fetched_at": ans.fetched_at})
        return ans

    # -- blobs ------------------------------------------------------------------------
    async def add_blob(self, key: str, size: int) -> None:
        now = time.time()
        await self._upsert(BlobRecord, {"key": key, "size": size, "created_at": now, "last_access": now})
