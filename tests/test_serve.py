"""agent.serve: an answer's head and body leave in one write, and every answer arrives whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent import serve
from agent.serve import AppServer, bind

LOOPBACK = "127.0.0.1"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/json``: a body; ``/empty``: 204; ``/stream``: a chunked answer of three parts."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"three"})
    else:
        body = b'{"ok":true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A real server on loopback; the list gets every write that reaches a connection's socket."""
    writes: list[bytes] = []

    class Recording(serve._OneWriteTransport):
        def __init__(self, transport: asyncio.Transport) -> None:
            super().__init__(transport)
            real_write = transport.write

            class Inner:
                def __getattr__(self, name: str) -> Any:
                    return getattr(transport, name)

                def write(self, data: bytes) -> None:
                    writes.append(bytes(data))
                    real_write(data)

            self.inner = Inner()  # type: ignore[assignment]

    monkeypatch.setattr(serve, "_OneWriteTransport", Recording)
    sock = bind(LOOPBACK, 0)
    server = AppServer(app, sock, name="test")
    server.start()
    try:
        yield server.port, writes
    finally:
        await server.stop()


async def exchange(port: int, requests: list[tuple[str, str]]) -> list[bytes]:
    """Each ``(method, path)`` in turn on one keep-alive connection; each answer as it came, whole."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    answers = []
    try:
        for method, path in requests:
            writer.write(f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:-2])
            if method == "HEAD" or head.startswith(b"HTTP/1.1 204"):
                body = b""
            elif fields.get(b"transfer-encoding") == b"chunked":
                body = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
            else:
                body = await asyncio.wait_for(reader.readexactly(int(fields[b"content-length"])), 5)
            answers.append(head + body)
        return answers
    finally:
        writer.close()


async def test_three_answers_on_one_connection_each_leave_in_one_write(server: tuple[int, list[bytes]]) -> None:
    port, writes = server
    answers = await exchange(port, [("POST", "/json")] * 3)
    tail = b'\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
    assert all(a.startswith(b"HTTP/1.1 201 Created\r\n") and a.endswith(tail) for a in answers)
    assert writes == answers  # one write each, the head and the body together


async def test_an_answer_without_a_body_and_a_head_request_still_go_out(server: tuple[int, list[bytes]]) -> None:
    port, writes = server
    answers = await exchange(port, [("POST", "/empty"), ("HEAD", "/json"), ("POST", "/json")])
    assert answers[0].startswith(b"HTTP/1.1 204 No Content\r\n") and answers[0].endswith(b"\r\n\r\n")
    assert answers[1].startswith(b"HTTP/1.1 201 Created\r\n") and answers[1].endswith(b"\r\n\r\n")
    assert answers[2].endswith(b'{"ok":true}')  # nothing held back from the answers before it
    assert writes == answers


async def test_a_streamed_answer_sends_its_head_with_the_first_part(server: tuple[int, list[bytes]]) -> None:
    port, writes = server
    [got] = await exchange(port, [("GET", "/stream")])
    assert got.endswith(b"\r\n\r\n4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n")
    assert len(writes) == 3, writes
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"4\r\none,\r\n")
