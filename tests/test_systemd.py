"""sd_notify against a real unix datagram socket, the watchdog loop, and log lines.

The socket stands in for systemd's notify socket exactly: the agent only ever
sees ``$NOTIFY_SOCKET`` and sends datagrams to it.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket at a file path, named in $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket in the abstract namespace, named ``@...``."""
    name = f"kassabro-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the socket now (bounded)."""
    sock.setblocking(False)
    got = []
    try:
        for _ in range(1000):
            got.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(2)
    return got


def test_ready_status_watchdog_stopping_arrive_exactly(notify_socket: socket.socket) -> None:
    assert systemd.ready() is True
    assert notify_socket.recv(4096) == b"READY=1\n"
    assert systemd.status("3 väntar, hogia offline sedan 14:02") is True
    assert notify_socket.recv(4096) == "STATUS=3 väntar, hogia offline sedan 14:02\n".encode()
    assert systemd.watchdog() is True
    assert notify_socket.recv(4096) == b"WATCHDOG=1\n"
    assert systemd.stopping() is True
    assert notify_socket.recv(4096) == b"STOPPING=1\n"
    assert drain(notify_socket) == []


def test_ready_with_status_is_one_datagram(notify_socket: socket.socket) -> None:
    systemd.ready("started")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=started\n"


def test_abstract_socket_name(abstract_socket: socket.socket) -> None:
    assert systemd.ready() is True
    assert abstract_socket.recv(4096) == b"READY=1\n"
    systemd.watchdog()
    assert abstract_socket.recv(4096) == b"WATCHDOG=1\n"


def test_status_line_never_spans_lines(notify_socket: socket.socket) -> None:
    systemd.status("first\nsecond")
    assert notify_socket.recv(4096) == b"STATUS=first second\n"


def test_bad_field_name_is_refused_by_name(notify_socket: socket.socket) -> None:
    with pytest.raises(ValueError, match="'ready'"):
        systemd.notify(ready=1)


def test_no_notify_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.status("x") is False
    assert systemd.watchdog() is False
    assert systemd.stopping() is False


def test_socket_nobody_listens_on_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.watchdog() is False


def test_watchdog_interval_is_half_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None, "another process's watchdog is not ours"
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "nonsense")
    assert systemd.watchdog_interval() is None


