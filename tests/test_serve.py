"""agent.serve with either HTTP parser: answers whole and in one write each, heads bounded in size and time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import serve
from agent.serve import AppServer, bind
from tests.helpers import KassabroProcess, make_sale

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


@pytest.fixture(params=["httptools", "h11"])
async def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A real server on loopback with each parser (h11: no httptools wheel, 32-bit Raspberry Pi OS).

    The list gets every write that reaches a connection's socket.
    """
    monkeypatch.setattr(serve, "HTTP_PARSER", request.param)
    monkeypatch.setattr(serve, "HEAD_TIMEOUT_S", 0.5)
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
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"4\r\none,\r\n")
    assert b"".join(writes) == got


async def test_an_endless_head_is_refused_and_the_connection_closed(server: tuple[int, list[bytes]]) -> None:
    port, writes = server
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    answer = b""
    try:
        writer.write(b"POST /json HTTP/1.1\r\nhost: x\r\nx-pad: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(64):  # 64 x 1 KiB, well over MAX_HEAD_BYTES, never ending the head
                writer.write(b"a" * 1024)
                await writer.drain()
                await asyncio.sleep(0.002)
            answer = await asyncio.wait_for(reader.read(), 5)  # all of it, up to the close
    finally:
        writer.close()
    # The refusal may be lost to the reset of a close with our bytes unread; the close is not.
    assert answer == b"" or answer.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")), answer[:80]
    assert not any(w.startswith(b"HTTP/1.1 201") for w in writes), "the app never saw it"
    assert (await exchange(port, [("POST", "/json")]))[0].startswith(b"HTTP/1.1 201 ")


async def test_a_head_that_stalls_is_closed_after_the_head_timeout(server: tuple[int, list[bytes]]) -> None:
    port, writes = server
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(b"POST /json HTTP/1.1\r\nhost: x\r\n")  # and then nothing (a slow-loris)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed without an answer"
    finally:
        writer.close()
    assert writes == []
    answers = await exchange(port, [("POST", "/json")])  # the server itself is fine
    assert answers[0].startswith(b"HTTP/1.1 201 ")


@pytest.mark.slow
def test_kassabro_run_serves_sales_without_the_httptools_wheel(tmp_path: Path) -> None:
    """The 32-bit Raspberry Pi OS bundle has no httptools (deploy/dist.py OPTIONAL): the agent must still run."""
    blocked = tmp_path / "no-wheels" / "httptools"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("no httptools wheel for armv7l (test)")\n')
    agent = KassabroProcess(tmp_path)
    agent.start(env={"PYTHONPATH": f"{blocked.parent}:{Path.cwd()}"})
    try:
        answer = httpx.post(f"{agent.ingest_url}/v1/sales", json=make_sale(1), timeout=10)
        assert answer.status_code == 201, answer.text
        again = httpx.post(f"{agent.ingest_url}/v1/sales", json=make_sale(1), timeout=10)
        assert again.status_code == 200 and again.json()["id"] == answer.json()["id"], "a resend is the same record"
        assert httpx.get(f"http://127.0.0.1:{agent.status_port}/healthz", timeout=10).status_code == 200
    finally:
        assert agent.terminate() == 0, agent.log_tail()
    assert "No module named" not in agent.log_path.read_text() and "Traceback" not in agent.log_path.read_text()
