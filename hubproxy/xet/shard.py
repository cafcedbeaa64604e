"""Shards: what a client registers after uploading xorbs. Every record is 48 bytes, little-endian.

    header (tag, version 2, footer size)
    per file: header (file hash, flags, entry count), entries (xorb, chunk range, bytes),
              verification entries (flag bit 31), metadata extension with the sha256 (flag bit 30)
    bookend
    per xorb uploaded: header (xorb hash, entry count, bytes), entries (chunk hash, offset, bytes)
    bookend
    [footer, which uploads leave out]

The sha256 in the metadata extension is stored word-reversed like every hash: its usual hex digest
is ``to_string`` of the raw bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hubproxy.xet.hashes import to_string

TAG = b"HFRepoMetaData\x00" + bytes([85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169])
BOOKEND = b"\xff" * 32 + bytes(16)
RECORD = 48
MAX_SHARD_BYTES = 64 * 1024 * 1024
HAS_VERIFICATION, HAS_METADATA = 0x80000000, 0x40000000


class ShardError(ValueError):
    """Not a well-formed shard."""


@dataclass(frozen=True)
class Segment:
    """A run of chunks ``[start, end)`` of one xorb, unpacking to ``size`` bytes."""

    xorb: bytes
    start: int
    end: int
    size: int


@dataclass
class FileInfo:
    hash: bytes
    segments: list[Segment]
    verification: list[bytes] | None = None
    sha256: str | None = None

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)


@dataclass
class XorbInfo:
    """A xorb the shard's uploader sent: its chunks as ``(hash, unpacked offset, unpacked size)``."""

    hash: bytes
    chunks: list[tuple[bytes, int, int]]
    total: int


@dataclass
class Shard:
    files: list[FileInfo] = field(default_factory=list)
    xorbs: list[XorbInfo] = field(default_factory=list)


def read_shard(body: bytes) -> Shard:
    if len(body) > MAX_SHARD_BYTES:
        raise ShardError("a shard is at most 64 MiB")
    if len(body) < RECORD * 3 or body[:32] != TAG:
        raise ShardError("not a shard (bad header)")
    version, footer_size = struct.unpack_from("<QQ", body, 32)
    if version != 2:
        raise ShardError(f"shard version {version} is not supported")
    end = len(body) - footer_size if footer_size else len(body)
    if end < RECORD * 3 or (len(body) - RECORD) % RECORD and not footer_size:
        raise ShardError("a shard is made of 48-byte records")
    shard, at = Shard(), RECORD
    at = _files(body, at, end, shard)
    at = _xorbs(body, at, end, shard)
    if at != end:
        raise ShardError("bytes after the last section")
    return shard


def _record(body: bytes, at: int, end: int) -> bytes:
    if at + RECORD > end:
        raise ShardError("the shard ends inside a record")
    return body[at:at + RECORD]


def _files(body: bytes, at: int, end: int, shard: Shard) -> int:
    while (head := _record(body, at, end)) != BOOKEND:
        file_hash, flags, count = head[:32], *struct.unpack_from("<II", head, 32)
        at += RECORD
        if count == 0 or count > 1_000_000:
            raise ShardError("a file with no segments")
        segments = []
        for _ in range(count):
            rec = _record(body, at, end)
            _, size, start, stop = struct.unpack_from("<IIII", rec, 32)
            if not start < stop:
                raise ShardError("a segment with no chunks")
            segments.append(Segment(rec[:32], start, stop, size))
            at += RECORD
        info = FileInfo(file_hash, segments)
        if flags & HAS_VERIFICATION:
            info.verification = [_record(body, at + i * RECORD, end)[:32] for i in range(count)]
            at += count * RECORD
        if flags & HAS_METADATA:
            info.sha256 = to_string(_record(body, at, end)[:32])
            at += RECORD
        shard.files.append(info)
    return at + RECORD


def _xorbs(body: bytes, at: int, end: int, shard: Shard) -> int:
    while (head := _record(body, at, end)) != BOOKEND:
        _, count, total, _ = struct.unpack_from("<IIII", head, 32)
        at += RECORD
        chunks = []
        for _ in range(count):
            rec = _record(body, at, end)
            offset, size = struct.unpack_from("<II", rec, 32)
            chunks.append((rec[:32], offset, size))
            at += RECORD
        shard.xorbs.append(XorbInfo(head[:32], chunks, total))
    return at + RECORD