async def test_watchdog_loop_pings_only_while_probe_is_true(notify_socket: socket.socket) -> None:
    answers = [True, True, True, False, False, True, False]
    calls = 0
    done = asyncio.Event()

    async def probe() -> bool:
        nonlocal calls
        calls += 1
        if calls >= len(answers):
            done.set()
        return answers[min(calls, len(answers)) - 1]

    task = asyncio.create_task(systemd.watchdog_loop(probe, interval=0.01))
    await asyncio.wait_for(done.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert drain(notify_socket) == [b"WATCHDOG=1\n"] * answers.count(True)


async def test_watchdog_loop_skips_ping_when_probe_raises_or_hangs(notify_socket: socket.socket) -> None:
    calls = 0
    done = asyncio.Event()

    async def probe() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk I/O error")
        if calls == 2:
            await asyncio.sleep(3600)  # never answers: cancelled after one interval
        if calls >= 3:
            done.set()
        return True

    task = asyncio.create_task(systemd.watchdog_loop(probe, interval=0.05))
    await asyncio.wait_for(done.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert drain(notify_socket) == [b"WATCHDOG=1\n"]


async def test_watchdog_loop_returns_without_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    async def probe() -> bool:
        raise AssertionError("no watchdog armed: the probe must not run")

    await asyncio.wait_for(systemd.watchdog_loop(probe), timeout=5)


def test_format_status_names_offline_destinations() -> None:
    line = systemd.format_status(
        [
            {"name": "hogia", "state": "offline", "pending": 3, "last_success_at": None},
            {"name": "mqtt", "state": "online", "pending": 0},
            {"name": "sie", "state": "paused", "pending": 2},
        ]
    )
    assert line == "5 väntar, hogia offline, sie paused"
    assert systemd.format_status([{"name": "mqtt", "state": "online", "pending": 0}]) == "allt levererat"


def test_format_status_offline_since_local_time() -> None:
    line = systemd.format_status(
        [{"name": "hogia", "state": "offline", "pending": 1, "last_success_at": "2026-11-26T14:02:00"}]
    )
    assert line == "1 väntar, hogia offline sedan 14:02"


# --------------------------------------------------------------------------- logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_stderr_logging_one_line_with_fields(monkeypatch: pytest.MonkeyPatch, restore_root_logger: None) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = systemd.setup_logging("INFO")
    assert isinstance(handler, logging.StreamHandler)
    logger = logging.getLogger("agent.delivery")
    logger.debug("not shown at INFO")
    logger.warning("batch refused", extra={"destination": "hogia", "record_key": "sale:kassa-1:7", "batch_id": "b-1"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("send failed", extra={"destination": "http"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(
        "WARNING agent.delivery: batch refused [destination=hogia record_key=sale:kassa-1:7 batch_id=b-1]"
    )
    assert "send failed [destination=http] | Traceback" in lines[1]
    assert lines[1].endswith("RuntimeError: boom")


def test_setup_logging_twice_does_not_double_lines(monkeypatch: pytest.MonkeyPatch, restore_root_logger: None) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    systemd.setup_logging("INFO")
    systemd.setup_logging("INFO")
    logging.getLogger("agent").info("once")
    assert stream.getvalue().count("once") == 1


def test_setup_logging_refuses_unknown_level(restore_root_logger: None) -> None:
    with pytest.raises(ValueError, match="'LOUD'"):
        systemd.setup_logging("LOUD")


def test_stderr_into_journal_gets_priority_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_root_logger: None
) -> None:
    """When stderr is the journal stream, lines carry ``<N>`` so journald keeps the level."""
    with open(tmp_path / "stream", "w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(sys, "stderr", stream)
        handler = systemd.setup_logging("INFO", journal=False)
        logging.getLogger("agent.outbox").error("disk full", extra={"destination": "sie"})
        handler.flush()
        stream.seek(0)
        assert stream.read() == "<3>agent.outbox ERROR: disk full [destination=sie]\n"


def test_journal_fields_filter_maps_extra_to_journal_names() -> None:
    record = logging.LogRecord("agent", logging.INFO, __file__, 1, "sent", None, None)
    record.destination = "hogia"
    record.batch_id = "b-9"
    assert systemd.JournalFields().filter(record) is True
    assert record.DESTINATION == "hogia"
    assert record.BATCH_ID == "b-9"
    assert not hasattr(record, "RECORD_KEY")


def test_journal_handler_sends_structured_fields(restore_root_logger: None) -> None:
    """systemd-python's JournalHandler, with its send function capturing the fields."""
    journal = importlib.import_module("systemd.journal")  # the `journal` extra, installed for tests
    sent: list[dict[str, object]] = []

    def capture(MESSAGE: str, /, **fields: object) -> None:
        sent.append({"MESSAGE": MESSAGE, **fields})

    handler = systemd.journal_handler()
    assert isinstance(handler, journal.JournalHandler)
    handler.send = capture  # the transport only; formatting and fields are the real handler's
    logger = logging.getLogger("agent.test_journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused", extra={"destination": "hogia", "record_key": "sale:k:1", "batch_id": "b-2"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert len(sent) == 1
    fields = sent[0]
    assert fields["MESSAGE"] == "refused"
    assert fields["DESTINATION"] == "hogia"
    assert fields["RECORD_KEY"] == "sale:k:1"
    assert fields["BATCH_ID"] == "b-2"
    assert fields["SYSLOG_IDENTIFIER"] == "kassabro"
    assert fields["PRIORITY"] == "4"
