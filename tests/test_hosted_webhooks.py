"""Webhooks on hosted repos (TP21): made with HfApi.create_webhook, delivered with the Hub's version-3 payload that
huggingface_hub's WebhookPayload parses, with the secret, for commits, tags, settings, moves and deletion."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from huggingface_hub import WebhookPayload

from tests.helpers import AdminClient, admin_json, client_env, run_client, serve_in_thread, wait_until

CHANGES = r"""
import json, sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("alice/hooked")
hook = api.create_webhook(url=sys.argv[1], watched=[{"type": "user", "name": "alice"}], domains=["repo"],
                          secret="s3cret")
api.create_repo("alice/other")
api.upload_file(path_or_fileobj=b"v0", path_in_repo="w.bin", repo_id="alice/other")
api.upload_file(path_or_fileobj=b"v1", path_in_repo="w.bin", repo_id="alice/hooked")
api.create_tag("alice/hooked", tag="v1")
api.update_repo_settings("alice/hooked", visibility="public")
api.move_repo("alice/hooked", "alice/moved")
api.delete_repo("alice/moved")
print(json.dumps([hook.id, [h.id for h in api.list_webhooks()]]))
"""
DISABLE = ("import sys; from huggingface_hub import HfApi; api = HfApi(); api.disable_webhook(sys.argv[1]); "
           "print(api.get_webhook(sys.argv[1]).disabled)")


def test_webhooks_are_delivered_as_the_hub_sends_them(make_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    received: list[tuple[dict, dict]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.path == "/alice", self.path  # bob's webhook never fires
            received.append((dict(self.headers), json.loads(body)))
            self.send_response(500 if len(received) == 1 else 200)  # the first delivery fails: it is retried
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server, url = serve_in_thread(Receiver)
    try:
        proxy = make_proxy(token_cache_seconds="0")
        rest = AdminClient(proxy.url, admin_json(proxy.data_dir, "bootstrap")["token"])
        for user in ("alice", "bob"):
            rest.call("POST", "/users", {"name": user})
        alice = rest.call("POST", "/tokens", {"user": "alice", "role": "write"})["token"]
        bob = rest.call("POST", "/tokens", {"user": "bob", "role": "write"})["token"]
        # bob watches alice's private repo alice/other, which he may not read: he is told nothing.
        run_client("", client_env(proxy.url, tmp_path / "bob", bob), args=["python", "-c", (
            "import sys; from huggingface_hub import HfApi; "
            "HfApi().create_webhook(url=sys.argv[1], watched=[{'type': 'model', 'name': 'alice/other'}], "
            "domains=['repo'])"), url + "/bob"])
        env = client_env(proxy.url, tmp_path / "alice", alice)
        out = run_client("", env, args=["python", "-c", CHANGES, url + "/alice"]).stdout
        hook_id, listed = json.loads(out.strip().splitlines()[-1])
        assert listed == [hook_id]

        def scopes() -> list[tuple[str, str, str]]:
            seen = {}  # the first delivery failed and was sent again: count each event once
            for _, body in received:
                seen[(body["repo"]["name"], body["event"]["scope"], body["event"]["action"],
                      json.dumps(body.get("updatedRefs")))] = 1
            return [k[:3] for k in seen]

        expected = [("alice/other", "repo", "create"), ("alice/other", "repo.content", "update"),
                    ("alice/hooked", "repo.content", "update"), ("alice/hooked", "repo.content", "update"),
                    ("alice/hooked", "repo.config", "update"), ("alice/hooked", "repo", "move"),
                    ("alice/moved", "repo", "delete")]
        assert wait_until(lambda: sorted(scopes()) == sorted(expected), timeout=30), scopes()
        assert wait_until(lambda: len(received) == len(expected) + 1, timeout=15)  # the failed one, again
        assert run_client("", env, args=["python", "-c", DISABLE, hook_id]).stdout.strip() == "True"
    finally:
        server.shutdown()
    assert len(received) == len(expected) + 1  # no duplicates
    assert all(h.get("X-Webhook-Secret") == "s3cret" for h, _ in received)
    payloads = [WebhookPayload(**body) for _, body in received]  # huggingface_hub's own model parses each
    commit = next(p for p in payloads if p.repo.name == "alice/hooked" and p.updatedRefs
                  and p.updatedRefs[0].ref == "refs/heads/main")
    assert commit.updatedRefs[0].oldSha and commit.updatedRefs[0].newSha and commit.webhook.id == hook_id
    assert any(p.updatedRefs and p.updatedRefs[0].ref == "refs/tags/v1" and p.updatedRefs[0].oldSha is None
               for p in payloads)
    assert any(p.movedTo and p.movedTo.name == "alice/moved" for p in payloads)
    assert all(h.get("Host", "").startswith("127.0.0.1") for h, _ in received)
