"""Reconciliation as the shop sees it: a real agent, a till posting over HTTP, the page in Chromium.

A till sends a day's receipts with two missing and one its own bug breaks
(refused with 422), then its Z-report; the page, ``/api/status`` and
``/metrics`` say which receipts are missing, in Swedish and in English. The
till resends; the problem clears by itself, without a reload.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import make_sale, make_z_report
from tests.web.agent_runner import AgentThread
from tests.web.page import console_errors, headline, open_page, screenshot, wait_until

pytestmark = pytest.mark.slow

DAY = [make_sale(n) for n in range(1001, 1013)]
MISSING = (1004, 1010, 1011)


def post(agent: AgentThread, path: str, body: dict[str, Any]) -> int:
    return httpx.post(agent.ingest_url + path, json=body).status_code


def notes(browser: WebDriver) -> list[str]:
    return [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".notes li")]


def page_says(browser: WebDriver, text: str) -> bool:
    return text in [headline(browser), *notes(browser)]


def gauges(agent: AgentThread) -> dict[tuple[str, tuple[str, ...]], float]:
    scrape = httpx.get(agent.status_url + "/metrics").text
    return {
        (s.name, tuple(s.labels.values())): s.value for f in text_string_to_metric_families(scrape) for s in f.samples
    }


def test_missing_and_refused_receipts_show_until_they_arrive(browser: WebDriver, agent: AgentThread) -> None:
    for sale in DAY:
        if sale["receipt_no"] == 1004:
            assert post(agent, "/v1/sales", sale | {"total": "31.81"}) == 422  # the till's bug
        elif sale["receipt_no"] not in MISSING:
            assert post(agent, "/v1/sales", sale) == 201
    assert post(agent, "/v1/z-reports", make_z_report(245, 1001, 1012, sales=DAY)) == 201

    sv = "Problem: Kassa 1, Z 245: 3 kvitton saknas (1004, 1010, 1011); 1004 avvisades av agenten: total: "
    open_page(browser, agent.status_url + "/?lang=sv&refresh=1")
    wait_until(lambda: any(n.startswith(sv) for n in [headline(browser), *notes(browser)]), what=lambda: notes(browser))
    row = browser.find_element(By.CSS_SELECTOR, '#tills .till[data-till="kassa-1"]')
    assert row.find_element(By.CSS_SELECTOR, ".missing").text == "3"
    assert row.find_element(By.CSS_SELECTOR, ".last-receipt").text == "1012"
    assert row.find_element(By.CSS_SELECTOR, ".last-z").text == "Z 245 kvitton saknas"
    screenshot(browser, "status-reconciliation.png")

    open_page(browser, agent.status_url + "/?lang=en&refresh=1")
    en = "Problem: Till 1, Z 245: 3 receipts missing (1004, 1010, 1011); 1004 was refused by the agent: total: "
    wait_until(lambda: any(n.startswith(en) for n in [headline(browser), *notes(browser)]), what=lambda: notes(browser))
    assert browser.find_element(By.CSS_SELECTOR, "#tills .last-z").text == "Z 245 receipts missing"

    body = httpx.get(agent.status_url + "/api/status").json()
    [problem] = body["problems"]
    assert problem["code"] == "z_missing_receipts" and problem["since"]
    assert problem["text"].startswith(sv.removeprefix("Problem: "))
    [till] = body["tills"]
    assert till["missing_receipts"] == 3 and till["missing"] == list(MISSING)
    assert till["last_z"]["z_no"] == 245 and till["last_z"]["state"] == "missing_receipts"
    values = gauges(agent)
    assert values[("kassabro_till_missing_receipts", ("kassa-1",))] == 3
    assert values[("kassabro_till_last_z_reconciled", ("kassa-1",))] == 0
    assert values[("kassabro_problems", ("z_missing_receipts",))] == 1

    # The till resends what was missing (1004 fixed): the page clears by itself.
    for sale in DAY:
        if sale["receipt_no"] in MISSING:
            assert post(agent, "/v1/sales", sale) == 201
    wait_until(lambda: browser.find_element(By.CSS_SELECTOR, "#tills .missing").text == "0")
    assert browser.find_element(By.CSS_SELECTOR, "#tills .last-z").text == "Z 245 matches"
    assert not any("Till 1" in n for n in [headline(browser), *notes(browser)])
    assert httpx.get(agent.status_url + "/api/status").json()["problems"] == []
    assert gauges(agent)[("kassabro_till_last_z_reconciled", ("kassa-1",))] == 1
    assert console_errors(browser) == []


def test_a_z_report_one_ore_off_is_shown_figure_by_figure(browser: WebDriver, agent: AgentThread) -> None:
    day = DAY[:3]
    for sale in day:
        assert post(agent, "/v1/sales", sale) == 201
    z = make_z_report(12, 1001, 1003, sales=day)
    assert post(agent, "/v1/z-reports", z | {"vat": [{"rate": 12, "amount": "10.24"}]}) == 201
    open_page(browser, agent.status_url + "/?lang=sv&refresh=1")
    expected = "Problem: Kassa 1, Z 12 stämmer inte med kvittona: moms 12 %: Z 10,24, kvitton 10,23"
    wait_until(lambda: page_says(browser, expected), what=lambda: (headline(browser), notes(browser)))
    assert browser.find_element(By.CSS_SELECTOR, "#tills .last-z").text == "Z 12 stämmer inte"
