"""``kassabro run`` SIGKILLed with a batch in flight: resent unchanged after restart, booked once."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.simulators import receiver
from agent.simulators._server import ServerThread
from tests.e2e.conftest import Recorder, assert_backend_ledger, stored
from tests.helpers import make_sale, wait_until

pytestmark = pytest.mark.slow


def open_batches(db: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT batch_id, size FROM batches WHERE state = 'open' ORDER BY first_seq").fetchall()
    finally:
        conn.close()


def test_sigkill_mid_batch_resends_the_same_batch_id_and_books_every_record_once(
    agent_process: Any, tmp_path: Path
) -> None:
    wire = Recorder(receiver.create_app())
    server = ServerThread(wire)
    url = server.start()
    try:
        http = httpx.Client(timeout=10)
        # The backend takes 3 s to answer, so the first batch is surely in flight.
        http.post(f"{url}/_faults", json={"slow_s": 3}).raise_for_status()
        agent = agent_process(
            f'[[destinations]]\nname = "backend"\nkind = "http"\nurl = "{url}/ingest"\n'
            "batch_max = 20\nbackoff_base_s = 0.1\nbackoff_cap_s = 1\ntimeout_s = 10\n"
        )
        agent.start()
        answer = http.post(
            f"{agent.ingest_url}/v1/batch", json={"sales": [make_sale(n) for n in range(1, 31)], "stock_movements": []}
        )
        assert answer.status_code == 201, answer.text

        wait_until(lambda: len(wire.hits) >= 1, 20, "the first batch on the wire")
        agent.kill()
        first = wire.hits[0]
        assert first.status is None, "the batch must still be unanswered when the agent dies"
        # The batch on the wire survived the kill with its id; the next one may be frozen behind it.
        assert open_batches(agent.db)[0] == (first.idempotency_key, 20)

        http.post(f"{url}/_faults", json={"slow_s": 0}).raise_for_status()
        box = stored(agent.db)
        assert len(box.rows) == 60  # 30 sales and a derived movement per line
        agent.start()

        def everything_booked() -> bool:
            return len(http.get(f"{url}/_ledger").json()["records"]) == len(box.rows)

        wait_until(everything_booked, 30, "every record at the backend")
        wait_until(lambda: open_batches(agent.db) == [], 10, "every batch acknowledged")
        assert agent.terminate() == 0

        after = wire.hits[1:]
        assert after[0].idempotency_key == first.idempotency_key, "the open batch goes first after restart"
        assert after[0].body_sha256 == first.body_sha256, "resent unchanged, byte for byte"
        keys = [h.idempotency_key for h in wire.hits]
        assert keys.count(first.idempotency_key) == 2 and len(set(keys)) == len(keys) - 1
        # The killed request is still sleeping in the backend; when it wakes it is
        # answered from the idempotency store, not booked again.
        wait_until(lambda: http.get(f"{url}/_ledger").json()["idempotent_replays"] == 1, 10, "one idempotent replay")
        book = http.get(f"{url}/_ledger").json()
        assert_backend_ledger(book, box)
    finally:
        server.stop()
