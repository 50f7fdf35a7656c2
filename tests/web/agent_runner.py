"""A real Kassabro agent in a background thread, for the browser and API tests.

Selenium is synchronous, the agent is asyncio: the agent gets a thread with its
own event loop; tests talk to it over HTTP like a till, a browser and a
Prometheus scraper would.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from agent.app import Agent
from agent.config import build_config

ADMIN_TOKEN = "admin-token-for-the-tests"


class AgentThread:
    """Start ``Agent(config)`` on a private event loop; ``stop()`` shuts it down cleanly."""

    def __init__(self, tmp: Path, destinations: list[dict[str, Any]]) -> None:
        token_file = tmp / "admin-token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        self.config = build_config(
            {
                "store_id": "butik-17",
                "data_dir": str(tmp / "data"),
                "ingest": {"listen": "127.0.0.1:0"},
                "status": {"listen": "127.0.0.1:0", "admin_token_file": str(token_file)},
                "flow": {
                    "sales_to_hogia": "kassabro",
                    "webshop_stock": "kassabro",
                },  # setup (b): Hogia and Sharespine get all from Kassabro
                "destinations": destinations,
            }
        )
        (tmp / "data").mkdir(exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kassabro-agent", daemon=True)
        self.agent: Agent | None = None

    def start(self) -> AgentThread:
        self._thread.start()
        self.agent = self.call(self._start())
        return self

    async def _start(self) -> Agent:
        agent = Agent(self.config)
        await agent.start()
        return agent

    def call(self, coroutine: Any, timeout_s: float = 20.0) -> Any:
        """Run a coroutine on the agent's loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout_s)

    @property
    def status_url(self) -> str:
        assert self.agent is not None
        return f"http://127.0.0.1:{self.agent.status_port}"

    @property
    def ingest_url(self) -> str:
        assert self.agent is not None
        return f"http://127.0.0.1:{self.agent.ingest_port}"

    def stop(self) -> None:
        if self.agent is not None:
            self.call(self.agent.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
