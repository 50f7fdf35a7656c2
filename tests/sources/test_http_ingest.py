"""HTTP ingest through the real server (contract §2): every endpoint and every answer.

Each refused request is followed by a check that the outbox holds exactly the
rows it held before (a dump of every table on a fresh connection): a refusal
stores nothing, and a 409 stores nothing but the conflicting version kept aside.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agent.simulators import _server
from agent.simulators.receiver import create_app as create_receiver
from tests.helpers import free_port, make_movement, make_sale
from tests.sources.conftest import (
    DESTINATION,
    RunningAgent,
    agent_config,
    running_agent,
)

MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory):
    """One agent for the many refusal cases: a refusal stores nothing, so they cannot disturb each other."""
    async with running_agent(agent_config(tmp_path_factory.mktemp("shared"))) as run:
        await run.client.post("/v1/sales", json=make_sale(100))  # something stored already
        yield run


def _locs(body: dict[str, Any]) -> list[list[Any]]:
    return [d["loc"] for d in body["details"]]


# ----------------------------------------------------------------- 201 / 200


async def test_sale_is_stored_with_id_key_seq(start_agent):
    async with start_agent() as run:
        response = await run.client.post("/v1/sales", json=make_sale(1))
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {"id", "key", "seq", "duplicate"}
        assert body["key"] == "sale:kassa-1:1"
        assert body["duplicate"] is False
        assert isinstance(body["seq"], int) and body["seq"] >= 1
        assert len(body["id"]) >= 26

        second = await run.client.post("/v1/sales", json=make_sale(2))
        assert second.status_code == 201
        assert second.json()["seq"] > body["seq"]
        assert second.json()["id"] != body["id"]


async def test_identical_resend_is_a_duplicate_with_the_same_id_and_seq(start_agent):
    async with start_agent() as run:
        first = (await run.client.post("/v1/sales", json=make_sale(7))).json()
        before = run.dump()
        # The same content spelled differently: numbers as strings, keys reordered.
        same = make_sale(7, total="31.8", payments=[{"amount": 31.80, "method": "card"}])
        same["lines"] = [
            {"vat_rate": "12", "unit_price": 15.9, "quantity": "2.000", "name": "Mjölk 1,5%", "sku": "7310865004703"}
        ]
        again = await run.client.post("/v1/sales", content=json.dumps(dict(reversed(list(same.items())))), headers=JSON)
        assert again.status_code == 200
        assert again.json() == {**first, "duplicate": True}
        assert run.dump() == before


async def test_stock_movement_endpoint(start_agent):
    async with start_agent() as run:
        response = await run.client.post("/v1/stock-movements", json=make_movement(1, note="pall från Arla"))
        assert response.status_code == 201
        assert response.json()["key"] == "stock_movement:kassa-1:d-1"
        again = await run.client.post("/v1/stock-movements", json=make_movement(1, note="pall från Arla"))
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
        assert again.json()["id"] == response.json()["id"]


async def test_content_type_with_charset_is_json(start_agent):
    async with start_agent() as run:
        response = await run.client.post(
            "/v1/sales", content=json.dumps(make_sale(1)), headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert response.status_code == 201


# ------------------------------------------------------------------------ 409


async def test_conflict_keeps_the_original_and_sets_the_other_aside(start_agent):
    async with start_agent() as run:
        original = (await run.client.post("/v1/sales", json=make_sale(5))).json()
        before = run.dump()
        changed = make_sale(5, price="16.90")
        response = await run.client.post("/v1/sales", json=changed)
        assert response.status_code == 409
        assert response.json() == {"error": "conflict", "key": "sale:kassa-1:5", "id": original["id"]}
        assert run.dump(exclude=("conflicts",)) == before

        stored = (await run.client.get("/v1/records/sale:kassa-1:5")).json()
        assert stored["record"]["data"]["total"] == "31.80"
        assert stored["record"]["id"] == original["id"]
        assert stored["conflicts"] == 1
        with sqlite3.connect(run.db) as conn:
            kept = conn.execute("SELECT key, stored_id, data FROM conflicts").fetchall()
        assert len(kept) == 1
        assert kept[0][:2] == ("sale:kassa-1:5", original["id"])
        assert json.loads(kept[0][2])["total"] == "33.80"


# ------------------------------------------------------------------------ 401


async def test_token_required_when_configured(start_agent):
    async with start_agent(token="s3cret-till-token") as run:
        before = run.dump()
        missing = await run.client.post("/v1/sales", json=make_sale(1))
        wrong = await run.client.post(
            "/v1/sales", json=make_sale(1), headers={"Authorization": "Bearer s3cret-till-tokem"}
        )
        prefix = await run.client.post("/v1/sales", json=make_sale(1), headers={"Authorization": "Bearer s3cret"})
        basic = await run.client.post(
            "/v1/sales", json=make_sale(1), headers={"Authorization": "Basic s3cret-till-token"}
        )
        for refused in (missing, wrong, prefix, basic):
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
        batch = await run.client.post("/v1/batch", json={"sales": [make_sale(2)]})
        assert batch.status_code == 401
        lookup = await run.client.get("/v1/records/sale:kassa-1:1")
        assert lookup.status_code == 401
        assert run.dump() == before

        right = {"Authorization": "Bearer s3cret-till-token"}
        ok = await run.client.post("/v1/sales", json=make_sale(1), headers=right)
        assert ok.status_code == 201
        found = await run.client.get("/v1/records/sale:kassa-1:1", headers=right)
        assert found.status_code == 200


async def test_token_checked_before_the_body_is_judged(start_agent):
    async with start_agent(token="s3cret") as run:
        response = await run.client.post("/v1/sales", content=b"not json", headers={"Content-Type": "text/plain"})
        assert response.status_code == 401


# ------------------------------------------------------------------------ 413


async def test_body_over_one_mib_is_refused(start_agent):
    async with start_agent() as run:
        before = run.dump()
        sale = make_sale(1)
        padding = "x" * (2 * MIB)
        body = json.dumps({**sale, "lines": [{**sale["lines"][0], "name": padding}]}).encode()
        response = await run.client.post("/v1/sales", content=body, headers=JSON)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert run.dump() == before


def _raw_request(port: int, head: bytes, body_chunks: list[bytes], *, finish: bool) -> bytes:
    """Send a request by hand and return the answer's first bytes.

    With ``finish=False`` the chunked body is never terminated: only a server
    that enforces the limit while reading can answer at all.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if finish:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


