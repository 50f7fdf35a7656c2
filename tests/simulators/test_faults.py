"""The fault knobs, set over HTTP, as the chaos tests and a technician use them."""

from __future__ import annotations

import httpx
import pytest

from agent.simulators import hogia, receiver, sharespine


def body(batch_id: str, *ids: str) -> dict:
    return {"store_id": "s", "batch_id": batch_id, "records": [{"id": i, "type": "sale", "data": {}} for i in ids]}


async def post(sim, batch_id: str, *ids: str) -> httpx.Response:
    return await sim.http.post("/ingest", json=body(batch_id, *ids), headers={"Idempotency-Key": batch_id})


async def test_knobs_merge_count_down_and_reset(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        state = await sim.faults(throttle_next=2, retry_after_s=9)
        assert (state["throttle_next"], state["retry_after_s"], state["down"]) == (2, 9, "off")
        first, second, third = [await post(sim, f"b{n}", f"r{n}") for n in range(3)]
        assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
        assert first.headers["retry-after"] == "9"
        await sim.faults(fail_next=1, fail_status=504)
        assert (await post(sim, "b9", "r9")).status_code == 504
        state = (await sim.http.get("/_faults")).json()
        assert (state["faulted"], state["throttle_next"], state["fail_next"]) == (3, 0, 0)
        await sim.faults(down="503")
        assert (await post(sim, "b10", "r10")).status_code == 503
        assert (await sim.http.get("/_ledger")).status_code == 200  # never faulted
        state = (await sim.http.delete("/_faults")).json()
        assert state["down"] == "off"
        assert (await post(sim, "b10", "r10")).status_code == 200


async def test_a_bad_knob_is_refused_naming_it(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        answer = await sim.http.post("/_faults", json={"throtle_next": 1, "slow_s": -1})
        assert answer.status_code == 422
        locs = {tuple(d["loc"]) for d in answer.json()["details"]}
        assert locs == {("throtle_next",), ("slow_s",)}
        assert (await sim.http.get("/_faults")).json()["slow_s"] == 0


async def test_down_close_drops_the_connection(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(down="close")
        with pytest.raises(httpx.RemoteProtocolError):
            await post(sim, "b1", "r1")


@pytest.mark.parametrize("mode", ["502", "drop"])
async def test_a_lost_answer_is_committed_all_the_same(serve_sim, mode):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(lose_answer_next=1, lose_answer_mode=mode)
        try:
            status = (await post(sim, "b1", "r1")).status_code
        except httpx.RemoteProtocolError:
            status = None
        assert status == (502 if mode == "502" else None)
        assert [r["id"] for r in (await sim.ledger())["records"]] == ["r1"]
        replay = await post(sim, "b1", "r1")
        assert replay.status_code == 200
        assert (await sim.ledger())["idempotent_replays"] == 1


@pytest.mark.parametrize("make_app", [hogia.create_app, sharespine.create_app])
async def test_every_simulator_has_the_knobs(serve_sim, make_app):
    async with serve_sim(make_app()) as sim:
        await sim.faults(fail_next=1)
        answer = await sim.http.post("/api/v1/orders", json={})
        assert answer.status_code == 500
