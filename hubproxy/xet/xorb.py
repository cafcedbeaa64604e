"""Xorbs: a sequence of chunk records (8-byte header, then the chunk's bytes, raw or compressed), as
uploaded, optionally followed by a footer describing them ("CasObjectInfo"); stored with the footer.

``read_xorb`` walks and checks a body: every header, every chunk decompressed to its stated length,
and the merkle root of the chunk hashes equal to the xorb's name. That one check authenticates the body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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


def read_xorb(body: bytes, name: bytes | None = None) -> list[Chunk]:
    """The chunks of a xorb body (its footer, if any, must agree); ``name``: the hash it must have."""
    if len(body) > MAX_XORB_BYTES + 8 * 1024 * 1024:
        raise XorbError("a xorb is at most 64 MiB")
    chunks: list[Chunk] = []
    at = 0
    view = memoryview(body)
    while at < len(body):
        if body[at:at + 7] == FOOTER_MAGIC:
            _check_footer(body, at, chunks)
            break
        if at + 8 > len(body):
            raise XorbError("the xorb ends inside a chunk header")
        version, clen_lo, clen_hi, scheme, ulen_lo, ulen_hi = struct.unpack_from("<BHBBHB", body, at)
        compressed, size = clen_lo | clen_hi << 16, ulen_lo | ulen_hi << 16
        if version != 0 or size > MAX_CHUNK or compressed > 2 * MAX_CHUNK or size == 0:
            raise XorbError(f"bad chunk header at byte {at}")
        end = at + 8 + compressed
        if end > len(body):
            raise XorbError("the xorb ends inside a chunk")
        data = decode(view[at + 8:end], scheme, size)
        chunks.append(Chunk(at, end, scheme, size, chunk_hash(data)))
        if len(chunks) > MAX_CHUNKS:
            raise XorbError(f"a xorb holds at most {MAX_CHUNKS} chunks")
        at = end
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


def _check_footer(body: bytes, at: int, chunks: list[Chunk]) -> None:
    if not chunks:
        raise XorbError("a footer with no chunk before it")
    info_len = struct.unpack_from("<I", body, len(body) - 4)[0]
    if at + info_len + 4 != len(body):
        raise XorbError("the footer does not end the xorb")
    name = body[at + 8:at + 40]
    if footer(name, chunks) != body[at:]:
        # the nonce is the one part a writer may choose: compare without it
        mine, theirs = footer(name, chunks), body[at:]
        if len(mine) != len(theirs) or mine[:-20] != theirs[:-20] or mine[-4:] != theirs[-4:]:
            raise XorbError("the footer does not describe the chunks before it")


def chunk_ranges(chunks: list[Chunk]) -> list[tuple[int, int, int, bytes]]:
    """``(byte start, byte end, unpacked size, hash)`` per chunk, as kept for reconstructions."""
    return [(c.start, c.end, c.size, c.hash) for c in chunks]
