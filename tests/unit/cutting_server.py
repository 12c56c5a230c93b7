"""A socket server that fails HTTP the way a store killed mid-request does, for unit tests of
what botocore then raises and what dlpipe makes of it (real botocore, real sockets)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cutting_server(body: bytes, *, cut: int) -> Iterator[str]:
    """An endpoint URL whose first ``cut`` answers stop halfway through ``body`` (a request
    answered with nothing at all when ``body`` is empty); the answers after those are whole."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered = 0

    def serve() -> None:
        nonlocal answered
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                answered += 1
                if answered <= cut and not body:
                    continue  # closed with no answer
                sent = body[:len(body) // 2] if answered <= cut else body
                head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
                conn.sendall(head.encode() + sent)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
