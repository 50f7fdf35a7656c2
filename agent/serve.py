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

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # 32-bit Raspberry Pi OS: no wheel (deploy/dist.py, OPTIONAL)
    httptools = None  # type: ignore[assignment]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

HTTP_PARSER = "httptools" if httptools is not None else "h11"
"""The HTTP parser the servers use: httptools (C) where its wheel exists, else uvicorn's pure-Python h11."""


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
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


MAX_CONNECTIONS = 256
"""Open connections one server keeps (a till needs one or two); more close the oldest idle (``limited_protocol``)."""
LISTEN_BACKLOG = 512
"""Connections the kernel queues until the agent accepts them; asyncio accepts them all in one go."""
BURST_CONNECTIONS = LISTEN_BACKLOG
"""Connections over ``MAX_CONNECTIONS`` let in for ``TRIM_AFTER_S``, so a new one's request is read before
the oldest idle ones are closed: a whole accept burst of a flood fits (closing at once would close a till's
among them, its request not read yet). At most 2 x 768 descriptors for both ports (``LimitNOFILE=4096``)."""
TRIM_AFTER_S = 0.05
"""How long after going over ``MAX_CONNECTIONS`` the oldest idle connections are closed (a loop turn or more)."""
MAX_HEAD_BYTES = 16 * 1024
"""The request line and headers together; more is answered 431 (httptools itself has no limit)."""
MAX_HEADERS = 100
"""Header lines in one request; more is answered 431."""
HEAD_TIMEOUT_S = 10.0
"""A request's line and headers must arrive within this (slow-loris); then the connection closes."""
KEEP_ALIVE_S = 5
"""An idle keep-alive connection is closed after this."""
_REFUSAL_LOG_EVERY_S = 60.0

_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


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


class _QuietRefusals:
    """uvicorn's logger for one server, its per-request warnings going to the rate-limited log.

    uvicorn warns once per refused request ("Invalid HTTP request received.",
    "Unsupported upgrade request.", "Exceeded concurrency limit."): a client
    sending garbage in a loop would write a line each. Everything else (errors of the app) goes to uvicorn's
    logger as it is.
    """

    def __init__(self, logger: logging.Logger, refusals: _RateLimitedLog, name: str) -> None:
        self._logger = logger
        self._refusals = refusals
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._logger, attr)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._refusals.note(
            f"{msg.rstrip('.')} (a 400, a 431 for over {MAX_HEADERS} header lines, or a 503)", self._name
        )


class _OneWriteTransport:
    """The connection's transport, writing an answer's head and its body in one ``send``.

    uvicorn writes the status line and headers, then the body, each with its
    own ``transport.write``: two system calls per answer (and two segments,
    ``TCP_NODELAY`` being on), on a Pi a visible share of a sale's CPU. A head
    (``HTTP/1.1 ...\r\n\r\n``, not a ``100 Continue``) is held until the next
    write, an empty body's too, or until the connection is closed or the
    answer is complete (``LimitedProtocol.on_response_complete``), whichever
    comes first. Everything else is the transport's own.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self.inner = transport
        self._head: bytes | None = None
        # Bound once: uvicorn calls these on every request, a __getattr__ would cost each call.
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.set_protocol = transport.set_protocol
        self.get_write_buffer_size = transport.get_write_buffer_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.inner.write(head + bytes(data))
        elif (
            type(data) is bytes
            and data.startswith(b"HTTP/1.1 ")
            and data.endswith(b"\r\n\r\n")
            and data[9:12] != b"100"
        ):
            self._head = data
        elif data:  # h11 ends a sized body with an empty write
            self.inner.write(data)

    def flush(self) -> None:
        """Write a held head now (an answer with no body write, say)."""
        head = self._head
        if head is not None:
            self._head = None
            self.inner.write(head)

    def close(self) -> None:
        self.flush()
        self.inner.close()

    def abort(self) -> None:
        self._head = None
        self.inner.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# Eviction ranks of a connection with no request in progress: lower goes first.
_NEVER_SENT = 0
"""Connected and sent nothing yet: what a flood of idle sockets looks like."""
_KEPT_ALIVE = 1
"""Answered, and idle in keep-alive since."""
_PART_HEAD = 2
"""Part of a request's line and headers received (a till sends them whole; a slow-loris does not)."""


