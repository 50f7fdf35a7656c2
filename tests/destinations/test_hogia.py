"""The hogia adapter against the simulated Hogia API, over real loopback HTTP."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest
from pydantic import ValidationError

from agent.configbase import SkusConfig
from agent.destinations.base import PermanentError, RetryableError
from agent.destinations.hogia import (
    HogiaDestination,
    HogiaDestinationConfig,
    sale_to_order,
    share_discount,
)
from agent.simulators import hogia
from tests.destinations.envelopes import batch, movement, random_sale, running, sale

API_KEY = "hogia-key"
CLIENT_ID, CLIENT_SECRET = "kassabro-store-001", "client-secret"


def hogia_config(sim, **keys) -> HogiaDestinationConfig:
    return HogiaDestinationConfig(name="hogia", base_url=sim.base_url, **keys)


def key_adapter(sim, secret_file, skus: SkusConfig | None = None, **keys) -> HogiaDestination:
    config = hogia_config(sim, auth="api_key", api_key_file=secret_file("hogia.key", API_KEY), **keys)
    return HogiaDestination(config, skus=skus)


def oauth_adapter(sim, secret_file, secret: str = CLIENT_SECRET, clock=time.monotonic) -> HogiaDestination:
    config = hogia_config(
        sim, auth="oauth2", client_id=CLIENT_ID, client_secret_file=secret_file("hogia.secret", secret)
    )
    return HogiaDestination(config, clock=clock)


def key_app(**kwargs):
    return hogia.create_app(auth="api_key", api_key=API_KEY, **kwargs)


def oauth_app(**kwargs):
    return hogia.create_app(auth="oauth2", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **kwargs)


async def test_sales_become_orders_and_movements_stock_adjustments_once(serve_sim, secret_file):
    rng = random.Random(3)
    sales = [random_sale(rng, n) for n in range(1, 41)]
    delivery = movement("d-1", "7310865004703", "24")
    derived = movement("r1.0", "7310865004703", "-2", reason="sale")
    frozen = batch([*sales, delivery, derived])
    async with serve_sim(key_app()) as sim:
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            assert (await dest.send(frozen)).rejected == {}
            assert (await dest.send(frozen)).rejected == {}  # the resend is deduplicated
        ledger = await sim.ledger()
    assert [o["externalId"] for o in ledger["orders"]] == [s["id"] for s in sales]
    assert [a["externalId"] for a in ledger["stock_adjustments"]] == [delivery["id"]]  # derived sale movement skipped
    assert ledger["stock_adjustments"][0]["quantity"] == "24.000"
    assert ledger["duplicates"] == len(sales) + 1


async def test_fees_discount_and_rounding_are_rows_on_the_configured_skus(serve_sim, secret_file):
    env = sale(
        5,
        lines=[
            {"sku": "MILK", "quantity": 2, "unit_price": "15.90", "vat_rate": 12},
            {"sku": "BOOK", "quantity": 1, "unit_price": "129.00", "vat_rate": 6, "discount": "9.00"},
        ],
        fees=[
            {"role": "shipping", "amount": "49.00", "vat_rate": 25},
            {"role": "handling", "amount": "29.00", "vat_rate": 25},
        ],
        discount="15.00",
        rounding="0.20",
        total="215.00",
        payments=[{"method": "cash", "amount": "215.00"}],
    )
    async with serve_sim(key_app()) as sim:
        dest = key_adapter(sim, secret_file, skus=SkusConfig(shipping="FRAKT", handling="EXP", discount="RAB"))
        async with running(dest):
            await dest.send(batch([env]))
        (order,) = (await sim.ledger())["orders"]
    rows = {(r["articleNumber"], r["vatRate"]): r for r in order["rows"]}
    assert rows[("FRAKT", 25)]["amount"] == "49.00"
    assert rows[("EXP", 25)]["amount"] == "29.00"
    # 15.00 discount shared over 31.80 at 12 % and 120.00 at 6 %.
    assert rows[("RAB", 12)]["amount"] == "-3.14"
    assert rows[("RAB", 6)]["amount"] == "-11.86"
    assert rows[("BOOK", 6)]["vatAmount"] == "6.79"
    assert (order["rounding"], order["total"], order["orderType"]) == ("0.20", "215.00", "sale")


async def test_a_return_becomes_a_return_order_that_balances(serve_sim, secret_file):
    rng = random.Random(11)
    returns = [random_sale(rng, n, kind="return") for n in range(1, 11)]
    async with serve_sim(key_app()) as sim:
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            assert (await dest.send(batch(returns))).rejected == {}
        orders = (await sim.ledger())["orders"]
    assert {o["orderType"] for o in orders} == {"return"}
    assert all(Decimal(o["total"]) <= 0 for o in orders)


def test_share_discount_always_sums_to_the_discount():
    rng = random.Random(5)
    for _ in range(500):
        bases = {
            rate: Decimal(rng.randint(-5000, 50000)) / 100 for rate in rng.sample([25, 12, 6, 0], rng.randint(1, 4))
        }
        discount = Decimal(rng.randint(0, 20000)) / 100
        assert sum(share_discount(discount, bases).values(), Decimal(0)) == discount


def test_every_simulated_receipt_maps_to_an_order_the_simulator_accepts():
    rng = random.Random(8)
    for n in range(1, 301):
        hogia.check_order(
            sale_to_order(random_sale(rng, n), shipping_sku="fraktavg", handling_sku="expavg", discount_sku="rabatt")
        )


async def test_oauth_token_is_cached_and_refreshed_once_on_401(serve_sim, secret_file):
    async with serve_sim(oauth_app()) as sim:
        dest = oauth_adapter(sim, secret_file)
        async with running(dest):
            await dest.send(batch([sale(1), sale(2), sale(3)]))
            assert (await sim.ledger())["tokens_issued"] == 1
            await sim.http.post("/_tokens/revoke")
            await dest.send(batch([sale(4)]))
        ledger = await sim.ledger()
    assert len(ledger["orders"]) == 4
    assert ledger["tokens_issued"] == 2
    assert ledger["unauthorized"] == 1


async def test_an_expiring_token_is_renewed_before_use(serve_sim, secret_file):
    now = [1000.0]
    async with serve_sim(oauth_app(token_ttl_s=60)) as sim:
        dest = oauth_adapter(sim, secret_file, clock=lambda: now[0])
        async with running(dest):
            await dest.send(batch([sale(1)]))
            now[0] += 55  # in the token's last tenth of life (6 s): renewed before it can expire
            await dest.send(batch([sale(2)]))
            assert (await sim.ledger())["tokens_issued"] == 2
            now[0] += 10  # the new token has most of its life left: kept
            await dest.send(batch([sale(3)]))
        ledger = await sim.ledger()
    assert len(ledger["orders"]) == 3
    assert ledger["unauthorized"] == 0
    assert ledger["tokens_issued"] == 2


async def test_bad_credentials_are_retryable_not_dead_letters(serve_sim, secret_file):
    async with serve_sim(oauth_app()) as sim:
        dest = oauth_adapter(sim, secret_file, secret="wrong-secret")
        async with running(dest):
            with pytest.raises(RetryableError, match="token request refused"):
                await dest.send(batch([sale(1)]))
    async with serve_sim(key_app()) as sim:
        dest = HogiaDestination(hogia_config(sim, auth="api_key", api_key_file=secret_file("k", "nope")))
        async with running(dest):
            with pytest.raises(RetryableError, match="credentials") as caught:
                await dest.send(batch([sale(1)]))
    assert caught.value.status == 401


async def test_429_is_retryable_with_retry_after(serve_sim, secret_file):
    async with serve_sim(key_app()) as sim:
        await sim.faults(throttle_next=1, retry_after_s=30)
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(RetryableError) as caught:
                await dest.send(batch([sale(1)]))
    assert (caught.value.status, caught.value.retry_after_s) == (429, 30)


@pytest.mark.parametrize("knobs", [{"fail_next": 1}, {"down": "503"}, {"down": "close"}])
async def test_server_errors_are_retryable(serve_sim, secret_file, knobs):
    async with serve_sim(key_app()) as sim:
        await sim.faults(**knobs)
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(RetryableError):
                await dest.send(batch([sale(1)]))


async def test_a_slow_api_times_out_as_retryable(serve_sim, secret_file):
    async with serve_sim(key_app()) as sim:
        await sim.faults(slow_s=1)
        dest = key_adapter(sim, secret_file, timeout_s=0.1)
        async with running(dest):
            with pytest.raises(RetryableError, match="timed out"):
                await dest.send(batch([sale(1)]))


@pytest.mark.parametrize("mode", ["502", "drop"])
async def test_an_error_midway_and_a_lost_answer_are_resent_without_doubles(serve_sim, secret_file, mode):
    frozen = batch([sale(1), sale(2), sale(3)])
    async with serve_sim(key_app()) as sim:
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            await sim.faults(lose_answer_next=1, lose_answer_mode=mode)
            with pytest.raises(RetryableError):
                await dest.send(frozen)
            assert (await dest.send(frozen)).rejected == {}
        ledger = await sim.ledger()
    assert [o["externalId"] for o in ledger["orders"]] == frozen.ids


async def test_a_refused_sku_is_permanent_alone_and_rejected_within_a_batch(serve_sim, secret_file):
    bad = sale(
        9,
        lines=[{"sku": "GONE", "quantity": 1, "unit_price": "10.00", "vat_rate": 25}],
        total="10.00",
        payments=[{"method": "swish", "amount": "10.00"}],
    )
    good = [sale(1), sale(2)]
    async with serve_sim(key_app()) as sim:
        await sim.faults(refuse_skus=["GONE"])
        dest = key_adapter(sim, secret_file)
        async with running(dest):
            with pytest.raises(PermanentError) as caught:
                await dest.send(batch([bad]))
            result = await dest.send(batch([good[0], bad, good[1]]))
        ledger = await sim.ledger()
    assert caught.value.status == 422 and "GONE" in caught.value.body
    assert list(result.rejected) == [bad["id"]] and "422" in result.rejected[bad["id"]]
    assert [o["externalId"] for o in ledger["orders"]] == [g["id"] for g in good]


@pytest.mark.parametrize(
    ("path_key", "records"),
    [
        ("orders_path", [sale(1), movement("d-1", "MILK", "24"), sale(2)]),
        ("stock_adjustments_path", [sale(1), movement("d-1", "MILK", "24"), sale(2)]),
        ("orders_path", [sale(3)]),
    ],
)
async def test_a_wrong_path_is_a_setup_problem_not_a_batch_of_dead_letters(serve_sim, secret_file, path_key, records):
    async with serve_sim(key_app()) as sim:
        dest = key_adapter(sim, secret_file, **{path_key: "/api/v0/nowhere"})
        async with running(dest):
            with pytest.raises(RetryableError, match="check the URL in the config") as caught:
                await dest.send(batch(records))
    assert caught.value.status == 404


def test_config_needs_the_auth_keys_and_knows_the_sku_defaults():
    with pytest.raises(ValidationError, match="client_secret_file"):
        HogiaDestinationConfig.model_validate({"name": "h", "kind": "hogia", "base_url": "http://x/", "auth": "oauth2"})
    config = HogiaDestinationConfig.model_validate(
        {"name": "h", "kind": "hogia", "base_url": "http://x/", "api_key_file": "/run/k"}
    )
    dest = HogiaDestination(config)
    assert dest.skus == {"shipping_sku": "fraktavg", "handling_sku": "expavg", "discount_sku": "rabatt"}
    assert dest.orders_url == "http://x/api/v1/orders"


async def test_a_hogia_destination_that_sends_no_records_books_nothing(serve_sim):
    """Setup (a) (docs/setups.md): the till reports to Hogia Smart itself, so nothing is booked twice."""
    async with serve_sim(hogia.create_app(auth="none")) as sim:
        dest = HogiaDestination(
            HogiaDestinationConfig(name="hogia", base_url=sim.base_url, auth="none", send_records=False)
        )
        async with running(dest):
            result = await dest.send(batch([sale(1), movement("d-1", "7310865004703", "24")]))
        ledger = await sim.ledger()
    assert result.rejected == {}
    assert (ledger["orders"], ledger["stock_adjustments"]) == ([], [])
