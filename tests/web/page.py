"""Helpers for reading the status page in Chromium, shared by the browser tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.web.conftest import DOCS_IMG


def open_page(browser: WebDriver, url: str) -> None:
    """Load ``url`` with the console emptied first, so its own load-time messages stay readable."""
    browser.get_log("browser")
    browser.get(url)


def console_errors(browser: WebDriver) -> list[dict]:
    """Console messages at level SEVERE or WARNING (CSP violations are SEVERE)."""
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def headline(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "headline").text


def card_state(browser: WebDriver, name: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f'.card[data-destination="{name}"]').get_attribute("data-state")


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 15.0) -> bool:
    """Poll ``condition`` at most ``timeout_s`` seconds, 0.2 s apart."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.2) + 1):
        try:
            if condition():
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return False


def screenshot(browser: WebDriver, name: str) -> None:
    """A full-page phone-width screenshot into docs/img/."""
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(420, max(800, int(height) + 140))
    browser.find_element(By.TAG_NAME, "body").screenshot(str(DOCS_IMG / name))
    browser.set_window_size(420, 1400)