def limited_protocol(name: str, max_connections: int = MAX_CONNECTIONS, parser: str | None = None) -> type[Any]:
    """uvicorn's HTTP protocol (``parser``, default ``HTTP_PARSER``) with contract §2's limits, for ``name``.

    - at most ``max_connections`` open connections. More close the oldest
      *idle* ones to make room (idle: sent nothing yet, then idle in
      keep-alive, then part of a head, in that order; a connection whose
      request is being answered is never closed), ``TRIM_AFTER_S`` later, so
      the newcomers' requests are read first (up to ``BURST_CONNECTIONS`` more
      meanwhile; beyond that at once). A new connection is itself closed only
      when every slot holds a request in progress. So idle sockets cannot
      take the process's file descriptors (the spool, the outbox and the other
      port need them), and a flood of them, even on the ingest port itself
      (no token is needed to open a TCP connection), cannot keep a till out:
      its new connection sends its request at once, and the flood's own
      sockets go before it;
    - the request line and headers bounded in bytes (``MAX_HEAD_BYTES``),
      count (``MAX_HEADERS``) and time (``HEAD_TIMEOUT_S``): 431 or closed.
    The ingest and status servers each get their own class and their own
    slots, so a flood on the status port never takes the till's connections.

    With h11 (no httptools wheel: 32-bit Raspberry Pi OS) the same limits
    hold, except that h11 counts no header lines: its own bound on the head's
    bytes (``MAX_HEAD_BYTES``, answered 400) bounds them instead.
    """
    base: Any = HttpToolsProtocol if (parser or HTTP_PARSER) == "httptools" else H11Protocol
    refusals = _RateLimitedLog()
    quiet: _QuietRefusals | None = None
    # Insertion-ordered: the oldest connection first. Evicted ones leave at once, before
    # asyncio reports their connection_lost, so a burst of accepts counts right.
    open_now: dict[LimitedProtocol, None] = {}

    def make_room() -> bool:
        """Close the oldest idle connection; False when every one has a request in progress."""
        best: LimitedProtocol | None = None
        best_rank = _PART_HEAD + 1
        for conn in open_now:
            rank = conn.idle_rank()
            if rank is not None and rank < best_rank:
                best, best_rank = conn, rank
                if rank == _NEVER_SENT:
                    break
        if best is None:
            return False
        del open_now[best]
        best.transport.abort()
        return True

    trim_timer: asyncio.TimerHandle | None = None

    def trim() -> None:
        """Back to ``max_connections``: the oldest idle connections closed, a burst's requests read by now."""
        nonlocal trim_timer
        trim_timer = None
        while len(open_now) > max_connections and make_room():
            refusals.note(f"over {max_connections} open connections, the oldest idle one closed", name)

    class LimitedProtocol(base):  # type: ignore[misc]  # httptools' or h11's protocol, chosen at run time
        _head_bytes = 0
        _dropped = False
        _cycle_seen: Any = None
        transport: Any  # a _OneWriteTransport once admitted
        logger: Any
        _head_count = 0
        _in_head = True
        _sent_any = False
        _too_many_headers = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            nonlocal quiet, trim_timer
            if len(open_now) >= max_connections + BURST_CONNECTIONS:
                if make_room():
                    refusals.note(f"over {max_connections} open connections, the oldest idle one closed", name)
                else:
                    refusals.note(f"{len(open_now)} connections busy with requests, new ones closed", name)
                    self._dropped = True
                    self.transport = transport
                    transport.abort()
                    return
            open_now[self] = None
            super().connection_made(_OneWriteTransport(transport))
            if quiet is None:
                quiet = _QuietRefusals(self.logger, refusals, name)
            self.logger = quiet  # the same calls, warnings rate-limited
            self._start_head_timer()
            if len(open_now) > max_connections and trim_timer is None:
                trim_timer = self.loop.call_later(TRIM_AFTER_S, trim)

        def connection_lost(self, exc: Exception | None) -> None:
            open_now.pop(self, None)
            self._stop_head_timer()
            if self.flow is None:  # refused in connection_made: nothing of uvicorn's was set up
                return
            super().connection_lost(exc)

        def idle_rank(self) -> int | None:
            """How soon this connection is closed to make room (lower first); None: a request is in progress."""
            if self.cycle is not None and not self.cycle.response_complete:
                return None
            if not self._sent_any:
                return _NEVER_SENT
            if self._in_head and self._head_bytes == 0:
                return _KEPT_ALIVE
            return _PART_HEAD

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
            if self._dropped or self.transport.is_closing():
                return  # refused above; whatever else the client sends is dropped
            self._sent_any = True
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_timer is None:
                    self._start_head_timer()
            super().data_received(data)
            if self.cycle is not self._cycle_seen and self.cycle is not None:
                # h11 reports no "headers complete": a new cycle is one (httptools' callback did it already).
                self._cycle_seen = self.cycle
                self._head_complete()
            # Checked after feeding: one read may hold the headers and a body. Still in the
            # head past the limit means the headers alone are too large (the parser holds at
            # most the limit plus one read).
            if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                refusals.note(f"request headers over {MAX_HEAD_BYTES} bytes, answered 431", name)
                self._too_large()

        def _too_large(self) -> None:
            self._in_head = False
            self._dropped = True
            self.transport.write(_TOO_LARGE)
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # uvicorn's answer to any parser error, ours included: too many header lines is a 431.
            if self._too_many_headers:
                self._too_large()
            else:
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_count = 0
            if self._head_timer is None:
                self._start_head_timer()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count += 1
            if self._head_count > MAX_HEADERS:
                self._too_many_headers = True
                raise httptools.HttpParserError("too many headers")  # stops the parser; answered 431 above
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_complete()
            super().on_headers_complete()
            self._cycle_seen = self.cycle

        def _head_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            self._stop_head_timer()

        def on_response_complete(self) -> None:
            self.transport.flush()  # the head of an answer that wrote no body
            if base is H11Protocol:
                self._in_head = True  # httptools says so in on_message_complete, h11 does not
                self._head_bytes = 0
            super().on_response_complete()
            if self.cycle is not self._cycle_seen and self.cycle is not None:  # h11: a pipelined request, read
                self._cycle_seen = self.cycle
                self._head_complete()

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
                h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                timeout_keep_alive=KEEP_ALIVE_S,
                # Our protocol bounds the connections; uvicorn's 503 stays a last resort above that.
                limit_concurrency=MAX_CONNECTIONS * 4,
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
