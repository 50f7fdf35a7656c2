"""The http adapter against the generic receiver simulator, over real loopback HTTP."""

from __future__ import annotations

import pytest

from agent.destinations.base import PermanentError, RetryableError
from agent.destinations.http import HttpDestination, HttpDestinationConfig
from agent.simulators import receiver
from tests.destinations.envelopes import batch, movement, running, sale
from tests.helpers import STORE_ID

TOKEN = "s3cret-token"


def http_config(url: str, **keys) -> HttpDestinationConfig:
    return HttpDestinationConfig(name="backend", url=url, **keys)


def adapter(sim, token_file=None, timeout_s: float = 5.0) -> HttpDestination:
    return HttpDestination(
        http_config(f"{sim.base_url}/ingest", token_file=token_file, timeout_s=timeout_s), store_id=STORE_ID
    )


async def test_a_batch_lands_in_the_ledger_exactly_once_even_when_resent(serve_sim, secret_file):
    records = [sale(1), movement("d-1", "7310865004703", "24"), sale(2)]
    frozen = batch(records)
    async with serve_sim(receiver.create_app(token=TOKEN)) as sim:
        dest = adapter(sim, secret_file("token", TOKEN))
        async with running(dest):
            assert (await dest.send(frozen)).rejected == {}
            assert (await dest.send(frozen)).rejected == {}
        ledger = await sim.ledger()
    assert ledger["records"] == records
    assert ledger["batches"] == 1
    assert ledger["idempotent_replays"] == 1


async def test_a_record_resent_in_a_new_batch_is_deduplicated_by_id(serve_sim):
    first = sale(1)
    async with serve_sim(receiver.create_app()) as sim:
        dest = adapter(sim)
        async with running(dest):
            await dest.send(batch([first]))
            await dest.send(batch([first, sale(2)]))
        ledger = await sim.ledger()
    assert [r["data"]["receipt_no"] for r in ledger["records"]] == [1, 2]
    assert ledger["duplicates"] == 1


async def test_the_body_is_the_contract_wire_format(serve_sim):
    records = [sale(7)]
    frozen = batch(records)
    async with serve_sim(receiver.create_app()) as sim:
        dest = adapter(sim)
        async with running(dest):
            await dest.send(frozen)
        # The receiver insists on Idempotency-Key == batch_id; a replay proves the key was the batch id.
        replay = await sim.http.post(
            "/ingest",
            json={"store_id": STORE_ID, "batch_id": frozen.batch_id, "records": records},
            headers={"Idempotency-Key": frozen.batch_id},
        )
    assert replay.status_code == 422  # same key, body spelled differently (not canonical JSON)


async def test_a_wrong_token_is_a_401_to_fix_in_the_config_not_a_refused_record(serve_sim, secret_file):
    async with serve_sim(receiver.create_app(token=TOKEN)) as sim:
        dest = adapter(sim, secret_file("token", "not-it"))
        async with running(dest):
            with pytest.raises(RetryableError, match="check the token in the config") as caught:
                await dest.send(batch([sale(1)]))
        assert (await sim.ledger())["records"] == []
    assert caught.value.status == 401


async def test_429_is_retryable_with_retry_after(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(throttle_next=1, retry_after_s=7)
        dest = adapter(sim)
        async with running(dest):
            with pytest.raises(RetryableError) as caught:
                await dest.send(batch([sale(1)]))
            assert (await dest.send(batch([sale(2)]))).rejected == {}
    assert caught.value.status == 429
    assert caught.value.retry_after_s == 7


@pytest.mark.parametrize(
    "knobs", [{"fail_next": 1}, {"fail_next": 1, "fail_status": 503}, {"down": "503"}, {"down": "close"}]
)
async def test_server_errors_and_a_dead_server_are_retryable(serve_sim, knobs):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(**knobs)
        dest = adapter(sim)
        async with running(dest):
            with pytest.raises(RetryableError):
                await dest.send(batch([sale(1)]))
        assert (await sim.ledger())["records"] == []


async def test_nobody_listening_is_retryable(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        url = sim.base_url
    dest = HttpDestination(http_config(f"{url}/ingest", timeout_s=2), store_id=STORE_ID)
    async with running(dest):
        with pytest.raises(RetryableError, match="connection failed"):
            await dest.send(batch([sale(1)]))


async def test_a_slow_receiver_times_out_as_retryable(serve_sim):
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(slow_s=1)
        dest = adapter(sim, timeout_s=0.1)
        async with running(dest):
            with pytest.raises(RetryableError, match="timed out"):
                await dest.send(batch([sale(1)]))


@pytest.mark.parametrize("mode", ["502", "drop"])
async def test_a_lost_answer_is_retried_and_deduplicated(serve_sim, mode):
    frozen = batch([sale(1), sale(2)])
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(lose_answer_next=1, lose_answer_mode=mode)
        dest = adapter(sim)
        async with running(dest):
            with pytest.raises(RetryableError):
                await dest.send(frozen)
            assert (await dest.send(frozen)).rejected == {}
        ledger = await sim.ledger()
    assert ledger["records"] == frozen.records
    assert ledger["idempotent_replays"] == 1


async def test_refused_records_come_back_as_rejected(serve_sim):
    good, bad = sale(1), movement("d-9", "BAD-SKU", "5")
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(refuse_skus=["BAD-SKU"], refuse_mode="rejected")
        dest = adapter(sim)
        async with running(dest):
            result = await dest.send(batch([good, bad]))
        ledger = await sim.ledger()
    assert set(result.rejected) == {bad["id"]}
    assert "BAD-SKU" in result.rejected[bad["id"]]
    assert ledger["records"] == [good]


async def test_a_refused_batch_is_a_permanent_error_with_status_and_body(serve_sim):
    bad = movement("d-9", "BAD-SKU", "5")
    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(refuse_ids=[bad["id"]], refuse_mode="422")
        dest = adapter(sim)
        async with running(dest):
            with pytest.raises(PermanentError) as caught:
                await dest.send(batch([sale(1), bad]))
        assert (await sim.ledger())["records"] == []
    assert caught.value.status == 422
    assert bad["id"] in caught.value.body
    assert len(caught.value.body) <= 1024


def test_the_config_model_has_the_contract_keys():
    config = HttpDestinationConfig.model_validate(
        {
            "name": "backend",
            "kind": "http",
            "url": "http://127.0.0.1:9/ingest",
            "token_file": "/run/secret",
            "batch_max": 50,
        }
    )
    assert config.types == ["sale", "stock_movement"]
    assert (config.backoff_base_s, config.backoff_cap_s, config.timeout_s) == (1.0, 300.0, 10.0)
    dest = HttpDestination(config, store_id=STORE_ID)
    assert dest.url == "http://127.0.0.1:9/ingest"


def test_the_config_model_names_a_bad_key():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        HttpDestinationConfig.model_validate({"name": "b", "kind": "http", "url": "http://x/", "tiemout_s": 3})
    assert "tiemout_s" in str(caught.value)
