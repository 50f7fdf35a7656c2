"""The status page of a real agent: a till posts sales, a receiver takes or refuses them.

Everything is real: the agent (outbox in tmp_path, delivery loop, status app),
the generic HTTP receiver simulator with its fault knobs, the ingest API, and
a headless Chromium watching the page update by itself.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import make_sale
from tests.web.agent_runner import ADMIN_TOKEN, AgentThread
from tests.web.page import click, console_errors, headline, open_page, wait_until

pytestmark = pytest.mark.slow


def post_sale(agent: AgentThread, receipt_no: int, **kwargs: str) -> None:
    answer = httpx.post(agent.ingest_url + "/v1/sales", json=make_sale(receipt_no, **kwargs))
    assert answer.status_code == 201, answer.text


def faults(receiver: str, **knobs: object) -> None:
    if knobs:
        httpx.post(receiver + "/_faults", json=knobs).raise_for_status()
    else:
        httpx.delete(receiver + "/_faults").raise_for_status()


def metrics(agent: AgentThread) -> dict[tuple[str, tuple[str, ...]], float]:
    """One scrape of ``/metrics``: ``{(sample name, label values): value}``."""
    scrape = httpx.get(agent.status_url + "/metrics").text
    return {
        (s.name, tuple(s.labels.values())): s.value for f in text_string_to_metric_families(scrape) for s in f.samples
    }


def dead_letter_ids(browser: WebDriver) -> list[str]:
    return [el.get_attribute("data-record-id") for el in browser.find_elements(By.CSS_SELECTOR, ".dead-letter")]


def test_page_follows_a_real_agent_through_refusal_retry_and_outage(
    browser: WebDriver, agent: AgentThread, receiver: str
) -> None:
    faults(receiver, refuse_skus=["UTGATT-1"])
    open_page(browser, agent.status_url + "/?lang=en&refresh=1")
    assert headline(browser) == "All sent"

    post_sale(agent, 1)
    post_sale(agent, 2, sku="UTGATT-1")
    wait_until(
        lambda: headline(browser) == "Webhook refused 1 record – see the list below", what=lambda: headline(browser)
    )
    [refused_id] = dead_letter_ids(browser)
    reason = browser.find_element(By.CSS_SELECTOR, ".dead-letter .reason").text
    assert "answer 422" in reason and "UTGATT-1" in reason, reason

    # The receiver is fixed; a wrong token changes nothing, the right one replays the record.
    faults(receiver)
    browser.find_element(By.ID, "admin-token").send_keys("wrong")
    click(browser, By.ID, "retry-all")
    wait_until(lambda: browser.find_element(By.ID, "flash").text == "Wrong admin token – nothing was changed.")
    assert dead_letter_ids(browser) == [refused_id]
    browser.get_log("browser")  # the 401 of the refused form post is expected
    browser.find_element(By.ID, "admin-token").clear()
    browser.find_element(By.ID, "admin-token").send_keys(ADMIN_TOKEN)
    click(browser, By.ID, "retry-all")
    wait_until(lambda: browser.find_element(By.ID, "flash").text == "Done: 1 record queued to be sent again.")
    wait_until(lambda: headline(browser) == "All sent", what=lambda: headline(browser))
    ledger = httpx.get(receiver + "/_ledger").json()
    assert sorted(r["key"] for r in ledger["records"]) == ["sale:kassa-1:1", "sale:kassa-1:2"]

    # The receiver goes down: the backlog and the outage show without a reload.
    faults(receiver, down="503")
    post_sale(agent, 3)
    post_sale(agent, 4)
    wait_until(
        lambda: headline(browser).startswith("2 sales waiting – webhook unreachable since"),
        what=lambda: headline(browser),
    )
    card = browser.find_element(By.CSS_SELECTOR, '.card[data-destination="webhook"]')
    assert card.get_attribute("data-state") == "offline"
    assert card.find_element(By.CSS_SELECTOR, ".pending").text == "2"

    faults(receiver)
    wait_until(lambda: headline(browser) == "All sent", what=lambda: headline(browser))
    assert console_errors(browser) == []


def test_api_status_and_metrics_match_the_outbox(agent: AgentThread, receiver: str) -> None:
    faults(receiver, down="503")
    for receipt_no in (10, 11, 12):
        post_sale(agent, receipt_no)

    def webhook() -> dict:
        return httpx.get(agent.status_url + "/api/status").json()["destinations"][0]

    # The status is a snapshot read at most once a moment: wait for one taken after all three.
    wait_until(lambda: (webhook()["state"], webhook()["pending"]) == ("offline", 3))
    body = httpx.get(agent.status_url + "/api/status").json()
    assert body["store_id"] == "butik-17"
    assert body["outbox"]["records"] == 6  # three sales and their derived stock movements
    assert body["ingest"]["accepted_total"] >= 3
    assert (webhook()["pending"], webhook()["dead_letters"]) == (3, 0)

    values = metrics(agent)
    assert values[("kassabro_pending_records", ("webhook",))] == 3
    assert values[("kassabro_outbox_records", ())] == 6
    assert values[("kassabro_delivery_failures_total", ("webhook", "retryable"))] >= 1

    faults(receiver)
    wait_until(lambda: webhook()["pending"] == 0)
    # The outbox shows a batch delivered as soon as its completion commits (the status
    # reads on a connection of its own); the delivery loop counts it when the commit's
    # answer reaches the event loop, a moment later on a busy machine. Wait for the count.
    delivered = ("kassabro_delivered_records_total", ("webhook",))
    values = wait_until(lambda: (v := metrics(agent))[delivered] >= 3 and v, what=lambda: metrics(agent))
    assert values[("kassabro_pending_records", ("webhook",))] == 0
    assert values[delivered] == 3


def test_healthz_turns_503_when_the_outbox_cannot_be_written(agent: AgentThread) -> None:
    assert httpx.get(agent.status_url + "/healthz").json() == {"ok": True}
    # Another process holds the write lock: the agent's outbox takes no writes.
    blocker = sqlite3.connect(agent.config.outbox_path, timeout=1, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        answers = []
        deadline = time.monotonic() + 30
        for _ in range(10):
            answer = httpx.get(agent.status_url + "/healthz", timeout=15)
            answers.append((answer.status_code, answer.json()))
            if answer.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answers[-1][0] == 503, answers
        assert answers[-1][1]["ok"] is False and answers[-1][1]["reason"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_until(lambda: httpx.get(agent.status_url + "/healthz", timeout=15).status_code == 200, timeout=30)
