"""Xet hashes: chunk hashes, the merkle aggregation that names xorbs and files, verification hashes.

All are keyed blake3. A 32-byte hash is written as text word by word: each 8-byte word read as a
little-endian integer and printed as 16 hex digits (``to_string``), in URLs, JSON and inside the text
the merkle nodes hash alike.
"""

from __future__ import annotations

import blake3

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
                  155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38,
                          213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195])
ZERO = bytes(32)


def to_string(raw: bytes) -> str:
    """The text form of a hash: each 8-byte word little-endian, as 16 hex digits."""
    return "".join(raw[i:i + 8][::-1].hex() for i in range(0, 32, 8))


def from_string(text: str) -> bytes:
    """The raw hash a text form names (ValueError if it is not 64 hex digits)."""
    if len(text) != 64:
        raise ValueError("a Xet hash is 64 hex digits")
    return b"".join(bytes.fromhex(text[i:i + 16])[::-1] for i in range(0, 64, 16))


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def _next_group(nodes: list[tuple[bytes, int]], start: int) -> int:
    """How many nodes from ``start`` make the next parent (2 to 9; all when at most 2 remain)."""
    remaining = len(nodes) - start
    if remaining <= 2:
        return remaining
    bound = min(9, remaining)
    for i in range(2, bound):
        if int.from_bytes(nodes[start + i][0][24:32], "little") % 4 == 0:
            return i + 1
    return bound


def merkle_root(nodes: list[tuple[bytes, int]]) -> bytes:
    """The root over ``(hash, length)`` leaves: a xorb's hash over its chunks."""
    if not nodes:
        return ZERO
    level = list(nodes)
    while len(level) > 1:
        parents, at = [], 0
        while at < len(level):
            size = _next_group(level, at)
            group = level[at:at + size]
            text = "".join(f"{to_string(h)} : {n}\n" for h, n in group).encode()
            parents.append((blake3.blake3(text, key=INTERNAL_NODE_KEY).digest(), sum(n for _, n in group)))
            at += size
        level = parents
    return level[0][0]


def file_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    """A file's hash over all its chunks in order (zero for an empty file)."""
    if not chunks:
        return ZERO
    return blake3.blake3(merkle_root(chunks), key=ZERO).digest()


def verification_hash(chunk_hashes: list[bytes]) -> bytes:
    """What proves a shard's uploader knew the chunks of a segment it names."""
    return blake3.blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()