async def test_chunked_body_over_the_limit_is_refused_while_reading(start_agent):
    import asyncio

    async with start_agent() as run:
        before = run.dump()
        head = (
            b"POST /v1/sales HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunks = [b"[" + b" " * (64 * 1024 - 1)] + [b" " * (64 * 1024)] * 20  # 1.3 MiB, never finished
        answer = await asyncio.to_thread(_raw_request, run.agent.ingest_port, head, chunks, finish=False)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert run.dump() == before


async def test_declared_length_over_the_limit_is_refused_before_reading(start_agent):
    import asyncio

    async with start_agent() as run:
        head = (
            b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (2 * MIB)
        )

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", run.agent.ingest_port), timeout=10) as sock:
                sock.sendall(head + b"{")  # one byte of the promised 2 MiB
                return sock.recv(65536)

        before = run.dump()
        answer = await asyncio.to_thread(send)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert run.dump() == before


# ------------------------------------------------------------------------ 415


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonx", None])
async def test_wrong_content_type(shared: RunningAgent, content_type):
    run = shared
    before = run.dump()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await run.client.post("/v1/sales", content=json.dumps(make_sale(1)), headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert run.dump() == before


# ------------------------------------------------------------------------ 422


def _sale_with_line(**line: Any) -> dict[str, Any]:
    sale = make_sale(1)
    sale["lines"] = [{**sale["lines"][0], **line}]
    return sale


def _without(field: str) -> dict[str, Any]:
    sale = make_sale(1)
    del sale[field]
    return sale


INVALID: dict[str, tuple[str, bytes | dict[str, Any], list[Any]]] = {
    "malformed JSON": ("/v1/sales", b'{"till_id": "kassa-1", "receipt_no": 1,', ["body"]),
    "not UTF-8": ("/v1/sales", b'{"till_id": "kassa-\xe4"}', ["body"]),
    "NaN": ("/v1/sales", json.dumps(make_sale(1)).replace('"31.80"', "NaN", 1).encode(), ["body"]),
    "duplicate JSON key": (
        "/v1/sales",
        json.dumps(make_sale(1))[:-1].encode() + b', "total": "99.00"}',
        ["body", "total"],
    ),
    "receipt_no a string": ("/v1/sales", make_sale(1, receipt_no="abc"), ["receipt_no"]),
    "receipt_no a boolean": ("/v1/sales", make_sale(1, receipt_no=True), ["receipt_no"]),
    "receipt_no negative": ("/v1/sales", make_sale(-5), ["receipt_no"]),
    "receipt_no zero": ("/v1/sales", make_sale(0), ["receipt_no"]),
    "receipt_no a fraction": ("/v1/sales", make_sale(1, receipt_no=1.5), ["receipt_no"]),
    "lines not a list": ("/v1/sales", make_sale(1, lines="7310865004703"), ["lines"]),
    "no lines": ("/v1/sales", make_sale(1, lines=[]), ["lines"]),
    "quantity a boolean": ("/v1/sales", _sale_with_line(quantity=True), ["lines", 0, "quantity"]),
    "quantity zero": ("/v1/sales", _sale_with_line(quantity=0), ["lines", 0, "quantity"]),
    "unit_price negative": ("/v1/sales", _sale_with_line(unit_price="-1.00"), ["lines", 0, "unit_price"]),
    "vat_rate 25.5": ("/v1/sales", _sale_with_line(vat_rate=25.5), ["lines", 0, "vat_rate"]),
    "missing total": ("/v1/sales", _without("total"), ["total"]),
    "missing till_id": ("/v1/sales", _without("till_id"), ["till_id"]),
    "missing payments": ("/v1/sales", _without("payments"), ["payments"]),
    "total off by one öre": (
        "/v1/sales",
        make_sale(1, total="31.81", payments=[{"method": "card", "amount": "31.81"}]),
        ["total"],
    ),
    "payments short by one öre": (
        "/v1/sales",
        make_sale(1, payments=[{"method": "card", "amount": "31.79"}]),
        ["payments"],
    ),
    "amount with three decimals": ("/v1/sales", make_sale(1, total="31.800001"), ["total"]),
    "occurred_at without offset": ("/v1/sales", make_sale(1, occurred_at="2026-11-26T14:59:01"), ["occurred_at"]),
    "unknown field": ("/v1/sales", make_sale(1, totl="31.80"), ["totl"]),
    "fees on a return": (
        "/v1/sales",
        make_sale(
            1,
            kind="return",
            lines=[{"sku": "a", "quantity": -1, "unit_price": "10.00", "vat_rate": 25}],
            fees=[{"role": "shipping", "amount": "0.00", "vat_rate": 25}],
            total="-10.00",
            payments=[{"method": "card", "amount": "-10.00"}],
        ),
        ["fees"],
    ),
    "unicode till_id": ("/v1/sales", make_sale(1, till_id="kassa-ä"), ["till_id"]),
    "SQL-looking till_id": ("/v1/sales", make_sale(1, till_id="1'; DROP TABLE records;--"), ["till_id"]),
    "body an array": ("/v1/sales", b"[]", []),
    "movement delta zero": ("/v1/stock-movements", make_movement(1, delta=0), ["delta"]),
    "movement reason unknown": ("/v1/stock-movements", make_movement(1, reason="theft"), ["reason"]),
    "movement note too long": ("/v1/stock-movements", make_movement(1, note="n" * 501), ["note"]),
    "batch not an object": ("/v1/batch", b'"sales"', ["body"]),
    "batch unknown list": ("/v1/batch", {"sales": [], "receipts": [make_sale(1)]}, ["receipts"]),
    "batch empty": ("/v1/batch", {"sales": [], "stock_movements": []}, ["body"]),
}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_input_is_422_naming_the_field_and_stores_nothing(shared: RunningAgent, case):
    path, body, loc = INVALID[case]
    run = shared
    before = run.dump()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await run.client.post(path, content=content, headers=JSON)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "validation"
    assert answer["details"], answer
    assert all(d["msg"] for d in answer["details"])
    assert loc in _locs(answer), answer
    assert run.dump() == before


async def test_unicode_and_sql_looking_strings_are_stored_verbatim(start_agent):
    name = "Robert'); DROP TABLE records;--"
    sku = 'Ölglas-🍺-"quoted"\\'
    async with start_agent() as run:
        sale = make_sale(1)
        sale["lines"] = [{**sale["lines"][0], "name": name, "sku": sku}]
        response = await run.client.post("/v1/sales", json=sale)
        assert response.status_code == 201
        note = "Smörgåstårta 🎂 «levererad» ; DELETE FROM records WHERE 1=1;"
        assert (await run.client.post("/v1/stock-movements", json=make_movement(1, note=note))).status_code == 201

        stored = (await run.client.get("/v1/records/sale:kassa-1:1")).json()["record"]["data"]["lines"][0]
        assert (stored["name"], stored["sku"]) == (name, sku)
        movement = (await run.client.get("/v1/records/stock_movement:kassa-1:d-1")).json()
        assert movement["record"]["data"]["note"] == note
        with sqlite3.connect(run.db) as conn:
            # sale + derived movement + movement: the table is intact and holds all three.
            assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 3
            data = json.loads(conn.execute("SELECT data FROM records WHERE key = 'sale:kassa-1:1'").fetchone()[0])
        assert data["lines"][0]["name"] == name


# ---------------------------------------------------------------------- batch


async def test_batch_all_stored_then_all_duplicates(start_agent):
    async with start_agent() as run:
        batch = {"sales": [make_sale(1), make_sale(2)], "stock_movements": [make_movement(1)]}
        response = await run.client.post("/v1/batch", json=batch)
        assert response.status_code == 201
        records = response.json()["records"]
        assert [r["key"] for r in records] == ["sale:kassa-1:1", "sale:kassa-1:2", "stock_movement:kassa-1:d-1"]
        assert all(r["duplicate"] is False for r in records)
        assert records[0]["seq"] < records[1]["seq"] < records[2]["seq"]

        again = await run.client.post("/v1/batch", json=batch)
        assert again.status_code == 200
        assert again.json()["records"] == [{**r, "duplicate": True} for r in records]

        mixed = await run.client.post("/v1/batch", json={"sales": [make_sale(2), make_sale(3)]})
        assert mixed.status_code == 201
        assert [r["duplicate"] for r in mixed.json()["records"]] == [True, False]


async def test_batch_with_one_invalid_record_stores_nothing(start_agent):
    async with start_agent() as run:
        before = run.dump()
        batch = {
            "sales": [make_sale(1), make_sale(2, total="31.81"), make_sale(3)],
            "stock_movements": [make_movement(1)],
        }
        response = await run.client.post("/v1/batch", json=batch)
        assert response.status_code == 422
        assert ["sales", 1, "total"] in _locs(response.json())
        assert run.dump() == before


async def test_batch_with_one_conflicting_record_stores_nothing(start_agent):
    async with start_agent() as run:
        stored = (await run.client.post("/v1/sales", json=make_sale(2))).json()
        before = run.dump()
        batch = {
            "sales": [make_sale(1), make_sale(2, price="1.00"), make_sale(3)],
            "stock_movements": [make_movement(1)],
        }
        response = await run.client.post("/v1/batch", json=batch)
        assert response.status_code == 409
        assert response.json() == {"error": "conflict", "key": "sale:kassa-1:2", "id": stored["id"]}
        assert run.dump(exclude=("conflicts",)) == before
        for key in ("sale:kassa-1:1", "sale:kassa-1:3", "stock_movement:kassa-1:d-1"):
            assert (await run.client.get(f"/v1/records/{key}")).status_code == 404


async def test_batch_with_the_same_key_twice_is_refused(start_agent):
    async with start_agent() as run:
        before = run.dump()
        response = await run.client.post("/v1/batch", json={"sales": [make_sale(1), make_sale(1)]})
        assert response.status_code == 422
        assert "sale:kassa-1:1" in json.dumps(response.json())
        assert run.dump() == before


# ------------------------------------------------------------ GET /v1/records


async def test_get_record_with_delivery_state_per_destination(start_agent):
    async with start_agent() as run:
        created = (await run.client.post("/v1/sales", json=make_sale(9))).json()
        response = await run.client.get("/v1/records/sale:kassa-1:9")
        assert response.status_code == 200
        body = response.json()
        record = body["record"]
        assert set(record) == {"id", "key", "type", "store_id", "seq", "received_at", "clock_synced", "data"}
        assert (record["id"], record["seq"], record["type"], record["store_id"]) == (
            created["id"],
            created["seq"],
            "sale",
            "store-001",
        )
        assert record["data"]["lines"][0]["quantity"] == "2.000"
        assert body["deliveries"] == {DESTINATION: "pending"}

        derived = await run.client.get("/v1/records/stock_movement:kassa-1:r9.0")
        assert derived.status_code == 200
        assert derived.json()["record"]["data"]["delta"] == "-2.000"
        assert derived.json()["record"]["data"]["reason"] == "sale"
        assert derived.json()["record"]["seq"] > created["seq"]


async def test_get_unknown_record_is_404(start_agent):
    async with start_agent() as run:
        response = await run.client.get("/v1/records/sale:kassa-1:404")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


async def test_get_record_shows_delivered_once_the_destination_acknowledged(tmp_path, start_agent):
    import asyncio

    async with (
        _server.serve(create_receiver(path="/in")) as receiver_url,
        start_agent(paused=False, destination_url=f"{receiver_url}/in") as run,
    ):
        await run.client.post("/v1/sales", json=make_sale(3))
        state = None
        for _ in range(200):  # at most ~10 s
            state = (await run.client.get("/v1/records/sale:kassa-1:3")).json()["deliveries"][DESTINATION]
            if state == "delivered":
                break
            await asyncio.sleep(0.05)
        assert state == "delivered"


# ---------------------------------------------------------------------- 503/507


async def test_shutting_down_answers_503_and_stores_nothing(start_agent):
    async with start_agent() as run:
        before = run.dump()
        run.agent.ingestor.closing = True
        for path, body in (("/v1/sales", make_sale(1)), ("/v1/batch", {"sales": [make_sale(2)]})):
            response = await run.client.post(path, json=body)
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
        assert run.dump() == before
        run.agent.ingestor.closing = False
        assert (await run.client.post("/v1/sales", json=make_sale(1))).status_code == 201


async def test_outbox_size_limit_answers_507_and_stores_nothing(start_agent):
    async with start_agent(max_bytes=MIB) as run:
        accepted: list[str] = []
        response = None
        for round_no in range(40):  # the 1 MiB limit is reached after a few hundred sales
            batch = {"sales": [make_sale(round_no * 100 + i + 1) for i in range(100)]}
            response = await run.client.post("/v1/batch", json=batch)
            if response.status_code != 201:
                break
            accepted += [r["key"] for r in response.json()["records"]]
        assert response is not None and response.status_code == 507, response.text if response else None
        assert response.json()["error"] == "storage_full"
        assert accepted

        before = run.dump()
        single = await run.client.post("/v1/sales", json=make_sale(99_999))
        assert single.status_code == 507
        assert single.json()["error"] == "storage_full"
        assert run.dump() == before
        # Stored records stay readable, and a till resending one is still told it is safe.
        assert (await run.client.get(f"/v1/records/{accepted[0]}")).status_code == 200
        assert (await run.client.post("/v1/sales", json=make_sale(1))).status_code == 200


# ------------------------------------------------------------- listen and LAN


def _write_config(tmp_path: Path, listen: str, token_file: Path | None = None) -> Path:
    lines = [
        'store_id = "store-001"',
        f'data_dir = "{tmp_path / "data"}"',
        "[ingest]",
        f'listen = "{listen}"',
    ]
    if token_file is not None:
        lines.append(f'token_file = "{token_file}"')
    lines += ["[status]", f'listen = "127.0.0.1:{free_port()}"']
    path = tmp_path / "kassabro.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_non_loopback_listen_without_token_refuses_to_start(tmp_path):
    config = _write_config(tmp_path, f"0.0.0.0:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "ingest.token_file" in result.stderr
    assert not (tmp_path / "data" / "outbox.db").exists()


async def test_ingest_across_the_lan_with_a_token(start_agent):
    async with start_agent(listen="0.0.0.0:0", token="lan-token-123", ingest={"allow_plain_http": True}) as run:
        assert run.agent.ingest_server is not None
        assert run.agent.ingest_server.sock.getsockname()[0] == "0.0.0.0"
        refused = await run.client.post("/v1/sales", json=make_sale(1))
        assert refused.status_code == 401
        ok = await run.client.post("/v1/sales", json=make_sale(1), headers={"Authorization": "Bearer lan-token-123"})
        assert ok.status_code == 201
