"""The article register in a real agent: read from the simulated Hogia at start, shown on the page.

Setup (a) of docs/setups.md: the hogia destination books nothing
(``send_records = false``) and only reads the register; the shop sees how many
articles it holds and how old it is, and a missing cost article as a problem
saying, in Swedish first, what to create in Hogia Smart.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from agent.simulators import hogia
from agent.simulators._server import ServerThread
from tests.helpers import make_sale
from tests.web.agent_runner import AgentThread
from tests.web.page import open_page, wait_until

pytestmark = pytest.mark.slow


def test_the_page_shows_the_register_and_what_to_create_in_hogia(browser: WebDriver, tmp_path: Path) -> None:
    articles = [a for a in hogia.DEFAULT_ARTICLES if a["articleNumber"] != "expavg"]
    server = ServerThread(hogia.create_app(articles=articles))
    url = server.start()
    agent = AgentThread(
        tmp_path,
        [{"name": "hogia", "kind": "hogia", "base_url": url, "auth": "none", "send_records": False}],
    ).start()
    try:

        def register() -> dict | None:
            return httpx.get(agent.status_url + "/api/status").json().get("register")

        def hogia_card() -> dict:
            return httpx.get(agent.status_url + "/api/status").json()["destinations"][0]

        wait_until(lambda: register() is not None, what="the register read at start")
        summary = register()
        assert summary is not None and summary["articles"] == len(articles) and summary["webshop_articles"] == 1
        open_page(browser, agent.status_url + "/?lang=sv")
        shown = browser.find_element(By.ID, "article-register").text
        assert f"{len(articles)} artiklar, 1 i webbutiken" in shown
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "Lägg upp artiklarna expavg i artikelregistret i Hogia Smart" in page

        # A sale it looks at is "read", never "sent": the till books it in Hogia Smart, not Kassabro.
        assert httpx.post(agent.ingest_url + "/v1/sales", json=make_sale(1)).status_code == 201
        wait_until(lambda: hogia_card()["pending"] == 0, what="the sale looked at")
        assert hogia_card()["reads_only"] is True
        assert httpx.get(url + "/_ledger").json()["orders"] == []

        def chips() -> list[str]:  # the page's data may be up to a second old: read it again until it shows
            open_page(browser, agent.status_url + "/?lang=sv")
            return [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".chip")]

        wait_until(lambda: "hogia: läst (kassan bokför)" in chips(), what="the sale listed as read")
        assert not any("skickad" in c for c in chips())
        card = browser.find_element(By.CSS_SELECTOR, '.card[data-destination="hogia"]').text
        assert "läser artikelregistret, bokför inget" in card
    finally:
        agent.stop()
        server.stop()
