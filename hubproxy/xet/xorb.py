"""Xorbs: a sequence of chunk records (8-byte header, then the chunk's bytes, raw or compressed), as
uploaded, optionally followed by a footer describing them ("CasObjectInfo"); stored with the footer.

``read_xorb`` walks and checks a body: every header, every chunk decompressed to its stated length,
and the merkle root of the chunk hashes equal to the xorb's name. That one check authenticates the body.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import lz4.frame

from hubproxy.xet.hashes import chunk_hash, merkle_root

MAX_XORB_BYTES = 64 * 1024 * 1024
MAX_CHUNKS = 8192
MAX_CHUNK = 128 * 1024
NONE, LZ4, BG4_LZ4 = 0, 1, 2
FOOTER_MAGIC = b"XETBLOB"
HASHES_MAGIC = b"XBLBHSH"
BOUNDS_MAGIC = b"XBLBBND"


class XorbError(ValueError):
    """A xorb body that is not what its name says (or not a xorb at all)."""


@dataclass(frozen=True)
class Chunk:
    """One chunk record: where it lies in the serialized xorb, and what it unpacks to."""

    start: int  # offset of its header
    end: int  # offset just after its bytes
    scheme: int
    size: int  # unpacked length
    hash: bytes


def decode(payload: bytes | memoryview, scheme: int, size: int) -> bytes:
    """A chunk's bytes from its stored form."""
    if scheme == NONE:
        data = bytes(payload)
    elif scheme in (LZ4, BG4_LZ4):
        try:
            data = lz4.frame.decompress(bytes(payload))
        except RuntimeError as exc:
            raise XorbError(f"a chunk does not decompress: {exc}") from None
        if scheme == BG4_LZ4:
            data = _ungroup(data)
    else:
        raise XorbError(f"unknown compression scheme {scheme}")
    if len(data) != size:
        raise XorbError(f"a chunk unpacks to {len(data)} bytes, its header says {size}")
    return data


def _ungroup(grouped: bytes) -> bytes:
    """Byte-grouping by 4 undone: the stream is bytes 0,4,8.. then 1,5,9.. then 2,6,.. then 3,7,.."""
    n = len(grouped)
    out = bytearray(n)
    at = 0
    for k in range(4):
        count = (n - k + 3) // 4
        out[k::4] = grouped[at:at + count]
        at += count
    return bytes(out)


def read_xorb(body: bytes | BinaryIO, name: bytes | None = None) -> list[Chunk]:
    """The chunks of a xorb body, read as a stream (bytes, or a file open for reading); a footer, if any, must
    agree with them; ``name``: the hash it must have."""
    stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray)) else body
    chunks: list[Chunk] = []
    at = 0
    while True:
        header = stream.read(8)
        if not header:
            break
        if header[:7] == FOOTER_MAGIC:
            rest = header + stream.read(MAX_CHUNKS * 40 + 1024)
            _check_footer(rest, chunks)
            break
        if len(header) < 8:
            raise XorbError("the xorb ends inside a chunk header")
        version, clen_lo, clen_hi, scheme, ulen_lo, ulen_hi = struct.unpack("<BHBBHB", header)
        compressed, size = clen_lo | clen_hi << 16, ulen_lo | ulen_hi << 16
        if version != 0 or size > MAX_CHUNK or compressed > 2 * MAX_CHUNK or size == 0:
            raise XorbError(f"bad chunk header at byte {at}")
        payload = stream.read(compressed)
        if len(payload) != compressed:
            raise XorbError("the xorb ends inside a chunk")
        chunks.append(Chunk(at, at + 8 + compressed, scheme, size, chunk_hash(decode(payload, scheme, size))))
        if len(chunks) > MAX_CHUNKS or chunks[-1].end > MAX_XORB_BYTES + 8 * 1024 * 1024:
            raise XorbError("a xorb is at most 64 MiB and 8192 chunks")
        at = chunks[-1].end
    if not chunks:
        raise XorbError("a xorb holds at least one chunk")
    if name is not None and merkle_root([(c.hash, c.size) for c in chunks]) != name:
        raise XorbError("the chunks do not hash to the xorb's name")
    return chunks


def footer(name: bytes, chunks: list[Chunk]) -> bytes:
    """The footer that makes a stored xorb self-describing (offsets of chunks, their hashes)."""
    n = len(chunks)
    hashes = HASHES_MAGIC + bytes([0]) + struct.pack("<I", n) + b"".join(c.hash for c in chunks)
    unpacked, total = [], 0
    for c in chunks:
        total += c.size
        unpacked.append(total)
    bounds = (BOUNDS_MAGIC + bytes([1]) + struct.pack("<I", n) + struct.pack(f"<{n}I", *(c.end for c in chunks))
              + struct.pack(f"<{n}I", *unpacked))
    tail_len = 4 + 4 + 4 + 16  # num_chunks, two offsets, nonce
    hashes_from_end = len(hashes) + len(bounds) + tail_len
    bounds_from_end = len(bounds) + tail_len
    info = (FOOTER_MAGIC + bytes([1]) + name + hashes + bounds
            + struct.pack("<III", n, hashes_from_end, bounds_from_end) + bytes(16))
    return info + struct.pack("<I", len(info))


def _check_footer(tail: bytes, chunks: list[Chunk]) -> None:
    """A footer a client sent (``tail``: from its magic to the end) must describe the chunks before it; only its
    nonce, which a writer may choose, may differ from the one hubproxy would write."""
    if not chunks or len(tail) < 44:
        raise XorbError("a footer with no chunk before it")
    mine = footer(tail[8:40], chunks)
    if len(mine) != len(tail) or mine[:-20] != tail[:-20] or mine[-4:] != tail[-4:]:
        raise XorbError("the footer does not describe the chunks before it")
