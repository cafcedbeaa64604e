"""A fake upstream Hugging Face Hub: a real HTTP server on loopback, for tests and benchmarks.

It speaks the parts of the Hub protocol hubproxy proxies, the way huggingface.co does:
LFS files are answered with a 302 to a second "CDN" origin whose answer carries a different
ETag, with ``X-Linked-*`` and Xet headers on the 302; regular files on a branch answer a
relative 307 to ``/api/resolve-cache/...``; tree pages are short and linked with absolute
``Link`` headers; Xet keys appear in JSON. Gated, private and missing repos answer with the
Hub's error codes. Faults can be injected per blob, and every request and every blob byte
served is counted so tests can assert what reached the upstream.
"""

from tests.fakehub.content import Blob, Commit, Faults, Repo, RepoFile, git_sha1
from tests.fakehub.server import FakeHub

__all__ = ["Blob", "Commit", "FakeHub", "Faults", "Repo", "RepoFile", "git_sha1"]
