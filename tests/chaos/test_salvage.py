"""A page of a real outbox overwritten on the card: the agent starts at once, salvages, keeps delivering.

The promise (issue 16): the ports open before any whole-file check; the
integrity check runs in the background; when it fails, every record that can
still be read is carried into a fresh outbox with the id it was given, the
damaged file is moved aside (never deleted), the problem shows on the status
API, and delivery goes on. A till posting meanwhile is answered.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from agent.outbox.store import OutboxStore
from agent.records import derive_movements, parse_record
from tests.chaos.conftest import AgentProcess
from tests.helpers import make_sale

SALES = 400


def _real_outbox(db: Path) -> dict[str, str]:
    """SALES sales and their movements, stored as the agent stores them; ``{key: id}``."""
    store = OutboxStore.open(db, store_id="store-001")
    try:
        store.register_destinations([("backend", "http", ["sale", "stock_movement"])])
        for first in range(1, SALES + 1, 50):
            records = []
            for n in range(first, first + 50):
                sale = parse_record("sale", make_sale(n))
                records += [sale, *derive_movements(sale)]  # type: ignore[arg-type]
            store.enqueue(records)
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        return {key: rid for key, rid in conn.execute("SELECT key, id FROM records")}
    finally:
        conn.close()


def _overwrite_a_records_page(db: Path) -> set[str]:
    """Garble one leaf page of the records table in the middle of the file; the keys it held."""
    data = db.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")  # the file's own page size (header bytes 16-17)
    pages = len(data) // page_size
    leaves = [
        number
        for number in range(1, pages)  # page 1 holds the file header and the schema
        if data[number * page_size] == 0x0D and b'"receipt_no"' in data[number * page_size : (number + 1) * page_size]
    ]
    assert len(leaves) > 10, "the outbox should hold many pages of records"
    victim = leaves[len(leaves) // 2]
    page = data[victim * page_size : (victim + 1) * page_size]
    held = {m.decode() for m in re.findall(rb"(?:sale|stock_movement):kassa-1:[0-9r.]+", page)}
    rng = random.Random(20261201)
    with db.open("r+b") as handle:
        handle.seek(victim * page_size)
        handle.write(bytes(rng.randrange(256) for _ in range(page_size)))
    return held


def _problems(agent: AgentProcess) -> list[str]:
    """The problems ``/api/status`` shows, in English."""
    status = httpx.get(f"http://127.0.0.1:{agent.status_port}/api/status", timeout=10).json()
    return [problem["text_en"] for problem in status["problems"]]


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_overwritten_page_is_salvaged_in_the_background_while_sales_go_on(agent_process, receiver: str):
    agent: AgentProcess = agent_process(destination_url=f"{receiver}/in")
    agent.db.parent.mkdir(parents=True)
    stored = _real_outbox(agent.db)
    assert len(stored) == SALES * 2
    lost_at_most = _overwrite_a_records_page(agent.db)
    assert lost_at_most, "the garbled page held records"
    Path(f"{agent.db}.clean").unlink(missing_ok=True)  # as a power cut leaves it: no clean-close note

    agent.start()
    agent.wait_ready(timeout=20)
    with httpx.Client(base_url=agent.base_url, timeout=30) as client:
        first = client.post("/v1/sales", json=make_sale(90_001))
        assert first.status_code == 201, first.text  # the till is answered, salvage or not

        assert _wait(lambda: any("record(s) salvaged" in p for p in _problems(agent)), timeout=90), agent.log_tail()
        problems = _problems(agent)
        later = client.post("/v1/sales", json=make_sale(90_002))
        assert later.status_code == 201, later.text
        assert client.get(f"/v1/records/{first.json()['key']}").status_code == 200

    aside = [p for p in agent.db.parent.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1, aside
    assert any(aside[0].name in p for p in problems), problems

    conn = sqlite3.connect(agent.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        now = {key: rid for key, rid in conn.execute("SELECT key, id FROM records")}
    finally:
        conn.close()
    missing = set(stored) - set(now)
    assert missing <= lost_at_most, (
        f"records lost that were not on the garbled page: {sorted(missing - lost_at_most)[:5]}"
    )
    assert {key: now[key] for key in stored if key in now} == {key: stored[key] for key in stored if key in now}
    assert {"sale:kassa-1:90001", "sale:kassa-1:90002"} <= set(now)

    # Delivery goes on: the backend receives the salvaged records and the new ones, by their ids.
    def delivered() -> set[str]:
        return {r["id"] for r in httpx.get(f"{receiver}/_ledger", timeout=10).json()["records"]}

    assert _wait(lambda: set(now.values()) <= delivered(), timeout=90), agent.log_tail()
