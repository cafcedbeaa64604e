"""Several server processes on one port, each accepting on a listening socket of its own (``SO_REUSEPORT``).

uvicorn's multi-worker mode binds one socket in the parent and hands it to every worker: all of them wait on it,
and the first one woken accepts every connection pending. Connections that arrive together (32 keep-alive
clients opening at once, a fleet of jobs starting, a client's download threads) then often all land on one
worker: in eight ``ab`` runs of 20,000 HEADs on 32 connections against two workers, seven split the requests
about 8,000/12,000 and reached 11,500-12,700 req/s, and one gave all of them to one worker (7,658 req/s).

Here the parent's socket is one of a ``SO_REUSEPORT`` group, and each worker accepts on it and on a socket of the
group that it binds itself: the kernel spreads new connections over the group's sockets by their addresses, so
with two workers two thirds of them go to one worker or the other by that hash, and only the parent's third to
whichever worker wakes first. The parent's socket keeps the port and its queue while workers come and go: with
every worker down (killed, being replaced), new connections wait in it as they did before instead of being
refused. uvicorn's supervisor still starts, watches, restarts and stops the workers; a replacement binds its own
socket again. (Connections waiting in the queue of a worker's own socket when it dies are reset, as with any
``SO_REUSEPORT`` group.)
"""

from __future__ import annotations

import logging
import socket

import uvicorn
from uvicorn.supervisors import multiprocess

log = logging.getLogger(__name__)


def port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` in a ``SO_REUSEPORT`` group. Port 0 picks a free port (read it
    from the socket)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        return sock
    except BaseException:
        sock.close()
        raise


class _OwnSocketServer(uvicorn.Server):
    """A worker's server: it accepts on the parent's socket and on a socket of the port's group it binds itself."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        own = port_socket(self.config.host, self.config.port, self.config.backlog)
        await super().startup(sockets=[*(sockets or []), own])


class _Worker(multiprocess.Process):
    """uvicorn's worker process, with a server of its own socket (the class is found by name in the child)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = _OwnSocketServer(config=self.config)
        return self._server


def run_workers(config: uvicorn.Config) -> None:
    """Run ``config.workers`` worker processes on ``config.host``:``config.port`` until the server is stopped."""
    shared = port_socket(config.host, config.port, config.backlog)
    try:
        config.port = shared.getsockname()[1]
        log.info("serving on %s:%d with %d workers, each also accepting on a socket of its own", config.host,
                 config.port, config.workers)
        # The supervisor makes its workers by this module-level name: this process only supervises.
        multiprocess.Process = _Worker  # type: ignore[misc]
        multiprocess.Multiprocess(config, sockets=[shared]).run()
    finally:
        shared.close()
