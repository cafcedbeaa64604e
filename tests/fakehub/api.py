"""The fake hub's ``/api`` routes: whoami, repo listings, revision info, trees, paths-info, refs, commits."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, quote, unquote, urlencode

from tests.fakehub.base import HubHandler
from tests.fakehub.content import TYPES, Commit, Repo, git_sha1


class ApiRoutes(HubHandler):
    def _api(self, segs: list[str], q: dict[str, str], items: list[tuple[str, str]], body: bytes) -> None:
        if segs == ["whoami-v2"]:
            if self._token() != self.hub.token:
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": "alice", "fullname": "Alice", "orgs": [{"name": "acme"}],
                               "auth": {"type": "access_token",
                                        "accessToken": {"displayName": "upstream", "role": "read"}}})
        if segs[:1] == ["resolve-cache"]:
            t = TYPES[segs[1]]
            n = 2 if len(segs) > 4 and segs[3] != "" and not _is_sha(segs[3]) else 1
            repo_id = "/".join(segs[2:2 + n])
            return self._serve_resolve(t, repo_id, unquote(segs[2 + n]), "/".join(unquote(s) for s in segs[3 + n:]))
        if not segs or segs[0] not in TYPES:
            return self._error(404, None, "Not found")
        t = TYPES[segs[0]]
        rest = segs[1:]
        if not rest or rest == [""]:
            return self._list(t, segs[0], q)
        subs = {"revision", "tree", "paths-info", "refs", "commits", "xet-read-token", "xet-write-token"}
        if len(rest) >= 2 and rest[1] not in subs:
            repo_id, rest = "/".join(rest[:2]), rest[2:]
        else:
            repo_id, rest = rest[0], rest[1:]
        if rest and rest[0] in ("xet-read-token", "xet-write-token"):
            return self._send(200, b"{}", {"X-Xet-Cas-Url": "http://xet.invalid", "X-Xet-Access-Token": "x",
                                           "X-Xet-Token-Expiration": "9999999999"})
        repo = self._repo(t, repo_id, content=False)
        if repo is None:
            return
        if not rest or rest[0] == "revision":
            rev = unquote(rest[1]) if rest else "main"
            commit = self._commit(repo, rev)
            if commit:
                self._json(self._info(repo, commit, q))
            return
        if rest[0] == "tree":
            commit = self._commit(repo, unquote(rest[1]))
            if commit:
                self._tree(repo, commit, "/".join(unquote(s) for s in rest[2:]).strip("/"), q)
            return
        if rest[0] == "paths-info":
            commit = self._commit(repo, unquote(rest[1]))
            if commit:
                form = parse_qsl(body.decode(), keep_blank_values=True)
                wanted = [v for k, v in form if k == "paths"]
                entries = {e["path"]: e for e in self._entries(commit, "", True, False)}
                self._json([entries[p] for p in wanted if p in entries])
            return
        if rest[0] == "refs":
            out = {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
            }
            if q.get("include_prs") in ("1", "true", "True"):
                out["pullRequests"] = []
            return self._json(out)
        if rest[0] == "commits":
            commit = self._commit(repo, unquote(rest[1]))
            if commit is None:
                return
            history = []
            c: Commit | None = commit
            while c is not None:
                history.append({"id": c.sha, "title": c.title, "message": "", "authors": [{"user": "alice"}],
                                "date": c.date})
                c = repo.commits.get(c.parent) if c.parent else None
            page = int(q.get("p", "0"))
            chunk = history[page * self.hub.page_size:(page + 1) * self.hub.page_size]
            headers = {}
            if (page + 1) * self.hub.page_size < len(history):
                headers["Link"] = f'<{self.hub.url}/api/{segs[0]}/{repo_id}/commits/{rest[1]}?p={page + 1}>; rel="next"'
            return self._json(chunk, headers)
        return self._error(404, None, "Not found")

    def _list(self, repo_type: str, seg: str, q: dict[str, str]) -> None:
        """``/api/models?search=&author=&limit=``: public repos (private ones only with the token), paginated."""
        search, author = q.get("search", "").lower(), q.get("author", "")
        found = [r for (t, _), r in sorted(self.hub.repos.items()) if t == repo_type
                 and (not r.private or self._token() == self.hub.token) and search in r.repo_id.lower()
                 and (not author or r.repo_id.startswith(author + "/"))]
        limit = int(q.get("limit") or 1000)
        cursor = int(q.get("cursor", "0"))
        page = found[cursor:cursor + min(limit, self.hub.page_size)]
        items = []
        for r in page:
            item: dict[str, object] = {"_id": hashlib.md5(r.repo_id.encode()).hexdigest()[:24], "id": r.repo_id,
                                       "private": r.private, "downloads": 0, "likes": 0, "tags": [],
                                       "sha": r.branches.get("main")}
            if repo_type == "model":
                item["modelId"] = r.repo_id
            items.append(item)
        headers = {}
        if cursor + len(page) < len(found) and len(page) < limit:
            query = urlencode({**q, "cursor": cursor + len(page)})
            headers["Link"] = f'<{self.hub.url}/api/{seg}?{query}>; rel="next"'
        self._json(items, headers)

    def _info(self, repo: Repo, commit: Commit, q: dict[str, str]) -> dict[str, object]:
        blobs = q.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, f in sorted(commit.files.items()):
            s: dict[str, object] = {"rfilename": path}
            if blobs:
                s.update({"size": f.blob.size, "blobId": git_sha1(f.pointer()) if f.lfs else f.blob.sha1})
                if f.lfs:
                    s["lfs"] = {"sha256": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer())}
            siblings.append(s)
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
            "lastModified": commit.date, "createdAt": commit.date, "private": repo.private,
            "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": [], "cardData": {}, "siblings": siblings, "xetEnabled": True,
        }

    def _entries(self, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, object]]:
        dirs: set[str] = set()
        files: list[dict[str, object]] = []
        prefix = path + "/" if path else ""
        for p, f in sorted(commit.files.items()):
            if not p.startswith(prefix) and path:
                continue
            rel = p[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                dirs.add(prefix + "/".join(parts[:i]))
            if not recursive and len(parts) > 1:
                continue
            e: dict[str, object] = {"type": "file", "oid": git_sha1(f.pointer()) if f.lfs else f.blob.sha1,
                                    "size": f.blob.size, "path": p}
            if f.lfs:
                e["lfs"] = {"oid": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer())}
                e["xetHash"] = hashlib.sha256(b"xet" + f.blob.sha256.encode()).hexdigest()
            if expand:
                e["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
                e["securityFileStatus"] = {"status": "safe", "avScan": {}, "pickleImportScan": {}}
            files.append(e)
        if not recursive:
            dirs = {d for d in dirs if "/" not in d[len(prefix):]}
        folders: list[dict[str, object]] = []
        for d in sorted(dirs):
            e = {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            if expand:
                e["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
            folders.append(e)
        return folders + files

    def _tree(self, repo: Repo, commit: Commit, path: str, q: dict[str, str]) -> None:
        recursive = q.get("recursive", "").lower() in ("1", "true")
        expand = q.get("expand", "").lower() in ("1", "true")
        if path and not any(p.startswith(path + "/") for p in commit.files):
            return self._error(404, "EntryNotFound", f'{path} does not exist on "{commit.sha}"')
        entries = self._entries(commit, path, recursive, expand)
        cursor = int(q.get("cursor", "0"))
        page = entries[cursor:cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(entries):
            sub = "/" + quote(path, safe="") if path else ""
            seg = {"model": "models", "dataset": "datasets", "space": "spaces"}[repo.repo_type]
            headers["Link"] = (f'<{self.hub.url}/api/{seg}/{repo.repo_id}/tree/{commit.sha}{sub}?recursive={recursive}'
                               f'&expand={expand}&cursor={cursor + self.hub.page_size}>; rel="next"')
        self._json(page, headers)


def _is_sha(seg: str) -> bool:
    return len(seg) == 40 and all(c in "0123456789abcdef" for c in seg)
