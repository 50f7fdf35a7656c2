"""Start-up skips the full integrity check only for a file left by a clean close.

A million-record outbox takes seconds to ``quick_check``; an agent that was
stopped cleanly and finds its file untouched checks it after the ports open
instead. Anything else (a crash, a power cut, a file changed since) gets the
full check first, and a damaged file is moved aside.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.outbox.service import Outbox
from agent.outbox.store import OutboxStore
from agent.records import parse_record

SALE = {
    "till_id": "kassa-1",
    "receipt_no": 1,
    "occurred_at": "2026-11-26T14:00:00+01:00",
    "lines": [{"sku": "A", "quantity": 1, "unit_price": "10.00", "vat_rate": 25}],
    "total": "10.00",
    "payments": [{"method": "card", "amount": "10.00"}],
}


def filled(path: Path, count: int = 300) -> OutboxStore:
    """An open outbox holding ``count`` one-sale requests, group-committed 100 at a time as under load.

    (A commit per sale would be ``count`` fsyncs: 12 s for 2,000 on a busy disk, for the same rows.)
    """
    store = OutboxStore.open(path, store_id="s")
    for first in range(1, count + 1, 100):
        requests = [[parse_record("sale", dict(SALE, receipt_no=n))] for n in range(first, min(first + 100, count + 1))]
        assert all(isinstance(result, list) for result in store.enqueue_many(requests))
    return store


def damage(path: Path) -> None:
    """Overwrite pages in the middle of the file, keeping its size and times."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        f.write(b"\xde\xad\xbe\xef" * 2048)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_clean_close_lets_the_next_start_defer_its_check(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    filled(path).close()
    assert (tmp_path / "outbox.db.clean").exists()
    store = OutboxStore.open(path, store_id="s")
    try:
        assert store.check_deferred
        assert not (tmp_path / "outbox.db.clean").exists(), "an open file must not keep the note"
        assert store.outbox_stats()["records"] == 300
    finally:
        store.close()


def test_a_crash_leaves_no_note_and_the_next_start_checks_first(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    filled(path).close()
    store = OutboxStore.open(path, store_id="s")
    store.enqueue([parse_record("sale", dict(SALE, receipt_no=999))])
    store.conn.close()  # killed: no clean close
    again = OutboxStore.open(path, store_id="s")
    try:
        assert not again.check_deferred
        assert again.get_record("sale:kassa-1:999") is not None
    finally:
        again.close()


def test_a_file_changed_since_the_clean_close_is_checked_and_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    filled(path).close()
    with open(path, "r+b") as f:  # changed (mtime moves): the note no longer vouches for it
        f.seek(path.stat().st_size // 2)
        f.write(b"\x00garbage" * 1024)
    store = OutboxStore.open(path, store_id="s")
    try:
        assert not store.check_deferred
        assert store.outbox_stats()["records"] == 0
        assert any("moved aside" in p for p in store.problems)
        assert list(tmp_path.glob("outbox.db.corrupt-*"))
    finally:
        store.close()


async def test_damage_behind_an_unchanged_identity_is_salvaged_by_the_deferred_check(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    filled(path, 2000).close()
    damage(path)
    box = Outbox(path, store_id="s")
    await box.start()
    try:
        assert box._deferred_check is not None
        await box._deferred_check
        stats = await box.outbox_stats()
        assert any("integrity check" in p and "moved aside" in p for p in stats["problems"])
        assert any("record(s) salvaged" in p for p in stats["problems"])
        assert box.last_salvage is not None and box.last_salvage.carried == stats["records"] > 0
    finally:
        await box.close()
    # The damaged file is kept aside; the live one is a fresh, healthy outbox with what could be read.
    assert list(tmp_path.glob("outbox.db.corrupt-*"))
    store = OutboxStore.open(path, store_id="s")
    try:
        assert store.quick_check() is None
        assert store.outbox_stats()["records"] > 0
    finally:
        store.close()
