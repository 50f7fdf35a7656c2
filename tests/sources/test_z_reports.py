"""Z-reports and gift cards through every HTTP door of a real agent, the spool, and to destinations.

The same record rules whichever way a record comes in (contract §1, §2): a
Z-report is stored by ``POST /v1/z-reports``, in a batch's ``z_reports`` and in
a spool file's ``z_reports``; a gift-card line not at VAT rate 0 is refused with
422 naming the field and nothing is stored; an ``http`` destination listing
``z_report`` in ``types`` receives them, one without it does not.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.config import ConfigError, build_config
from agent.simulators._server import ServerThread
from agent.simulators.receiver import create_app as create_receiver
from tests.helpers import make_sale, make_z_report
from tests.sources.conftest import agent_config, running_agent


def gift_card_sale(n: int, vat_rate: int) -> dict[str, Any]:
    return make_sale(
        n,
        lines=[
            {"sku": "presentkort", "name": "Presentkort", "quantity": 1, "unit_price": "500.00", "vat_rate": vat_rate}
        ],
        total="500.00",
        payments=[{"method": "card", "amount": "500.00"}],
    )


async def test_a_z_report_is_stored_and_read_back(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path)) as run:
        answer = await run.client.post("/v1/z-reports", json=make_z_report(245, 1001, 1012))
        assert answer.status_code == 201, answer.text
        assert answer.json()["key"] == "z_report:kassa-1:245"
        again = await run.client.post("/v1/z-reports", json=make_z_report(245, 1001, 1012))
        assert again.status_code == 200 and again.json()["duplicate"] is True
        stored = await run.client.get("/v1/records/z_report:kassa-1:245")
        assert stored.status_code == 200
        assert stored.json()["record"]["type"] == "z_report"
        assert stored.json()["record"]["data"]["receipt_count"] == 12


async def test_an_invalid_z_report_or_gift_card_line_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path)) as run:
        await run.client.post("/v1/sales", json=make_sale(1))
        before = run.dump()
        bad_z = await run.client.post("/v1/z-reports", json=make_z_report(1, 5, 4))
        assert bad_z.status_code == 422
        assert bad_z.json()["details"][0]["loc"] == ["last_receipt_no"]
        bad_gift = await run.client.post("/v1/sales", json=gift_card_sale(2, 25))
        assert bad_gift.status_code == 422
        assert bad_gift.json()["details"] == [
            {
                "loc": ["lines", 0, "vat_rate"],
                "msg": "the line sells a gift card (sku 'presentkort'): its vat_rate must be 0, got 25",
            }
        ]
        bad_batch = await run.client.post(
            "/v1/batch", json={"sales": [make_sale(3)], "z_reports": [make_z_report(2, 1, 3, receipt_count=9)]}
        )
        assert bad_batch.status_code == 422
        assert bad_batch.json()["details"][0]["loc"] == ["z_reports", 0, "receipt_count"]
        assert run.dump() == before
        good_gift = await run.client.post("/v1/sales", json=gift_card_sale(2, 0))
        assert good_gift.status_code == 201


async def test_a_batch_holds_all_three_record_types(tmp_path: Path) -> None:
    async with running_agent(agent_config(tmp_path)) as run:
        body = {"sales": [make_sale(1)], "stock_movements": [], "z_reports": [make_z_report(1, 1, 1)]}
        answer = await run.client.post("/v1/batch", json=body)
        assert answer.status_code == 201, answer.text
        assert [r["key"] for r in answer.json()["records"]] == ["sale:kassa-1:1", "z_report:kassa-1:1"]


async def test_a_spool_file_with_z_reports_is_taken(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    async with running_agent(agent_config(tmp_path, spool_dir=spool)) as run:
        tmp = spool / "incoming" / "day.tmp"
        tmp.write_text(json.dumps({"sales": [make_sale(1)], "z_reports": [make_z_report(7, 1, 1)]}))
        os.replace(tmp, spool / "incoming" / "day.json")
        for _ in range(250):  # bounded: inotify wakes the spool at once
            if (spool / "done" / "day.json").exists():
                break
            await asyncio.sleep(0.02)
        assert (spool / "done" / "day.json").exists()
        assert (await run.client.get("/v1/records/z_report:kassa-1:7")).status_code == 200


async def test_http_destinations_get_z_reports_only_when_they_list_them(tmp_path: Path) -> None:
    receivers = [ServerThread(create_receiver()), ServerThread(create_receiver())]
    with_z, without_z = (r.start() for r in receivers)
    try:
        config = build_config(
            {
                "store_id": "store-001",
                "data_dir": str(tmp_path / "data"),
                "ingest": {"listen": "127.0.0.1:0"},
                "status": {"listen": "127.0.0.1:0"},
                "destinations": [
                    {"name": "chain", "kind": "http", "url": with_z + "/ingest", "types": ["sale", "z_report"]},
                    {"name": "plain", "kind": "http", "url": without_z + "/ingest"},
                ],
            }
        )
        assert config.destinations[1].types == ["sale", "stock_movement"]  # the default leaves Z-reports out
        async with running_agent(config, paused=False) as run:
            await run.client.post("/v1/batch", json={"sales": [make_sale(1)], "z_reports": [make_z_report(1, 1, 1)]})
            for _ in range(250):
                run.agent._status_cache = None
                status = await run.agent.status()
                if all(d["pending"] == 0 for d in status["destinations"]):
                    break
                await asyncio.sleep(0.02)
            assert all(d["pending"] == 0 for d in status["destinations"]), status["destinations"]
        ledgers = [httpx.get(url + "/_ledger").json()["records"] for url in (with_z, without_z)]
        assert sorted(r["type"] for r in ledgers[0]) == ["sale", "z_report"]
        z = next(r for r in ledgers[0] if r["type"] == "z_report")
        assert z["key"] == "z_report:kassa-1:1" and z["data"]["z_no"] == 1 and z["store_id"] == "store-001"
        assert sorted(r["type"] for r in ledgers[1]) == ["sale", "stock_movement"]
    finally:
        for receiver in receivers:
            receiver.stop()


@pytest.mark.parametrize("kind", ["hogia", "sharespine"])
def test_hogia_and_sharespine_take_no_z_reports(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(
            {
                "store_id": "s",
                "destinations": [
                    {"name": "x", "kind": kind, "base_url": "http://127.0.0.1:9", "types": ["sale", "z_report"]}
                ],
            },
            check_secrets=False,
        )
    assert ("destinations[0].types", f"a {kind} destination takes no z_report records (no use is documented)") in (
        caught.value.problems
    )
