"""HTTP/1.0 clients that ask for keep-alive keep their connection (ApacheBench, some proxies and probes)."""

from __future__ import annotations

import socket

from tests.helpers import ProxyProcess, read_head

PATH = "/alice/files/resolve/main/config.json"


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One answer to a HEAD: its status line and lower-cased header block."""
    head = read_head(sock).split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n", 1)[0], head.lower()


def test_an_http10_client_asking_for_keep_alive_keeps_its_connection(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(f"HEAD {PATH} HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n".encode())
            status, headers = _answer(sock)
            assert status.endswith(b" 200 OK") and b"\r\nconnection: keep-alive" in headers
            assert b"\r\ncontent-length: " in headers and b"\r\nx-repo-commit: " in headers
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:  # no keep-alive asked: closed
        sock.sendall(f"HEAD {PATH} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        status, headers = _answer(sock)
        assert status.endswith(b" 200 OK") and b"\r\nconnection: close" in headers
        assert sock.recv(1) == b""
