"""The sharespine adapter against the simulated Sharespine, over real loopback HTTP."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.destinations.base import PermanentError, RetryableError
from agent.destinations.sharespine import (
    SharespineDestination,
    SharespineDestinationConfig,
    stock_changes,
)
from agent.simulators import sharespine
from tests.destinations.envelopes import batch, movement, running, sale
from tests.helpers import STORE_ID

API_KEY = "sharespine-key"


def adapter(sim, secret_file, auth: str = "api_key", **keys) -> SharespineDestination:
    config = SharespineDestinationConfig(
        name="sharespine", base_url=sim.base_url, auth=auth, api_key_file=secret_file("ss.key", API_KEY), **keys
    )
    return SharespineDestination(config, store_id=STORE_ID)


def app(auth: str = "api_key"):
    return sharespine.create_app(auth=auth, api_key=API_KEY)


def movements():
    return [
        movement("d-1", "MILK", "24"),
        movement("r1.0", "MILK", "-2", reason="sale"),
        movement("d-2", "BREAD", "12"),
        movement("s-1", "MILK", "-1", reason="shrinkage"),
    ]


async def test_stock_goes_as_summed_deltas_and_a_resend_is_not_applied_twice(serve_sim, secret_file):
    records = movements()
    frozen = batch([*records, sale(1)])
    async with serve_sim(app()) as sim:
        dest = adapter(sim, secret_file)
        async with running(dest):
            assert (await dest.send(frozen)).rejected == {}
            assert (await dest.send(frozen)).rejected == {}
        ledger = await sim.ledger()
    assert ledger["stock"] == {"BREAD": "12.000", "MILK": "21.000"}
    assert ledger["changes"] == [
        {"sku": "MILK", "delta": "21.000", "refs": [records[0]["id"], records[1]["id"], records[3]["id"]]},
        {"sku": "BREAD", "delta": "12.000", "refs": [records[2]["id"]]},
    ]
    assert ledger["applied_refs"] == 4
    assert ledger["duplicates"] == 2
    assert ledger["orders"] == []  # sales are not sent unless sales_as_orders


async def test_a_record_resent_alone_after_its_batch_is_not_applied_again(serve_sim, secret_file):
    records = movements()
    async with serve_sim(app("bearer")) as sim:
        dest = adapter(sim, secret_file, auth="bearer")
        async with running(dest):
            await dest.send(batch(records))
            await dest.send(batch([records[0]]))
        ledger = await sim.ledger()
    assert ledger["stock"]["MILK"] == "21.000"


async def test_a_partial_overlap_is_refused_so_the_loop_splits(serve_sim, secret_file):
    records = movements()
    async with serve_sim(app()) as sim:
        dest = adapter(sim, secret_file)
        async with running(dest):
            await dest.send(batch([records[0]]))
            with pytest.raises(PermanentError) as caught:
                await dest.send(batch(records))
            # What the delivery loop does next: the halves, then single records.
            await dest.send(batch([records[1]]))
            await dest.send(batch(records[2:]))
        ledger = await sim.ledger()
    assert caught.value.status == 409
    assert ledger["stock"] == {"BREAD": "12.000", "MILK": "21.000"}


async def test_sales_as_orders_are_sent_once(serve_sim, secret_file):
    sales = [sale(1), sale(2)]
    frozen = batch([*sales, movement("d-1", "MILK", "6")])
    async with serve_sim(app()) as sim:
        dest = adapter(sim, secret_file, sales_as_orders=True)
        async with running(dest):
            await dest.send(frozen)
            await dest.send(frozen)
        ledger = await sim.ledger()
    assert [o["externalId"] for o in ledger["orders"]] == [s["id"] for s in sales]
    assert all(o["affectsStock"] is False for o in ledger["orders"])
    assert ledger["stock"] == {"MILK": "6.000"}


async def test_a_refused_sku_refuses_the_whole_stock_request(serve_sim, secret_file):
    records = [movement("d-1", "MILK", "6"), movement("d-2", "GONE", "3")]
    async with serve_sim(app()) as sim:
        await sim.faults(refuse_skus=["GONE"])
        dest = adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(PermanentError) as caught:
                await dest.send(batch(records))
        ledger = await sim.ledger()
    assert caught.value.status == 422
    assert "GONE" in caught.value.body and records[1]["id"] in caught.value.body
    assert ledger["stock"] == {}


async def test_a_refused_order_in_a_batch_is_rejected_alone(serve_sim, secret_file):
    bad, good = sale(2), sale(1)
    async with serve_sim(app()) as sim:
        await sim.faults(refuse_ids=[bad["id"]])
        dest = adapter(sim, secret_file, sales_as_orders=True)
        async with running(dest):
            result = await dest.send(batch([good, bad]))
        ledger = await sim.ledger()
    assert list(result.rejected) == [bad["id"]]
    assert [o["externalId"] for o in ledger["orders"]] == [good["id"]]


@pytest.mark.parametrize(
    "knobs",
    [
        {"throttle_next": 1, "retry_after_s": 4},
        {"fail_next": 1},
        {"down": "503"},
        {"down": "close"},
        {"lose_answer_next": 1},
        {"lose_answer_next": 1, "lose_answer_mode": "drop"},
    ],
)
async def test_retryable_faults_then_a_clean_resend(serve_sim, secret_file, knobs):
    records = movements()
    frozen = batch(records)
    async with serve_sim(app()) as sim:
        await sim.faults(**knobs)
        dest = adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(RetryableError) as caught:
                await dest.send(frozen)
            await sim.faults(down="off")
            assert (await dest.send(frozen)).rejected == {}
        ledger = await sim.ledger()
    assert ledger["stock"] == {"BREAD": "12.000", "MILK": "21.000"}
    if "throttle_next" in knobs:
        assert caught.value.retry_after_s == 4


async def test_a_slow_api_times_out_as_retryable(serve_sim, secret_file):
    async with serve_sim(app()) as sim:
        await sim.faults(slow_s=1)
        dest = adapter(sim, secret_file, timeout_s=0.1)
        async with running(dest):
            with pytest.raises(RetryableError, match="timed out"):
                await dest.send(batch(movements()))


async def test_a_wrong_key_is_retryable(serve_sim, secret_file):
    async with serve_sim(sharespine.create_app(auth="api_key", api_key="other")) as sim:
        dest = adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(RetryableError, match="credentials"):
                await dest.send(batch(movements()))


async def test_a_wrong_orders_path_is_a_setup_problem_not_refused_orders(serve_sim, secret_file):
    async with serve_sim(app()) as sim:
        dest = adapter(sim, secret_file, sales_as_orders=True, orders_path="/api/v0/orders")
        async with running(dest):
            with pytest.raises(RetryableError, match="check the URL in the config") as caught:
                await dest.send(batch([sale(1), sale(2)]))
    assert caught.value.status == 404


def test_stock_changes_never_carry_levels_and_keep_every_ref():
    records = movements()
    changes = stock_changes(records)
    assert all(set(c) == {"sku", "delta", "refs"} for c in changes)
    assert sorted(ref for c in changes for ref in c["refs"]) == sorted(r["id"] for r in records)


def test_config_needs_a_key_file_unless_auth_is_none():
    with pytest.raises(ValidationError, match="api_key_file"):
        SharespineDestinationConfig.model_validate({"name": "s", "kind": "sharespine", "base_url": "http://x/"})
    config = SharespineDestinationConfig.model_validate(
        {"name": "s", "kind": "sharespine", "base_url": "http://x/", "auth": "none", "sales_as_orders": True}
    )
    dest = SharespineDestination(config, store_id=STORE_ID)
    assert dest.config.sales_as_orders and dest.stock_changes_url == "http://x/api/stock/changes"
