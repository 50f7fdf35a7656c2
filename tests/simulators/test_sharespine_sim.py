"""The simulated Sharespine applies stock deltas all or nothing, each record once."""

from __future__ import annotations

from agent.simulators import sharespine


def changes(*items) -> dict:
    return {"storeId": "store-001", "changes": [{"sku": s, "delta": d, "refs": list(r)} for s, d, r in items]}


async def test_a_request_is_applied_whole_or_not_at_all(serve_sim):
    async with serve_sim(sharespine.create_app()) as sim:
        bad = await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a"]), ("BREAD", "x", ["b"])))
        assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "changes[1].delta"
        assert (await sim.ledger())["stock"] == {}
        twice = await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a"]), ("BREAD", "1", ["a"])))
        assert twice.status_code == 422 and twice.json()["details"][0]["field"] == "changes[1].refs"
        ok = await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a"]), ("BREAD", "-1.5", ["b"])))
        assert ok.json() == {"applied": 2, "duplicates": 0, "stock": {"MILK": "5.000", "BREAD": "-1.500"}}


async def test_refs_make_changes_idempotent_and_partial_overlaps_are_refused(serve_sim):
    async with serve_sim(sharespine.create_app(auth="bearer", api_key="k")) as sim:
        headers = {"Authorization": "Bearer k"}
        assert (await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a"])))).status_code == 401
        first = await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a", "b"])), headers=headers)
        again = await sim.http.post("/api/stock/changes", json=changes(("MILK", "5", ["a", "b"])), headers=headers)
        partial = await sim.http.post("/api/stock/changes", json=changes(("MILK", "7", ["b", "c"])), headers=headers)
        ledger = await sim.ledger()
    assert (first.status_code, again.status_code, partial.status_code) == (200, 200, 409)
    assert again.json()["duplicates"] == 1
    assert partial.json()["applied_refs"] == ["b"]
    assert ledger["stock"] == {"MILK": "5.000"} and ledger["applied_refs"] == 2
