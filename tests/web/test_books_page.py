"""The Bokföring panel of a real agent with a ``sie`` destination: the files per day, downloads behind the token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from agent.sie.reader import read_strict
from tests.helpers import make_sale
from tests.web.agent_runner import ADMIN_TOKEN, AgentThread
from tests.web.page import console_errors, open_page, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def booking(tmp_path: Path) -> Iterator[AgentThread]:
    running = AgentThread(
        tmp_path,
        [
            {
                "name": "bokforing",
                "kind": "sie",
                "dir": str(tmp_path / "sie"),
                "orgnr": "556677-8899",
                "company_name": "Butik AB",
            }
        ],
    ).start()
    yield running
    running.stop()


def test_the_books_are_listed_and_downloaded_with_the_admin_token(browser: WebDriver, booking: AgentThread) -> None:
    for n in (1, 2, 3):
        assert httpx.post(booking.ingest_url + "/v1/sales", json=make_sale(n)).status_code == 201
    assert booking.agent is not None
    dest = booking.agent.destinations["bokforing"]
    report = booking.call(dest.run_now())  # the nightly run, now (the sales are of 2026-11-26)
    assert report.records == 3
    [file] = list((booking.config.destinations[0].dir).glob("*.si"))

    open_page(browser, booking.status_url + "/?lang=sv&refresh=1")
    assert wait_until(
        lambda: bool(browser.find_elements(By.CSS_SELECTOR, f'#books .book-file[data-file="{file.name}"]'))
    )
    row = browser.find_element(By.CSS_SELECTOR, "#books .book-file")
    assert row.get_attribute("data-ok") == "yes"
    assert "2026-11-26 · 1 verifikat · balanserar" in row.text
    assert row.find_element(By.CSS_SELECTOR, "button.download").text == "Ladda ner"
    open_page(browser, booking.status_url + "/?lang=en&refresh=1")
    assert wait_until(lambda: "1 voucher · balances" in browser.find_element(By.ID, "books").text)
    assert console_errors(browser) == []

    form = {"token": ADMIN_TOKEN, "file": f"bokforing/{file.name}", "lang": "sv"}
    got = httpx.post(booking.status_url + "/books/download", data=form)
    assert got.status_code == 200 and got.content == file.read_bytes()
    assert got.headers["content-disposition"] == f'attachment; filename="{file.name}"'
    assert read_strict(got.content).vouchers[0].text.endswith("(3 kvitton)")
    wrong = httpx.post(booking.status_url + "/books/download", data=form | {"token": "guess"})
    assert wrong.status_code == 401 and file.read_bytes() not in wrong.content

    api = booking.status_url + f"/api/books/bokforing/{file.name}"
    assert httpx.get(api).status_code == 401
    assert httpx.get(api, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).content == file.read_bytes()
    for name in (".kassabro-sie-state.json", "..%2Foutbox.db", "x.si"):
        answer = httpx.get(
            booking.status_url + f"/api/books/bokforing/{name}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert answer.status_code == 404, name
    assert httpx.get(booking.status_url + "/api/status").json()["destinations"][0]["pending"] == 0
