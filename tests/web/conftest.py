"""Fixtures for the status page tests: the app served on loopback, and a real Chromium.

The app runs in uvicorn on 127.0.0.1 with a free port, in a thread with its
own event loop, so httpx and the browser talk to it over real HTTP. The
browser is Debian's chromium driven by selenium through /usr/bin/chromedriver,
one for the whole run (starting and quitting it is the slow part, 3 s on a
loaded machine), handed to each test module as a fresh one: no cookies, no
cache, an empty console, the usual window size.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from agent.simulators._server import ServerThread
from agent.simulators.receiver import create_app as create_receiver
from agent.web.app import create_status_app
from agent.web.provider import StatusProvider
from tests.web.agent_runner import AgentThread
from tests.web.shop import NOW

STOCKHOLM = timezone(timedelta(hours=1), "CET")
"""The shop's time in November, fixed so the tests need no time zone database."""
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


class ServedApp:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: object) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="status-app", daemon=True
        )

    def start(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the status app did not start within 10 s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ServedApp]]:
    """Serve a provider's status app; ``now`` is frozen at ``tests.web.shop.NOW`` unless a clock is given.

    Other keyword arguments (the pacing) go to ``create_status_app``.
    """
    served: list[ServedApp] = []

    def start(
        provider: StatusProvider,
        *,
        frozen: bool = True,
        clock: Callable[[], datetime] | None = None,
        **options: Any,
    ) -> ServedApp:
        now: Callable[[], datetime] | None = clock or ((lambda: NOW) if frozen else None)
        app = ServedApp(create_status_app(provider, tz=STOCKHOLM, now=now, **options)).start()
        served.append(app)
        return app

    yield start
    for app in served:
        app.stop()


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile and its console log readable; tests take ``browser``."""
    profile = tempfile.mkdtemp(prefix="kassabro-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=420,1400",
        "--lang=sv-SE",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(chromium: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    """The run's Chromium as a module finds a new one; the module's tests share it.

    Nothing of the last module's stays: its page is left (about:blank, so it
    no longer polls a server that is gone), cookies (the page's language) and
    cache are cleared, the console is emptied and the window has its size.
    """
    chromium.get("about:blank")
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.execute_cdp_cmd("Network.clearBrowserCache", {})
    chromium.set_window_size(420, 1400)
    chromium.get_log("browser")
    yield chromium
    chromium.get("about:blank")


@pytest.fixture
def receiver() -> Iterator[str]:
    """The generic HTTP receiver simulator on loopback; its base URL."""
    server = ServerThread(create_receiver())
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def agent(tmp_path: Path, receiver: str) -> Iterator[AgentThread]:
    """A real agent (outbox in tmp_path) delivering sales to ``receiver`` as destination ``webhook``."""
    running = AgentThread(
        tmp_path,
        [
            {
                "name": "webhook",
                "kind": "http",
                "url": receiver + "/ingest",
                "types": ["sale"],
                "backoff_base_s": 0.2,
                "backoff_cap_s": 0.5,
                "timeout_s": 2,
            }
        ],
    ).start()
    yield running
    running.stop()
