"""The status page in a real headless Chromium: what the shop owner sees.

The provider is ``tests.web.shop.ShopState`` (values the test sets), because
here the page is the unit under test: its wording, its live updates and its
actions. Screenshots of the three states go to docs/img/ for the README.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.web import shop
from tests.web.conftest import ServedApp
from tests.web.page import (
    card_state,
    click,
    console_errors,
    headline,
    open_page,
    screenshot,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_all_fine_says_all_sent(browser: WebDriver, serve) -> None:
    app: ServedApp = serve(shop.all_fine())
    open_page(browser, app.url + "/?lang=sv")
    assert headline(browser) == "Allt är skickat"
    assert card_state(browser, "hogia") == "online"
    assert card_state(browser, "sharespine") == "online"
    assert browser.find_element(By.ID, "accepted-total").text == "812"
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart")
    screenshot(browser, "status-ok.png")
    assert console_errors(browser) == []


def test_internet_down_shows_backlog_and_since_when(browser: WebDriver, serve) -> None:
    app: ServedApp = serve(shop.offline())
    open_page(browser, app.url + "/?lang=sv")
    assert headline(browser) == "3 försäljningar väntar – internet nere sedan 14:02"
    assert card_state(browser, "hogia") == "offline"
    card = browser.find_element(By.CSS_SELECTOR, '.card[data-destination="hogia"]')
    assert card.find_element(By.CSS_SELECTOR, ".badge").text == "Nås inte"
    assert card.find_element(By.CSS_SELECTOR, ".pending").text == "3"
    assert card.find_element(By.CSS_SELECTOR, ".oldest").text == "18 min"
    assert "Når inte servern (nätverket)" in card.find_element(By.CSS_SELECTOR, ".last-error").text
    details = card.find_element(By.CSS_SELECTOR, ".error-details")
    details.find_element(By.TAG_NAME, "summary").click()  # the raw error, one click away
    assert "connection refused" in details.find_element(By.CSS_SELECTOR, ".raw-error").text
    screenshot(browser, "status-offline.png")
    assert console_errors(browser) == []

    browser.find_element(By.ID, "lang-switch").click()
    wait_until(lambda: headline(browser) == "3 sales waiting – internet down since 14:02")
    # The choice is remembered: the plain address now answers in English too.
    open_page(browser, app.url + "/")
    assert headline(browser) == "3 sales waiting – internet down since 14:02"
    open_page(browser, app.url + "/?lang=sv")


def test_dead_letters_are_listed_with_their_reasons(browser: WebDriver, serve) -> None:
    app: ServedApp = serve(shop.with_dead_letters())
    open_page(browser, app.url + "/?lang=sv")
    assert headline(browser) == "Hogia tog inte emot 2 poster – se listan nedan"
    letters = browser.find_elements(By.CSS_SELECTOR, ".dead-letter")
    assert [el.get_attribute("data-record-id")[-4:] for el in letters] == ["4101", "4090"]
    assert "article 7310865000000 does not exist" in letters[0].find_element(By.CSS_SELECTOR, ".reason").text
    assert "svar 422" in letters[0].find_element(By.CSS_SELECTOR, ".reason").text
    screenshot(browser, "status-dead-letters.png")
    assert console_errors(browser) == []


def test_live_update_shows_a_growing_backlog_without_reload(browser: WebDriver, serve) -> None:
    state = shop.all_fine()
    app: ServedApp = serve(state)
    open_page(browser, app.url + "/?lang=en&refresh=1")
    assert headline(browser) == "All sent"
    browser.execute_script("window.kassabroMarker = 'same page'")

    state.update(
        "hogia",
        state="offline",
        pending=5,
        pending_by_type={"sale": 5, "stock_movement": 0},
        oldest_pending_age_s=120,
        offline_since=shop.iso(shop.NOW.replace(minute=2)),
    )
    wait_until(lambda: card_state(browser, "hogia") == "offline", what=lambda: headline(browser))
    assert headline(browser) == "5 sales waiting – hogia unreachable since 14:02"
    assert browser.find_element(By.CSS_SELECTOR, '.card[data-destination="hogia"] .pending').text == "5"

    state.update("hogia", state="online", pending=0, pending_by_type={"sale": 0, "stock_movement": 0})
    wait_until(lambda: headline(browser) == "All sent")
    assert browser.execute_script("return window.kassabroMarker") == "same page"
    assert console_errors(browser) == []


def test_retry_needs_the_admin_token(browser: WebDriver, serve) -> None:
    state = shop.with_dead_letters()
    app: ServedApp = serve(state)
    open_page(browser, app.url + "/?lang=en")

    # A wrong token: refused, nothing changed, the reason is shown.
    browser.find_element(By.ID, "admin-token").send_keys("not-the-token")
    click(browser, By.CSS_SELECTOR, '.dead-letter[data-record-id$="4101"] .retry-one')
    wait_until(lambda: browser.find_element(By.ID, "flash").text == "Wrong admin token – nothing was changed.")
    assert state.actions == []
    assert len(browser.find_elements(By.CSS_SELECTOR, ".dead-letter")) == 2
    refusals = [e["message"] for e in console_errors(browser)]
    assert len(refusals) == 1 and "/actions" in refusals[0] and "401" in refusals[0], refusals

    # The right token: the one dead letter goes back to the queue.
    token = browser.find_element(By.ID, "admin-token")
    token.clear()
    token.send_keys(state.admin_token)
    click(browser, By.CSS_SELECTOR, '.dead-letter[data-record-id$="4101"] .retry-one')
    wait_until(lambda: browser.find_element(By.ID, "flash").text == "Done: 1 record queued to be sent again.")
    assert [(a.name, a.destination, a.ids) for a in state.actions] == [
        ("retry", "hogia", ["0193a1b2-0000-7000-8000-000000004101"])
    ]
    letters = browser.find_elements(By.CSS_SELECTOR, ".dead-letter")
    assert [el.get_attribute("data-record-id")[-4:] for el in letters] == ["4090"]
    # The token is never put back into the page.
    assert state.admin_token not in browser.page_source
    assert console_errors(browser) == []


ERRORS = {
    "network": ("hogia.example.se: All connection attempts failed (ConnectError)", "Når inte servern (nätverket)"),
    "dns": ("[Errno -2] Name or service not known", "Namnet på servern går inte att slå upp"),
    "login": ("POST /api/v1/orders: HTTP 401: Hogia refused our credentials", "Inloggningen nekades"),
    "refused": ("HTTP 422: article 7310865000000 does not exist", "Servern nekade en post"),
}


def test_each_error_class_is_explained_in_swedish_with_the_raw_error_under_details(browser: WebDriver, serve) -> None:
    state = shop.offline()
    app: ServedApp = serve(state)
    for error_class, (raw, swedish) in ERRORS.items():
        state.update("hogia", last_error=raw)

        def shows(wanted: str = error_class) -> bool:
            # The page keeps its answers for a moment: load it again until the new error shows.
            open_page(browser, app.url + "/?lang=sv")
            line = browser.find_element(By.CSS_SELECTOR, '.card[data-destination="hogia"] .last-error')
            return line.get_attribute("data-error-class") == wanted

        wait_until(shows)
        card = browser.find_element(By.CSS_SELECTOR, '.card[data-destination="hogia"]')
        line = card.find_element(By.CSS_SELECTOR, ".last-error")
        assert swedish in line.text and raw not in line.text
        details = card.find_element(By.CSS_SELECTOR, ".error-details")
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.find_element(By.CSS_SELECTOR, ".raw-error").text == raw
    assert console_errors(browser) == []


def test_a_bad_address_is_not_called_internet_down(browser: WebDriver, serve) -> None:
    state = shop.offline()  # every network destination unreachable...
    state.update("hogia", last_error="[Errno -2] Name or service not known")  # ...one of them by a wrong name
    app: ServedApp = serve(state)
    open_page(browser, app.url + "/?lang=sv")
    assert "internet" not in headline(browser)
    assert "hogia" in headline(browser)
    open_page(browser, app.url + "/?lang=en")
    assert "internet" not in headline(browser).lower()
