"""Fixtures: the simulators served on loopback, and a way to reach their ledgers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.simulators import _server


class Sim:
    """A running simulator: its base URL and helpers for its ledger and knobs."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10)

    async def ledger(self) -> dict[str, Any]:
        response = await self.http.get("/_ledger")
        response.raise_for_status()
        return response.json()

    async def faults(self, **knobs: Any) -> dict[str, Any]:
        response = await self.http.post("/_faults", json=knobs)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def serve_sim():
    """``async with serve_sim(app) as sim``: serve a simulator app for one test."""

    import contextlib

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Sim]:
        async with _server.serve(app) as base_url:
            sim = Sim(base_url)
            try:
                yield sim
            finally:
                await sim.http.aclose()

    return run


@pytest.fixture
def secret_file(tmp_path):
    """Write a secret file (with a trailing newline, as editors do); returns its path."""

    def write(name: str, secret: str):
        path = tmp_path / name
        path.write_text(f"  {secret}\n", encoding="utf-8")
        return path

    return write
