"""A token per till (contract §2) through the real ingest server.

A till's own token may only send records of its own ``till_id``: another
till's record is a 403 naming that till and stores nothing, and one foreign
record refuses its whole batch. The shared ``token_file`` keeps working beside
the per-till tokens, for single-till shops and for ``kassabro submit``.
"""

from __future__ import annotations

import httpx
import pytest

from agent.config import ConfigError, build_config
from agent.sources.tokens import FailedAuthLimit
from tests.helpers import make_movement, make_sale, make_z_report
from tests.sources.conftest import agent_config

TILLS = {"kassa-1": "token-of-kassa-1", "kassa-2": "token-of-kassa-2"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_till_posts_its_own_records_and_not_another_tills(start_agent):
    async with start_agent(tills=TILLS) as run:
        own = await run.client.post("/v1/sales", json=make_sale(1, till_id="kassa-2"), headers=bearer(TILLS["kassa-2"]))
        assert own.status_code == 201, own.text
        before = run.dump()

        foreign = await run.client.post(
            "/v1/sales", json=make_sale(2, till_id="kassa-1"), headers=bearer(TILLS["kassa-2"])
        )
        assert foreign.status_code == 403
        body = foreign.json()
        assert body["error"] == "forbidden"
        assert body["till_id"] == "kassa-1"
        assert run.dump() == before  # nothing stored

        for path, record in (
            ("/v1/stock-movements", make_movement(1, till_id="kassa-1")),
            ("/v1/z-reports", make_z_report(1, 1, 1, till_id="kassa-1")),
        ):
            refused = await run.client.post(path, json=record, headers=bearer(TILLS["kassa-2"]))
            assert (refused.status_code, refused.json()["till_id"]) == (403, "kassa-1"), path
        assert run.dump() == before

        # The refusal is counted like every other, under its own reason.
        assert 'kassabro_ingest_rejected_total{reason="forbidden"} 3.0' in run.agent.metrics.render().decode()


async def test_a_batch_with_one_foreign_record_is_refused_whole(start_agent):
    async with start_agent(tills=TILLS) as run:
        before = run.dump()
        batch = {
            "sales": [make_sale(1, till_id="kassa-1"), make_sale(2, till_id="kassa-1")],
            "stock_movements": [make_movement(1, till_id="kassa-2")],
        }
        refused = await run.client.post("/v1/batch", json=batch, headers=bearer(TILLS["kassa-1"]))
        assert refused.status_code == 403
        assert refused.json()["till_id"] == "kassa-2"
        assert run.dump() == before

        batch["stock_movements"] = [make_movement(1, till_id="kassa-1")]
        stored = await run.client.post("/v1/batch", json=batch, headers=bearer(TILLS["kassa-1"]))
        assert stored.status_code == 201, stored.text
        assert [r["key"] for r in stored.json()["records"]] == [
            "sale:kassa-1:1",
            "sale:kassa-1:2",
            "stock_movement:kassa-1:d-1",
        ]


async def test_wrong_or_missing_tokens_are_401_and_the_shared_token_sends_for_any_till(start_agent):
    async with start_agent(token="the-shared-token", tills=TILLS) as run:
        for headers in ({}, bearer("token-of-kassa-3"), bearer(TILLS["kassa-1"] + "x")):
            refused = await run.client.post("/v1/sales", json=make_sale(1), headers=headers)
            assert refused.status_code == 401, headers
        for n, till in enumerate(("kassa-1", "kassa-2", "kassa-9"), start=1):
            ok = await run.client.post("/v1/sales", json=make_sale(n, till_id=till), headers=bearer("the-shared-token"))
            assert ok.status_code == 201, (till, ok.text)
        # The scheme is case-insensitive (contract §2); a till's token reads records back.
        ok = await run.client.post(
            "/v1/sales", json=make_sale(4, till_id="kassa-1"), headers={"Authorization": "bearer token-of-kassa-1"}
        )
        assert ok.status_code == 201
        read = await run.client.get("/v1/records/sale:kassa-1:4", headers=bearer(TILLS["kassa-1"]))
        assert read.status_code == 200
        assert (await run.client.get("/v1/records/sale:kassa-1:4")).status_code == 401


def test_tills_alone_allow_a_lan_listen_and_are_checked_as_the_shared_token_is(tmp_path):
    config = agent_config(tmp_path, listen="0.0.0.0:0", tills=TILLS, ingest={"allow_plain_http": True})
    assert config.till_tokens() == {"token-of-kassa-1": "kassa-1", "token-of-kassa-2": "kassa-2"}

    raw = {
        "store_id": "s",
        "ingest": {
            "tills": [
                {"id": "kassa-1", "token_file": str(tmp_path / "missing.token")},
                {"id": "kassa-1", "token_file": str(tmp_path / "till-kassa-2.token")},
            ]
        },
    }
    with pytest.raises(ConfigError) as caught:
        build_config(raw)
    assert "named twice" in dict(caught.value.problems)["ingest.tills"]

    raw["ingest"]["tills"][1]["id"] = "kassa-2"
    with pytest.raises(ConfigError) as caught:
        build_config(raw)
    assert "missing.token" in dict(caught.value.problems)["ingest.tills[0].token_file"]


# ------------------------------------------------------------ failed attempts
async def test_wrong_tokens_are_counted_and_limited_per_address_without_slowing_other_tills(start_agent):
    async with start_agent(token="the-shared-token") as run:
        guesses = [
            await run.client.post("/v1/sales", json=make_sale(1), headers=bearer(f"guess-{n}")) for n in range(12)
        ]
        assert [r.status_code for r in guesses] == [401] * 10 + [429] * 2
        assert int(guesses[-1].headers["retry-after"]) >= 1
        # While limited, this address is not even asked for its token.
        assert (
            await run.client.post("/v1/sales", json=make_sale(1), headers=bearer("the-shared-token"))
        ).status_code == 429

        # Another till (another address on the loopback net) is not affected.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=other, base_url=str(run.client.base_url), timeout=20) as till:
            ok = await till.post("/v1/sales", json=make_sale(2), headers=bearer("the-shared-token"))
            assert ok.status_code == 201, ok.text
            assert (await till.get("/v1/records/sale:kassa-1:2", headers=bearer("nope"))).status_code == 401

        metrics = run.agent.metrics.render().decode()
        assert 'kassabro_ingest_auth_failures_total{client="127.0.0.1"} 10.0' in metrics
        assert 'kassabro_ingest_auth_failures_total{client="127.0.0.2"} 1.0' in metrics
        assert 'kassabro_ingest_rejected_total{reason="rate_limited"} 3.0' in metrics


def test_the_failed_attempt_limit_refills_with_time() -> None:
    now = [0.0]
    limit = FailedAuthLimit(per_second=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        assert not limit.blocked("192.0.2.1")
        limit.failed("192.0.2.1")
    assert limit.blocked("192.0.2.1") and not limit.blocked("192.0.2.2")
    assert limit.retry_after_s("192.0.2.1") == 1
    now[0] += 0.5  # one attempt back at 2 per second
    assert not limit.blocked("192.0.2.1")
    limit.failed("192.0.2.1")
    assert limit.blocked("192.0.2.1")
    now[0] += 60
    assert not limit.blocked("192.0.2.1")
