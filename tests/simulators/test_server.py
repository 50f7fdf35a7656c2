"""Serving a simulator on loopback: in the event loop, and from a thread."""

from __future__ import annotations

import httpx

from agent.simulators import ServerThread, receiver, serve


async def test_serve_answers_on_loopback_and_frees_the_port():
    async with serve(receiver.create_app()) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base_url}/_ledger")).json()["records"] == []
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"{base_url}/_ledger", timeout=2)
            answered = True
        except httpx.ConnectError:
            answered = False
    assert not answered


def test_server_thread_serves_without_an_event_loop():
    with ServerThread(receiver.create_app()) as base_url:
        answer = httpx.post(
            f"{base_url}/ingest",
            json={"store_id": "s", "batch_id": "b1", "records": [{"id": "r1"}]},
            headers={"Idempotency-Key": "b1"},
        )
        assert answer.status_code == 200
        assert httpx.get(f"{base_url}/_ledger").json()["records"] == [{"id": "r1"}]
