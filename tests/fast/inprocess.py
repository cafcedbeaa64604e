"""hubproxy's whole ASGI app (middleware included) in the test process, driven through httpx's ``ASGITransport``.

The app runs on an event loop thread of its own (its upstream sessions, fills and background tasks
live there); tests call it synchronously. No server process, no socket to hubproxy: a test
starts in milliseconds. The upstream is still a real HTTP server (the fake hub) on loopback.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hubproxy.admin.service import Actor, AdminService
from hubproxy.app import create_app
from hubproxy.config import Settings, load_settings

T = TypeVar("T")


class InProcessHub:
    """One hubproxy app; ``request`` answers like ``tests.helpers.request`` (status, lower-case headers, body)."""

    url = "http://hubproxy.test"

    def __init__(self, data_dir: Path, upstream: str, **settings: str) -> None:
        env = {"HUBPROXY_DATA_DIR": str(data_dir), "HUBPROXY_UPSTREAM": upstream}
        env.update({f"HUBPROXY_{k.upper()}": str(v) for k, v in settings.items()})
        self.settings: Settings = load_settings(environ=env)
        self.data_dir = data_dir
        self.app = create_app(self.settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hubproxy-app", daemon=True)
        self._thread.start()
        self._lifespan: asyncio.Queue[dict[str, Any]] | None = None
        self._lifespan_task: asyncio.Future[None] | None = None
        self.client: httpx.AsyncClient | None = None
        self._run(self._start())

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"the app did not answer in {timeout}s; where it waits:\n{self._stacks()}") from None

    def _stacks(self) -> str:
        """Every task of the app's loop and every thread, as stacks (for a hang)."""
        import io
        import sys
        import traceback

        out = io.StringIO()
        for task in asyncio.all_tasks(self.loop):
            out.write(f"--- task {task.get_name()}\n")
            task.print_stack(file=out)
        for ident, frame in sys._current_frames().items():
            out.write(f"--- thread {ident}\n{''.join(traceback.format_stack(frame))}")
        return out.getvalue()

    async def _start(self) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lifespan = inbox
        self._outbox = outbox
        self._lifespan_task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                                             inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        started = await outbox.get()
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"hubproxy did not start: {started.get('message')}")
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
        self.client = httpx.AsyncClient(transport=transport, base_url=self.url)

    def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request; ``target`` is a path (or a URL on ``self.url``, as Link headers give them)."""

        async def send() -> tuple[int, dict[str, str], bytes]:
            assert self.client is not None
            resp = await self.client.request(method, target, headers=headers, content=body)
            return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content

        return self._run(send())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the app's loop (to reach its runtime's parts directly)."""
        return self._run(coro)

    @property
    def runtime(self) -> Any:
        app = self.app
        while not hasattr(app, "runtime"):
            app = app.app  # through the middleware
        return app.runtime

    @property
    def admin(self) -> AdminService:
        """The admin service on this app's database (what the CLI and the REST API call)."""
        return AdminService(self.runtime.engine, self.runtime.store)

    def secured(self, allow: list[str], deny: list[str]) -> dict[str, str]:
        """A project ``research`` with this policy, and tokens: the first admin's, a developer's, a viewer's."""
        operator = Actor.operator()
        tokens = {"admin": self.admin.bootstrap(operator)["token"]}
        self.admin.create_project(operator, "research", allow, deny)
        for user, role in (("dev", "developer"), ("viewer", "viewer")):
            self.admin.create_user(operator, user)
            self.admin.set_member(operator, "research", user, role)
            tokens[user] = self.admin.create_token(operator, user)["token"]
        return tokens

    def close(self) -> None:
        async def stop() -> None:
            if self.client is not None:
                await self.client.aclose()
            assert self._lifespan is not None and self._lifespan_task is not None
            await self._lifespan.put({"type": "lifespan.shutdown"})
            await self._outbox.get()
            await self._lifespan_task

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self._run(stop())
        finally:
            self._run(cancel_the_rest())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
