"""The generic receiver behaves as we ask integrators' backends to behave (contract §3)."""

from __future__ import annotations

from agent.simulators import receiver


def body(batch_id: str, *ids: str) -> dict:
    return {"store_id": "s", "batch_id": batch_id, "records": [{"id": i} for i in ids]}


async def test_the_token_is_required_when_configured(serve_sim):
    async with serve_sim(receiver.create_app(token="t0k")) as sim:
        headers = {"Idempotency-Key": "b1"}
        assert (await sim.http.post("/ingest", json=body("b1", "r1"), headers=headers)).status_code == 401
        wrong = headers | {"Authorization": "Bearer nope"}
        assert (await sim.http.post("/ingest", json=body("b1", "r1"), headers=wrong)).status_code == 401
        right = headers | {"Authorization": "Bearer t0k"}
        assert (await sim.http.post("/ingest", json=body("b1", "r1"), headers=right)).status_code == 200
        assert len((await sim.ledger())["records"]) == 1


async def test_the_idempotency_key_must_match_the_batch_and_its_body(serve_sim):
    async with serve_sim(receiver.create_app(path="/hook")) as sim:
        missing = await sim.http.post("/hook", json=body("b1", "r1"))
        assert missing.status_code == 400 and "Idempotency-Key" in missing.json()["error"]
        other = await sim.http.post("/hook", json=body("b1", "r1"), headers={"Idempotency-Key": "b2"})
        assert other.status_code == 400
        first = await sim.http.post("/hook", json=body("b1", "r1"), headers={"Idempotency-Key": "b1"})
        again = await sim.http.post("/hook", json=body("b1", "r1"), headers={"Idempotency-Key": "b1"})
        changed = await sim.http.post("/hook", json=body("b1", "r1", "r2"), headers={"Idempotency-Key": "b1"})
        assert first.json() == again.json() and again.status_code == 200
        assert changed.status_code == 422
        ledger = await sim.ledger()
    assert [r["id"] for r in ledger["records"]] == ["r1"]
    assert (ledger["batches"], ledger["idempotent_replays"], ledger["duplicates"]) == (1, 1, 1)


async def test_a_malformed_body_names_the_field(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        answer = await sim.http.post(
            "/ingest", json={"store_id": "s", "batch_id": "b"}, headers={"Idempotency-Key": "b"}
        )
        assert answer.status_code == 400 and "records" in answer.json()["error"]
        answer = await sim.http.post(
            "/ingest", json={"store_id": "s", "batch_id": "b", "records": [{}]}, headers={"Idempotency-Key": "b"}
        )
        assert "records[0].id" in answer.json()["error"]


async def test_the_ledger_can_be_emptied(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.http.post("/ingest", json=body("b1", "r1"), headers={"Idempotency-Key": "b1"})
        await sim.http.delete("/_ledger")
        assert (await sim.ledger())["records"] == []
