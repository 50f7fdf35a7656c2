"""The spool directory, exactly contract §2's protocol, with the real SpoolSource.

A writer writes ``NAME.tmp``, fsyncs, and renames it to ``NAME.json`` in
``incoming/``. The agent takes ``*.json`` in name order, commits each file in
one transaction, and only then moves it to ``done/``; a file it cannot accept
goes to ``rejected/`` with ``NAME.error.txt``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio

from agent.ingest import Ingestor
from agent.outbox.service import Outbox
from agent.outbox.store import StorageFull
from agent.records import parse_record
from agent.sources.spool import RESCAN_S, SpoolSource
from tests.helpers import eventually, make_movement, make_sale, stored_keys

MIB = 1024 * 1024


@dataclass
class Spool:
    outbox: Outbox
    ingestor: Ingestor
    source: SpoolSource
    db: Path

    @property
    def incoming(self) -> Path:
        return self.source.incoming

    def write(self, name: str, payload: dict[str, Any] | bytes) -> Path:
        """Write as the protocol asks: another name, fsync, rename to NAME.json."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        tmp = self.incoming / f"{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final = self.incoming / f"{name}.json"
        os.replace(tmp, final)
        return final

    def names(self, folder: str) -> list[str]:
        return sorted(p.name for p in (self.source.root / folder).iterdir())


@pytest_asyncio.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    db = tmp_path / "data" / "outbox.db"
    outbox = Outbox(db, store_id="store-001", max_bytes=MIB)
    await outbox.start()
    ingestor = Ingestor(outbox)
    source = SpoolSource(tmp_path / "spool", ingestor, retry_s=0.1)  # a full outbox is retried at once
    source.prepare()
    try:
        yield Spool(outbox, ingestor, source, db)
    finally:
        if source._task is not None:  # started by the test
            await source.stop()
        await outbox.close()


def _seq(db: Path, key: str) -> int:
    return stored_keys(db)[key][1]


async def test_files_are_taken_in_name_order(spool: Spool):
    spool.write("002", {"sales": [make_sale(2)]})
    spool.write("010", {"stock_movements": [make_movement(10)]})
    spool.write("001", {"sales": [make_sale(1)], "stock_movements": [make_movement(1)]})
    await spool.source.scan_once()
    assert spool.names("done") == ["001.json", "002.json", "010.json"]
    assert spool.names("incoming") == []
    seqs = [
        _seq(spool.db, k)
        for k in ("sale:kassa-1:1", "stock_movement:kassa-1:d-1", "sale:kassa-1:2", "stock_movement:kassa-1:d-10")
    ]
    assert seqs == sorted(seqs)


async def test_name_order_decides_which_of_two_versions_is_the_original(spool: Spool):
    spool.write("b", {"sales": [make_sale(5, price="99.00")]})
    spool.write("a", {"sales": [make_sale(5)]})
    await spool.source.scan_once()
    assert spool.names("done") == ["a.json"]
    assert spool.names("rejected") == ["b.json", "b.json.error.txt"]
    error = (spool.source.rejected / "b.json.error.txt").read_text(encoding="utf-8")
    assert "conflict" in error and "sale:kassa-1:5" in error
    with sqlite3.connect(spool.db) as conn:
        assert (
            json.loads(conn.execute("SELECT data FROM records WHERE key='sale:kassa-1:5'").fetchone()[0])["total"]
            == "31.80"
        )


async def test_a_file_being_written_is_never_read(spool: Spool):
    half = json.dumps({"sales": [make_sale(3)]}).encode()[:40]
    being_written = spool.incoming / "003.json.tmp"
    being_written.write_bytes(half)
    other = spool.incoming / "004.partial"
    other.write_bytes(b"{")
    await spool.source.scan_once()
    assert spool.names("incoming") == ["003.json.tmp", "004.partial"]
    assert spool.names("rejected") == [] and spool.names("done") == []
    assert being_written.read_bytes() == half
    assert stored_keys(spool.db) == {}

    # The writer finishes and renames: now it is taken.
    being_written.write_bytes(json.dumps({"sales": [make_sale(3)]}).encode())
    os.replace(being_written, spool.incoming / "003.json")
    await spool.source.scan_once()
    assert spool.names("done") == ["003.json"]
    assert "sale:kassa-1:3" in stored_keys(spool.db)


class _DoneWatcher(threading.Thread):
    """Reads the outbox, on a connection of its own, the instant a file lands in done/.

    inotify reports the rename as it happens, so what this thread sees is what
    a crash at that instant would leave on disk.
    """

    IN_MOVED_TO = 0x80

    def __init__(self, folder: Path, db: Path):
        super().__init__(daemon=True)
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(0)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, os.fsencode(folder), self.IN_MOVED_TO) >= 0
        self.db = db
        self.keys_seen: dict[str, int] = {}

    def run(self) -> None:
        os.read(self.fd, 4096)  # blocks until the first file is moved in
        with sqlite3.connect(self.db) as conn:
            self.keys_seen = {k: 1 for (k,) in conn.execute("SELECT key FROM records")}
        os.close(self.fd)


