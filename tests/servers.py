"""Real HTTP servers on loopback for tests: any ASGI app under uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port (handing the socket over avoids port races).

    ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` on accepted connections only when
    the listening socket says it is TCP, and without it every keep-alive request waits ~40 ms
    for a delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_server(app: Any, timeout_s: float = 15.0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block exits; yields its base URL.

    ``config`` overrides uvicorn settings (e.g. ``loop="uvloop", http="httptools"``).
    """
    sock = bound_socket()
    port = sock.getsockname()[1]
    # httptools: with h11 every loopback call waits ~40 ms on delayed ACKs (measured here).
    options = {"loop": "asyncio", "http": "httptools", "log_level": "warning", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, **(options | config)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
