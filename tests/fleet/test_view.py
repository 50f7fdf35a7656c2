"""The fleet view in Chromium over real shops: offline within the keepalive, missing receipts, Swedish and English."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from fleet.simulate import Chain, ShopPlan
from fleet.web.app import FleetView, create_app
from tests.fleet.conftest import SHOPS, ChainSide, ConsumerProcess
from tests.fleet.link import CuttableLink
from tests.helpers import eventually
from tests.web.conftest import ServedApp
from tests.web.page import open_page, screenshot

pytestmark = pytest.mark.slow

KEEPALIVE_S = 5


def row_state(browser: WebDriver, store: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'tr.shop[data-store="{store}"]').get_attribute("data-state") or ""


async def seconds_until(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``condition()`` (run in a thread: selenium blocks the loop) holds."""
    started = time.monotonic()
    await eventually(lambda: asyncio.to_thread(condition), timeout_s, interval=0.2, ignoring=(WebDriverException,))
    return time.monotonic() - started


@pytest.fixture
def view_app(chain: ChainSide) -> Iterator[ServedApp]:
    view = FleetView(chain.dsn, nats_urls=chain.cluster.urls, user="fleet", password=chain.cluster.fleet_password)
    served = ServedApp(create_app(view, refresh_s=1)).start()
    try:
        yield served
    finally:
        served.stop()


async def test_fleet_view_offline_within_keepalive_missing_receipts_both_languages(
    chain: ChainSide, view_app: ServedApp, browser: WebDriver, tmp_path: Path
) -> None:
    node = chain.cluster.nodes[0]
    link = CuttableLink(node.mqtt_port)
    await link.start()
    cut_shop = Chain([ShopPlan("shop-000", SHOPS["shop-000"], receipts=3)], [("127.0.0.1", link.port)],
                     keepalive_s=KEEPALIVE_S, ramp_s=0, status_interval_s=1)  # fmt: skip
    others = Chain(
        [
            ShopPlan("shop-001", SHOPS["shop-001"], receipts=6, skip=frozenset({3, 4}), z_every=6),
            ShopPlan("shop-002", SHOPS["shop-002"], receipts=4),
        ],
        chain.mqtt_hosts,
        keepalive_s=KEEPALIVE_S,
        ramp_s=0,
        status_interval_s=1,
    )
    worker = ConsumerProcess(chain, tmp_path / "worker.log")
    worker.start()
    try:
        await cut_shop.start()
        await others.start()
        assert await cut_shop.wait_done(30) and await others.wait_done(30)
        await asyncio.to_thread(open_page, browser, view_app.url + "/?lang=sv")

        def all_online_with_gap() -> bool:
            browser.refresh()
            states = [row_state(browser, s) for s in ("shop-000", "shop-001", "shop-002")]
            missing = browser.find_element(By.CSS_SELECTOR, 'tr[data-store="shop-001"] td.missing')
            backlog = browser.find_element(By.CSS_SELECTOR, 'tr[data-store="shop-002"] td.backlog').text
            return states == ["online"] * 3 and missing.get_attribute("data-missing") == "2" and backlog == "chain: 0"

        await seconds_until(all_online_with_gap, 30)
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.shop")
        assert rows[0].get_attribute("data-store") == "shop-001", "the shop needing a person comes first"
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "2 kvitton saknas" in body and "Behöver en person" in body and "Online sedan" in body

        link.cut()
        elapsed = await seconds_until(lambda: row_state(browser, "shop-000") == "offline", 1.5 * KEEPALIVE_S + 10)
        # The broker gives up on a silent client after 1.5 x keepalive (MQTT 3.1.1 §3.1.2.10); the
        # rest is the will through the stream, a fetch, a commit and the page's 1 s reload.
        assert elapsed <= 1.5 * KEEPALIVE_S + 5, f"offline after {elapsed:.1f} s"
        print(f"shop-000 offline on the page {elapsed:.1f} s after its link was cut (keepalive {KEEPALIVE_S} s)")
        await asyncio.to_thread(screenshot, browser, "fleet-view.png")
        order = [r.get_attribute("data-store") for r in browser.find_elements(By.CSS_SELECTOR, "tr.shop")]
        assert order.index("shop-002") == 2, "the shop needing nobody comes last"
        assert re.search(r"Offline sedan \d\d:\d\d", browser.find_element(By.TAG_NAME, "body").text)

        browser.find_element(By.ID, "lang-switch").click()
        text = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "body").text)
        assert "2 receipts missing" in text and "Offline since" in text and "Needs a person" in text
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"

        await asyncio.to_thread(browser.get, view_app.url + "/shops/shop-001")
        numbers = browser.find_element(By.CSS_SELECTOR, '#tills tr[data-till="kassa-1"] td.missing-numbers').text
        assert numbers == "3, 4"
        assert "Missing numbers" in browser.find_element(By.ID, "tills").text  # the cookie kept English
        z_row = browser.find_element(By.CSS_SELECTOR, "#z-reports tbody tr")
        assert "4 / 6" in z_row.text and "problem" in (z_row.get_attribute("class") or "")

        metrics = httpx.get(view_app.url + "/metrics").text
        assert re.search(r"^kassabro_fleet_shops_offline 1\.0$", metrics, re.M)
        assert re.search(r"^kassabro_fleet_missing_receipts 2\.0$", metrics, re.M)
        assert re.search(r"^kassabro_fleet_consumer_lag 0\.0$", metrics, re.M), metrics
    finally:
        await cut_shop.stop()
        await others.stop()
        await link.close()
        worker.stop()
