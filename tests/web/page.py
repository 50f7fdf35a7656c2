"""Helpers for reading the status page in Chromium, shared by the browser tests."""

from __future__ import annotations

import functools

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests import helpers
from tests.web.conftest import DOCS_IMG

wait_until = functools.partial(helpers.wait_until, timeout=15.0, interval=0.2, ignoring=(Exception,))
"""The shared wait, polling a page: an element being redrawn counts as "not yet"."""


def open_page(browser: WebDriver, url: str) -> None:
    """Load ``url`` with the console emptied first, so its own load-time messages stay readable."""
    browser.get_log("browser")
    browser.get(url)


def console_errors(browser: WebDriver) -> list[dict]:
    """Console messages at level SEVERE or WARNING (CSP violations are SEVERE)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def click(browser: WebDriver, by: str, selector: str) -> None:
    """Click the element, found afresh until the click lands.

    The live part of the page is redrawn every refresh: a button found a moment
    ago may be replaced before the click reaches it (a stale element). The
    click is then made on the new one; a click that landed is never repeated.
    """

    def attempt() -> bool:
        browser.find_element(by, selector).click()
        return True

    helpers.wait_until(attempt, timeout=15.0, interval=0.05, ignoring=(StaleElementReferenceException,))


def headline(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "headline").text


def card_state(browser: WebDriver, name: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'.card[data-destination="{name}"]').get_attribute("data-state")


def screenshot(browser: WebDriver, name: str) -> None:
    """A full-page phone-width screenshot into docs/img/."""
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(420, max(800, int(height) + 140))
    browser.find_element(By.TAG_NAME, "body").screenshot(str(DOCS_IMG / name))
    browser.set_window_size(420, 1400)
