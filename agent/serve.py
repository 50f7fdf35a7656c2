"""Serve an ASGI app with uvicorn inside the agent's own event loop.

The socket is bound here, before uvicorn starts, so "the port accepts" is
true the moment ``bind`` returns: the agent only tells systemd READY=1 after
that. Tests bind port 0 and read the real port back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted sockets only when
    # sock.proto == IPPROTO_TCP, and without it Nagle holds each response body
    # back until the client's delayed ACK (~40 ms per request on keep-alive).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone.

    uvicorn's ``serve()`` swaps SIGINT/SIGTERM handlers in ``capture_signals``
    and re-raises them afterwards; the agent (or pytest, or the demo) owns
    signals and stops servers itself.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AppServer:
    """One uvicorn server on a pre-bound socket, as an asyncio task."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        *,
        name: str,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ):
        """``tls_cert_file``/``tls_key_file``: serve HTTPS with uvicorn's own TLS (no proxy on a Pi)."""
        self.sock = sock
        self.name = name
        self.tls = tls_cert_file is not None
        self.server = QuietServer(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=30,
                timeout_graceful_shutdown=5,
                server_header=False,
                # No proxy sits in front of the agent; uvicorn's X-Forwarded-* middleware
                # would only cost every request a wrapper call (docs/benchmarks.md).
                proxy_headers=False,
                ssl_certfile=tls_cert_file,
                ssl_keyfile=tls_key_file,
            )
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name=f"serve-{self.name}")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        with contextlib.suppress(OSError):
            self.sock.close()
