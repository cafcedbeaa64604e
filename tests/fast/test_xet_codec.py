"""Our Xet codec against bytes the real hf_xet client produced (tests/xet_vectors: captured xorbs and shards,
their inputs, and every hash in manifest.json): each hash recomputed, each file rebuilt byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hubproxy.xet.hashes import file_hash, from_string, merkle_root, to_string, verification_hash
from hubproxy.xet.shard import ShardError, read_shard
from hubproxy.xet.xorb import XorbError, decode, footer, read_xorb

VECTORS = Path(__file__).resolve().parent.parent / "xet_vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
CASES = MANIFEST["cases"]


def _all_xorbs() -> dict[str, tuple[bytes, list]]:
    found = {}
    for case in CASES:
        for x in case["xorbs"]:
            body = (VECTORS / x["file"]).read_bytes()
            found[x["hash"]] = (body, read_xorb(body, from_string(x["hash"])))
    return found


XORBS = _all_xorbs()


def test_hash_text_form() -> None:
    raw = bytes(range(32))
    assert to_string(raw) == "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    assert from_string(to_string(raw)) == raw


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_xorbs_as_captured(case: dict) -> None:
    for x in case["xorbs"]:
        body, chunks = XORBS[x["hash"]]
        assert len(body) == x["serialized_length"]
        assert [to_string(c.hash) for c in chunks] == x["chunk_hashes"]
        assert [c.size for c in chunks] == x["chunk_lengths"]
        assert [c.end - c.start - 8 for c in chunks] == x["compressed_lengths"]
        assert [c.scheme for c in chunks] == x["compression_schemes"]
        assert [c.start for c in chunks] == x["chunk_byte_offsets"]
        stored = body + footer(from_string(x["hash"]), chunks)  # what hubproxy keeps: self-describing
        assert [c.hash for c in read_xorb(stored, from_string(x["hash"]))] == [c.hash for c in chunks]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shards_and_files_as_captured(case: dict) -> None:
    for s in case["shards"]:
        shard = read_shard((VECTORS / s["file"]).read_bytes())
        by_hash = {to_string(f.hash): f for f in shard.files}
        for xorb in shard.xorbs:  # the xorbs the uploader sent, as the shard lists them
            body, chunks = XORBS[to_string(xorb.hash)]
            assert [(h, n) for h, _, n in xorb.chunks] == [(c.hash, c.size) for c in chunks]
            assert merkle_root([(h, n) for h, _, n in xorb.chunks]) == xorb.hash
            assert xorb.total == sum(c.size for c in chunks)
        for f in case["files"]:
            info = by_hash[f["xet_hash"]]
            assert info.sha256 == f["sha256"] and info.size == f["size"]
            assert [(to_string(g.xorb), [g.start, g.end], g.size) for g in info.segments] == \
                [(t["xorb"], t["chunks"], t["unpacked_length"]) for t in f["terms"]]
            data, leaves, proofs = bytearray(), [], []
            for g in info.segments:
                body, chunks = XORBS[to_string(g.xorb)]
                used = chunks[g.start:g.end]
                proofs.append(verification_hash([c.hash for c in used]))
                leaves += [(c.hash, c.size) for c in used]
                for c in used:
                    data += decode(memoryview(body)[c.start + 8:c.end], c.scheme, c.size)
            assert [to_string(p) for p in proofs] == f["verification_hashes"] == [to_string(v) for v in
                                                                                  info.verification or []]
            assert [to_string(h) for h, _ in leaves] == f["chunk_hashes"]
            assert to_string(file_hash(leaves)) == f["xet_hash"]
            if "input" in f:
                assert bytes(data) == (VECTORS / f["input"]).read_bytes()
            else:  # made from a recipe: parts of a seeded shake_256 stream
                assert bytes(data) == b"".join(hashlib.shake_256(p["seed"].encode()).digest(p["len"])
                                               for p in f["recipe"])
            assert hashlib.sha256(data).hexdigest() == f["sha256"]


def test_damaged_bodies_are_refused() -> None:
    name, (body, _) = next(iter(XORBS.items()))
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 1
    for bad in (bytes(flipped), body[:-1], body + b"\0" * 8, b""):
        with pytest.raises(XorbError):
            read_xorb(bad, from_string(name))
    with pytest.raises(XorbError):  # a well-formed body under another name
        read_xorb(body, bytes(32))
    shard = (VECTORS / CASES[0]["shards"][0]["file"]).read_bytes()
    for bad in (shard[:-1], shard[:-48], b"x" * len(shard), shard + bytes(48)):
        with pytest.raises(ShardError):
            read_shard(bad)