async def test_accepted_file_moves_to_done_only_after_its_commit(spool: Spool):
    watcher = _DoneWatcher(spool.source.done, spool.db)
    watcher.start()
    batch = {"sales": [make_sale(n) for n in range(1, 51)], "stock_movements": [make_movement(1)]}
    spool.write("batch-0001", batch)
    await spool.source.scan_once()
    await asyncio.to_thread(watcher.join, 10)
    assert not watcher.is_alive()
    expected = {f"sale:kassa-1:{n}" for n in range(1, 51)} | {"stock_movement:kassa-1:d-1"}
    assert expected <= set(watcher.keys_seen)
    assert spool.names("done") == ["batch-0001.json"]


async def test_invalid_file_is_rejected_with_an_error_naming_the_field(spool: Spool):
    spool.write("bad", {"sales": [make_sale(1), make_sale(2, total="31.81")]})
    spool.write("broken", b'{"sales": [')
    await spool.source.scan_once()
    assert spool.names("rejected") == ["bad.json", "bad.json.error.txt", "broken.json", "broken.json.error.txt"]
    assert spool.names("incoming") == [] and spool.names("done") == []
    error = (spool.source.rejected / "bad.json.error.txt").read_text(encoding="utf-8")
    assert "nothing in it was stored" in error
    details = json.loads(error[error.index("{") :])["details"]
    assert ["sales", 1, "total"] in [d["loc"] for d in details]
    assert "malformed JSON" in (spool.source.rejected / "broken.json.error.txt").read_text(encoding="utf-8")
    assert stored_keys(spool.db) == {}  # all or nothing: sale 1 was valid, but not stored


async def test_crash_between_commit_and_move_finds_duplicates(spool: Spool, tmp_path: Path):
    path = spool.write("0007", {"sales": [make_sale(7), make_sale(8)], "stock_movements": [make_movement(7)]})
    # What the source does before a crash: the commit, but not the move.
    answer = await spool.ingestor.batch(path.read_bytes())
    assert answer.status == 201
    before = stored_keys(spool.db)
    assert len(before) == 5  # two sales, their derived movements, one movement

    restarted = SpoolSource(spool.source.root, Ingestor(spool.outbox))
    restarted.prepare()
    await restarted.scan_once()
    assert spool.names("done") == ["0007.json"]
    assert spool.names("incoming") == [] and spool.names("rejected") == []
    assert stored_keys(spool.db) == before  # the same ids and seqs: duplicates, not new records


async def _fill_outbox(outbox: Outbox) -> int:
    """Store filler movements until the 1 MiB limit refuses; returns how many were stored."""
    stored = 0
    for round_no in range(50):
        records = [
            parse_record("stock_movement", make_movement(round_no * 200 + i, till_id="filler", note="n" * 500))
            for i in range(200)
        ]
        try:
            await outbox.enqueue(records)
        except StorageFull:
            return stored
        stored += len(records)
    raise AssertionError("the outbox never filled up")


async def test_storage_full_leaves_the_file_waiting_until_space_returns(spool: Spool):
    assert await _fill_outbox(spool.outbox) > 0
    spool.source.start()
    spool.write("0001", {"sales": [make_sale(1)]})
    await asyncio.sleep(0.5)
    assert spool.names("incoming") == ["0001.json"]
    assert spool.names("done") == [] and spool.names("rejected") == []
    assert "sale:kassa-1:1" not in stored_keys(spool.db)

    # Space returns (as when pruning frees pages); the source takes the file on its own.
    await spool.outbox.call(lambda s: s.conn.execute("DELETE FROM records WHERE key LIKE 'stock_movement:filler:%'"))
    await eventually(lambda: spool.names("done") == ["0001.json"], timeout=15)
    assert "sale:kassa-1:1" in stored_keys(spool.db)


async def test_inotify_wakes_the_source_without_waiting_for_the_rescan(spool: Spool):
    spool.write("0001", {"sales": [make_sale(1)]})
    spool.source.start()
    await eventually(lambda: spool.names("done") == ["0001.json"], timeout=5)
    # The first scan is over; the source now sleeps up to RESCAN_S unless woken.
    await asyncio.sleep(0.2)
    spool.write("0002", {"sales": [make_sale(2)]})
    await eventually(lambda: "0002.json" in spool.names("done"), timeout=RESCAN_S / 6)
    assert "sale:kassa-1:2" in stored_keys(spool.db)
