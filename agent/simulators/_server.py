"""Run a simulator app on a free loopback port, in this event loop or in a thread.

The tests and the demo both need real HTTP servers they can start and stop in
a blink, on 127.0.0.1 only, without picking ports by hand. uvicorn binds a
socket we made ourselves (port 0, so the kernel picks a free one), and its
signal handling is switched off: the agent (or pytest) owns SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator

import uvicorn
from starlette.types import ASGIApp

from agent.serve import QuietServer
from agent.simulators.faults import DropConnection

LOOPBACK = "127.0.0.1"


class _HideDroppedConnections(logging.Filter):
    """Keep uvicorn from logging a traceback for a connection we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


_filter_installed = False


def _install_log_filter() -> None:
    global _filter_installed
    if not _filter_installed:
        logging.getLogger("uvicorn.error").addFilter(_HideDroppedConnections())
        _filter_installed = True


def _bind_loopback(port: int = 0) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted
    # sockets whose proto says TCP, and without it every answer waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.set_inheritable(True)
    return sock


def _make_server(app: ASGIApp, log_level: str) -> QuietServer:
    _install_log_filter()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
        http="h11",
    )
    return QuietServer(config)


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, *, port: int = 0, log_level: str = "warning") -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 in the running event loop; yields its base URL.

    Args:
        app: the ASGI app (a simulator's ``create_app(...)``).
        port: 0 (default) lets the kernel choose a free port.
        log_level: uvicorn's log level.
    """
    sock = _bind_loopback(port)
    server = _make_server(app, log_level)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):  # at most ~5 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # raise why it stopped
        if not server.started:
            raise RuntimeError("simulator server did not start within 5 s")
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
        sock.close()


class ServerThread:
    """Serve an app on 127.0.0.1 from a thread of its own (the blocking variant).

    For the demo and for callers without an event loop::

        server = ServerThread(create_app())
        base_url = server.start()
        ...
        server.stop()
    """

    def __init__(self, app: ASGIApp, *, port: int = 0, log_level: str = "warning") -> None:
        self._sock = _bind_loopback(port)
        self._server = _make_server(app, log_level)
        self._thread = threading.Thread(target=self._run, name="kassabro-simulator", daemon=True)
        self.base_url = f"http://{LOOPBACK}:{self._sock.getsockname()[1]}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def start(self, timeout_s: float = 5.0) -> str:
        """Start serving; returns the base URL once the server accepts connections."""
        self._thread.start()
        for _ in range(int(timeout_s / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise RuntimeError("simulator server did not start")
        return self.base_url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to finish and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
