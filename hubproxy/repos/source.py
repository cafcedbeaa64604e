"""The questions every repo source answers, whether its repos are mirrored from the upstream or hosted here.

``hub/render.py`` turns the answers into the Hub's JSON, the same way for both kinds.
Each answer that may stand in for the upstream's carries ``stale`` (served with ``X-HF-Warning``).
"""

from __future__ import annotations

from typing import Any, Protocol

from hubproxy.repos.model import Entry, Listing, RepoRef, Resolved
from hubproxy.repos.rows import Ref
from hubproxy.upstream.answers import Answer


class RepoSource(Protocol):
    async def resolve(self, repo: RepoRef, revision: str | None) -> Resolved:
        """The commit a revision (None: the default branch) names."""

    async def info(self, repo: RepoRef, commit: str, props: set[str]) -> tuple[dict[str, Any], bool]:
        """The repo info at a commit, with at least ``props`` where the source has them."""

    async def listing(self, repo: RepoRef, commit: str, fetch: bool = True) -> Listing | None:
        """Every file and folder at the commit; None if the source cannot tell now (or, without ``fetch``,
        has not learned it yet)."""

    async def view(self, repo: RepoRef, commit: str, folder: str, recursive: bool) -> tuple[list[Entry] | None, bool]:
        """What a tree request lists (None: no such folder)."""

    async def expanded(self, repo: RepoRef, commit: str, folder: str, recursive: bool,
                       shown: list[Entry]) -> tuple[list[Entry], bool]:
        """``shown`` with the expanded fields (last commit, security scan) filled in."""

    async def entry(self, repo: RepoRef, commit: str, path: str) -> Entry:
        """What one path is at the commit (a file, or ``missing``)."""

    async def fetchable(self, repo: RepoRef, commit: str, path: str) -> None:
        """Raise the error a download of the file would meet now, if its bytes are not held here."""

    async def paths(self, repo: RepoRef, commit: str, paths: list[str], expand: bool) -> tuple[list[Entry], bool]:
        """The entries of the paths that exist (paths-info)."""

    async def refs(self, repo: RepoRef) -> tuple[list[Ref], bool]:
        """Branches, tags, converts and pull requests."""

    async def history(self, repo: RepoRef, revision: str, query: list[tuple[str, str]], base_url: str) -> Answer:
        """A page of commit history (``/commits/{rev}``)."""
