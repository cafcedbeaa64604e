"""The floor under the unthrottled cold row: the least work a cache that verifies what it serves must do for one
cold download, with nothing else (no store, no disk, no HTTP framework, no concurrency beyond one download).

For each request it asks the upstream for the same path (following one redirect, as ``curl -L`` does), answers
with the upstream's length, and moves the body through a ring of buffers: the receiving thread ``recv_into``s a
buffer, a hashing thread runs sha256 over it and a sending thread ``sendall``s it, all three at once on
different buffers. The last byte is sent only once the whole body hashed to the digest given (as hubproxy
holds back a blob's last byte); a wrong body is cut. With ``--no-hash`` it only relays: the difference is what
the hash costs. Run by ``benchmarks/run.py``; on its own:

    python benchmarks/verifying_relay.py --port 8001 --upstream http://127.0.0.1:8000 --sha256 HEX
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import queue
import socket
import threading
from urllib.parse import urlsplit

#: The ring: buffers of this size, this many (32 MiB, as hubproxy's direct lane keeps). Tried on the 2-core VM, one
#: cold GiB: 4 MiB x 8 0.87-1.01 s, 1 MiB x 16 0.97-1.07 s, 256 KiB x 64 1.11-1.23 s, 16 MiB x 4 0.98-1.34 s.
BUFFER_BYTES = 4 * 1024 * 1024
BUFFERS = 8


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """A request's or an answer's head, and the bytes after it that arrived with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise OSError("the connection closed in the head")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def open_body(base: str, target: str) -> tuple[socket.socket, int, bytes]:
    """GET ``target`` from the upstream ``base``, following redirects: the socket, the body's length, its first
    bytes."""
    url = base + target
    for _ in range(3):
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port or 80))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        head, rest = read_head(sock)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status in (301, 302, 307, 308):
            sock.close()
            location = fields["location"]
            url = location if "://" in location else f"{parts.scheme}://{parts.netloc}{location}"
            continue
        if status != 200:
            raise OSError(f"upstream answered {status}")
        return sock, int(fields["content-length"]), rest
    raise OSError("too many redirects")


def relay(client: socket.socket, base: str, digest: str | None) -> None:
    """Answer one request on ``client``."""
    request, _ = read_head(client)
    target = request.split(b" ", 2)[1].decode()
    upstream, size, first = open_body(base, target)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # full segments only (nginx's tcp_nopush, hubproxy's)
    client.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
    free: queue.Queue[memoryview] = queue.Queue()
    for _ in range(BUFFERS):
        free.put(memoryview(bytearray(BUFFER_BYTES)))
    to_hash: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
    to_send: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
    hashed = threading.Event()
    verdict: list[bool] = []
    pending: dict[int, int] = {}  # buffer id -> consumers (hash, send) still using it
    lock = threading.Lock()

    def release(view: memoryview) -> None:
        with lock:
            pending[id(view)] -= 1
            done = not pending[id(view)]
        if done:
            free.put(view)

    def hash_all() -> None:
        hasher = hashlib.sha256()
        while (item := to_hash.get()) is not None:
            hasher.update(item[0][:item[1]])
            release(item[0])
        verdict.append(digest is None or hasher.hexdigest() == digest)
        hashed.set()

    def send_all() -> None:
        left = size
        while (item := to_send.get()) is not None:
            view, n = item
            left -= n
            client.sendall(view[:n - 1] if left == 0 else view[:n])
            if left == 0:
                hashed.wait()
                if verdict[0]:
                    client.sendall(view[n - 1:n])
            release(view)

    consumers = [threading.Thread(target=send_all)]
    if digest is not None:
        consumers.append(threading.Thread(target=hash_all))
    for thread in consumers:
        thread.start()
    received = 0
    try:
        while received < size:
            view = free.get()
            n = len(first[:BUFFER_BYTES])
            view[:n] = first[:n]
            first = first[n:]
            while n < BUFFER_BYTES and received + n < size:
                got = upstream.recv_into(view[n:min(BUFFER_BYTES, size - received)])
                if not got:
                    raise OSError("the upstream ended early")
                n += got
            received += n
            with lock:
                pending[id(view)] = len(consumers)
            to_send.put((view, n))
            if digest is not None:
                to_hash.put((view, n))
    finally:
        to_send.put(None)
        to_hash.put(None)
        if digest is None:
            hashed.set()
            verdict.append(True)
        for thread in consumers:
            thread.join()
        upstream.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8000")
    ap.add_argument("--sha256", help="the digest every answer must hash to")
    ap.add_argument("--no-hash", action="store_true", help="relay only")
    args = ap.parse_args()
    server = socket.create_server(("127.0.0.1", args.port))
    while True:
        client, _ = server.accept()
        with client, contextlib.suppress(OSError):  # a cut answer (a wrong body, a client gone): next request
            relay(client, args.upstream.rstrip("/"), None if args.no_hash else args.sha256)


if __name__ == "__main__":
    raise SystemExit(main())
