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
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


MAX_CONNECTIONS = 256
"""Open connections one server keeps; more are closed at once (a till needs one or two)."""
MAX_HEAD_BYTES = 16 * 1024
"""The request line and headers together; more is answered 431 (httptools itself has no limit)."""
MAX_HEADERS = 100
HEAD_TIMEOUT_S = 10.0
"""A request's line and headers must arrive within this (slow-loris); then the connection closes."""
KEEP_ALIVE_S = 5
"""An idle keep-alive connection is closed after this."""
_REFUSAL_LOG_EVERY_S = 60.0


class _RateLimitedLog:
    """At most one log line a minute about refused connections, with the count since the last."""

    def __init__(self) -> None:
        self.last = 0.0
        self.count = 0

    def note(self, what: str, name: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= _REFUSAL_LOG_EVERY_S:
            log.warning("%s server: %s (%d refused since the last such line)", name, what, self.count)
            self.last = now
            self.count = 0


def limited_protocol(name: str, max_connections: int = MAX_CONNECTIONS) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the limits contract §2 asks for, for the server ``name``.

    - at most ``max_connections`` open connections: one more is closed at
      once, so idle sockets cannot take the process's file descriptors (the
      spool, the outbox and the other port need them);
    - the request line and headers bounded in bytes (``MAX_HEAD_BYTES``),
      count (``MAX_HEADERS``) and time (``HEAD_TIMEOUT_S``): 431 or closed.
    The ingest and status servers each get their own class, so a flood on the
    status port never takes the till's connections.
    """
    refusals = _RateLimitedLog()

    class LimitedProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _head_count = 0
        _in_head = True
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                refusals.note(f"over {max_connections} open connections, new ones closed", name)
                self.transport = transport
                transport.abort()
                return
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            if self.flow is None:  # refused in connection_made: nothing of uvicorn's was set up
                return
            super().connection_lost(exc)

        def _start_head_timer(self) -> None:
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                refusals.note(f"request headers not complete within {HEAD_TIMEOUT_S:.0f} s, closed", name)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.parser is None or self.transport.is_closing():
                return  # refused above; whatever else the client sends is dropped
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            # Checked after feeding: one read may hold the headers and a body. Still in the
            # head past the limit means the headers alone are too large (the parser holds at
            # most the limit plus one read).
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._too_large()

        def _too_large(self) -> None:
            refusals.note(f"request headers over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} lines, answered 431", name)
            self._in_head = False
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()
            self.parser = None  # type: ignore[assignment]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_count = 0
            if self._head_timer is None:
                self._start_head_timer()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count += 1
            if self._head_count > MAX_HEADERS:
                raise httptools.HttpParserError("too many headers")
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            self._stop_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0

    return LimitedProtocol


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
                http=limited_protocol(name),
                timeout_keep_alive=KEEP_ALIVE_S,
                limit_concurrency=MAX_CONNECTIONS * 2,
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
