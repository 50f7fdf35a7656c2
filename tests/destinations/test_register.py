"""Hogia Smart's article register on the Pi: fetched, kept offline, and what it changes.

A shop relies on: the register surviving a restart and an unreachable Hogia,
Sharespine never getting (and never refusing into dead letters) stock for an
article that is not in the webshop, and the page saying in Swedish what to
create in Hogia Smart when an article is missing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.destinations.hogia import HogiaDestination, HogiaDestinationConfig
from agent.destinations.sharespine import SharespineDestination, SharespineDestinationConfig
from agent.outbox.store import OutboxStore
from agent.register import ArticleRegister, parse_articles
from agent.simulators import hogia, sharespine
from tests.destinations.envelopes import batch, movement, running, sale
from tests.helpers import STORE_ID

WEBSHOP, STORE_ONLY = "7310865004703", "7310865071507"  # the simulator's register marks only the first


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.db"
    OutboxStore.open(path, store_id=STORE_ID).close()  # migrated, as the agent leaves it
    return path


def hogia_dest(base_url: str, register: ArticleRegister) -> HogiaDestination:
    config = HogiaDestinationConfig(name="hogia", base_url=base_url, auth="none", send_records=False)
    return HogiaDestination(config, register=register)


async def test_the_register_is_fetched_kept_across_a_restart_and_used_offline(serve_sim, db: Path) -> None:
    register = ArticleRegister(db)
    async with serve_sim(hogia.create_app()) as sim:
        dest = hogia_dest(sim.base_url, register)
        async with running(dest):
            assert await dest.fetch_register() == len(hogia.DEFAULT_ARTICLES)
        base_url = sim.base_url
    # A restart: a new register object reads the outbox database.
    again = ArticleRegister(db)
    snapshot = again.snapshot()
    assert snapshot is not None and set(snapshot.articles) == {a["articleNumber"] for a in hogia.DEFAULT_ARTICLES}
    assert snapshot.is_webshop(WEBSHOP) and not snapshot.is_webshop(STORE_ONLY)
    # Hogia unreachable (the simulator is gone): the read fails, the stored register stays in use.
    dest = hogia_dest(base_url, again)
    async with running(dest):
        with pytest.raises(Exception):  # whatever a refused connection raises
            await dest.fetch_register()
    assert again.snapshot() == snapshot
    summary = again.summary()
    assert summary is not None and summary["articles"] == len(hogia.DEFAULT_ARTICLES)
    assert summary["webshop_articles"] == 1


async def test_sharespine_gets_stock_only_for_webshop_articles(serve_sim, db: Path) -> None:
    register = ArticleRegister(db)
    register.save(parse_articles({"articles": hogia.DEFAULT_ARTICLES}), datetime.now(UTC))
    async with serve_sim(sharespine.create_app(auth="none")) as sim:
        config = SharespineDestinationConfig(name="ss", base_url=sim.base_url, auth="none")
        dest = SharespineDestination(config, store_id=STORE_ID, register=register)
        store_only = movement("s-1", STORE_ONLY, "-1", reason="sale")
        async with running(dest):
            result = await dest.send(batch([movement("w-1", WEBSHOP, "-2", reason="sale"), store_only]))
            alone = await dest.send(batch([store_only]))  # alone in its batch: still no refusal
        ledger = await sim.ledger()
    assert result.rejected == {} and alone.rejected == {}
    assert [c["sku"] for c in ledger["changes"]] == [WEBSHOP]
    assert register.skipped_not_webshop == 2
    assert register.summary()["skipped_not_webshop"] == 2  # type: ignore[index]


async def test_unknown_sku_and_missing_cost_articles_are_problems_in_swedish(serve_sim, db: Path) -> None:
    register = ArticleRegister(db)
    without_rabatt = [a for a in hogia.DEFAULT_ARTICLES if a["articleNumber"] != "rabatt"]
    async with serve_sim(hogia.create_app(articles=without_rabatt)) as sim:
        dest = hogia_dest(sim.base_url, register)
        async with running(dest):
            await dest.fetch_register()
            unknown_sale = sale(1)
            unknown_sale["data"]["lines"][0]["sku"] = "9999999999999"
            await dest.send(batch([unknown_sale]))
    problems = {p["code"]: p for p in dest.problems()}
    assert set(problems) == {"register_cost_articles_missing", "register_unknown_sku"}
    assert "Lägg upp artiklarna rabatt" in problems["register_cost_articles_missing"]["text"]
    assert "rabatt" in problems["register_cost_articles_missing"]["text_en"]
    assert "9999999999999" in problems["register_unknown_sku"]["text"]
    # Once Hogia Smart has the article, the problem goes.
    register.save(
        parse_articles({"articles": [*hogia.DEFAULT_ARTICLES, {"articleNumber": "9999999999999"}]}), datetime.now(UTC)
    )
    assert dest.problems() == []


def test_a_register_older_than_a_day_is_a_problem(db: Path) -> None:
    register = ArticleRegister(db)
    fetched = datetime.now(UTC) - timedelta(hours=25)
    register.save(parse_articles({"articles": hogia.DEFAULT_ARTICLES}), fetched)
    assert [p["code"] for p in register.problems()] == ["register_stale"]
    assert "25 timmar gammalt" in register.problems()[0]["text"]
    assert register.problems(now=fetched + timedelta(hours=23)) == []
