"""Files registered by shards: checked against the xorbs hubproxy holds, rebuilt, and kept as plain blobs.

A shard says "file F is these chunk runs of these xorbs, and its sha256 is S". Everything but S can be
checked from what is stored (segments, sizes, verification hashes, the file hash); S cannot, and a client
could otherwise register bytes under another file's name. So the file is rebuilt from its xorbs and hashed
with sha256 here, on its way into the blob store as an ordinary blob: from then on it is a file like any
LFS upload (every plain-HTTP read path serves it unchanged), and its Xet form serves Xet clients.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from sqlalchemy.engine import Engine

from hubproxy.cache.ingest import IngestError, begin_ingest
from hubproxy.cache.spool import Spool
from hubproxy.hub.errors import HubError
from hubproxy.store.base import BlobStore
from hubproxy.threads import run_in
from hubproxy.xet import registry
from hubproxy.xet.hashes import file_hash, to_string, verification_hash
from hubproxy.xet.registry import StoredChunk, XetFile
from hubproxy.xet.shard import FileInfo, Shard
from hubproxy.xet.xorb import decode

BATCH = 8 * 1024 * 1024


def refused(message: str) -> HubError:
    return HubError(400, None, f"Shard refused, nothing was registered: {message}")


def check_shard(shard: Shard, tables: dict[bytes, list[StoredChunk]]) -> None:
    """Every check but the sha256: the xorbs it lists are the ones stored, its files' segments exist and prove
    their chunks, and each file hash is right. ``tables``: the chunk tables of every xorb it names."""
    for x in shard.xorbs:
        stored = tables.get(x.hash)
        if stored is None:
            raise refused(f"xorb {to_string(x.hash)} was never uploaded")
        if [(h, n) for h, _, n in x.chunks] != [(c.hash, c.size) for c in stored]:
            raise refused(f"xorb {to_string(x.hash)} is not what the shard lists")
    for f in shard.files:
        if f.sha256 is None or f.verification is None:
            raise refused("files need their sha256 and verification entries")
        leaves = []
        for segment, proof in zip(f.segments, f.verification, strict=True):
            chunks = tables.get(segment.xorb)
            if chunks is None:
                raise refused(f"xorb {to_string(segment.xorb)} is not stored here")
            if not 0 <= segment.start < segment.end <= len(chunks):
                raise refused("a segment names chunks its xorb does not have")
            used = chunks[segment.start:segment.end]
            if sum(c.size for c in used) != segment.size or verification_hash([c.hash for c in used]) != proof:
                raise refused("a segment does not match its xorb")
            leaves += [(c.hash, c.size) for c in used]
        if file_hash(leaves) != f.hash:
            raise refused(f"file {to_string(f.hash)} does not hash to its name")


async def _decoded(body: AsyncIterator[bytes], chunks: list[StoredChunk]) -> AsyncIterator[list[tuple]]:
    """Batches of ``(payload, scheme, size)`` of consecutive chunks from a stream of their records."""
    buffer, index, batch, held = bytearray(), 0, [], 0
    async for piece in body:
        buffer += piece
        while index < len(chunks) and len(buffer) >= chunks[index].end - chunks[index].start:
            c = chunks[index]
            record = bytes(buffer[:c.end - c.start])
            del buffer[:c.end - c.start]
            batch.append((record[8:], record[4], c.size))
            held += c.size
            index += 1
            if held >= BATCH:
                yield batch
                batch, held = [], 0
    if index != len(chunks):
        raise refused("a xorb in the store is shorter than its chunk table")
    if batch:
        yield batch


class XetFiles:
    """Registers the files of shards, rebuilding each into the blob store."""

    def __init__(self, engine: Engine, blobs: BlobStore, xorbs: BlobStore, spool: Spool) -> None:
        self.engine = engine
        self.blobs = blobs
        self.xorbs = xorbs
        self.spool = spool

    async def tables(self, shard: Shard) -> dict[bytes, list[StoredChunk]]:
        names = {x.hash for x in shard.xorbs} | {s.xorb for f in shard.files for s in f.segments}

        def load() -> dict[bytes, list[StoredChunk]]:
            with self.engine.connect() as conn:
                found = {n: registry.xorb_chunks(conn, to_string(n)) for n in names}
            return {n: c for n, c in found.items() if c is not None}

        return await asyncio.to_thread(load)

    async def materialize(self, f: FileInfo, tables: dict[bytes, list[StoredChunk]]) -> XetFile:
        """Rebuild the file into the blob store (sha256-checked); its registry record."""
        assert f.sha256 is not None
        ingest = await run_in(self.blobs.pool, begin_ingest, self.blobs, self.spool, self.engine, f.sha256, f.size)
        digest, seen = hashlib.sha256(), [0]

        def take(batch: list[tuple]) -> None:
            for payload, scheme, size in batch:
                data = decode(payload, scheme, size)
                seen[0] += len(data)
                if ingest is not None:
                    ingest.write(data)
                else:
                    digest.update(data)

        try:
            for segment in f.segments:
                chunks = tables[segment.xorb][segment.start:segment.end]
                body = await self.xorbs.read(to_string(segment.xorb), chunks[0].start, chunks[-1].end, 1 << 20)
                if body is None:
                    raise refused(f"xorb {to_string(segment.xorb)} is missing from the store")
                async for batch in _decoded(body, chunks):
                    await asyncio.to_thread(take, batch)
            if ingest is not None:
                await run_in(self.blobs.pool, ingest.finish)
            elif seen[0] != f.size or digest.hexdigest() != f.sha256:
                raise IngestError("the bytes do not hash to the sha256 the shard claims")
        except IngestError as exc:
            if ingest is not None:
                ingest.abort()
            raise refused(f"file {to_string(f.hash)}: {exc}") from None
        except BaseException:
            if ingest is not None:
                ingest.abort()
            raise
        return XetFile(to_string(f.hash), f.sha256, f.size, f.segments)


