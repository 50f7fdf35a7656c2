"""An agent running in the test's event loop, its ingest API on a real loopback port.

The configured destination is paused in the outbox before the agent starts,
so nothing but ingest writes to the file: a test can compare a dump of every
table before and after a request and expect it to be identical.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app import Agent
from agent.config import Config, build_config
from agent.outbox.store import OutboxStore
from tests.helpers import KassabroProcess, dump_tables

DESTINATION = "backend"


@dataclass
class RunningAgent:
    """An in-process agent and a client for its ingest API."""

    agent: Agent
    config: Config
    client: httpx.AsyncClient

    @property
    def db(self) -> Path:
        return self.config.outbox_path

    def dump(self, *, exclude: tuple[str, ...] = ()) -> list[str]:
        return dump_tables(self.db, exclude=exclude)


def agent_config(
    tmp_path: Path,
    *,
    listen: str = "127.0.0.1:0",
    token: str | None = None,
    max_bytes: int | None = None,
    destination_url: str = "http://127.0.0.1:9/in",
    spool_dir: Path | None = None,
    tills: dict[str, str] | None = None,
    ingest: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> Config:
    """A config for an in-process agent on loopback; ``tills`` is till_id -> its own token.

    ``ingest`` and ``status`` add keys to those sections as given (TLS files, ``allow_plain_http``).
    """
    raw: dict[str, Any] = {
        "store_id": "store-001",
        "data_dir": str(tmp_path / "data"),
        "ingest": {"listen": listen},
        "status": {"listen": "127.0.0.1:0"},
        "destinations": [
            {"name": DESTINATION, "kind": "http", "url": destination_url, "backoff_base_s": 0.05, "backoff_cap_s": 0.2}
        ],
    }
    if token is not None:
        token_file = tmp_path / "ingest.token"
        token_file.write_text(f"{token}\n", encoding="utf-8")  # a trailing newline, as editors write
        raw["ingest"]["token_file"] = str(token_file)
    for till_id, till_token in (tills or {}).items():
        till_file = tmp_path / f"till-{till_id}.token"
        till_file.write_text(f"{till_token}\n", encoding="utf-8")
        raw["ingest"].setdefault("tills", []).append({"id": till_id, "token_file": str(till_file)})
    raw["ingest"].update(ingest or {})
    raw["status"].update(status or {})
    if max_bytes is not None:
        raw["outbox"] = {"max_bytes": max_bytes}
    if spool_dir is not None:
        raw["ingest"]["spool_dir"] = str(spool_dir)
    return build_config(raw)


def pause_destination(config: Config) -> None:
    """Create the outbox with the destination already paused, so delivery never writes."""
    store = OutboxStore.open(config.outbox_path, store_id=config.store_id)
    try:
        store.register_destinations([(DESTINATION, "http", ["sale", "stock_movement"])])
        store.set_paused(DESTINATION, True)
    finally:
        store.close()


@contextlib.asynccontextmanager
async def running_agent(
    config: Config, *, paused: bool = True, connect_host: str = "127.0.0.1"
) -> AsyncIterator[RunningAgent]:
    if paused:
        pause_destination(config)
    agent = Agent(config)
    await agent.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{connect_host}:{agent.ingest_port}", timeout=20) as client:
            yield RunningAgent(agent, config, client)
    finally:
        await agent.stop()


@pytest.fixture
def start_agent(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[RunningAgent]]:
    """``async with start_agent(token=..., max_bytes=...) as running``."""

    def start(*, paused: bool = True, connect_host: str = "127.0.0.1", **config_keys: Any):
        return running_agent(agent_config(tmp_path, **config_keys), paused=paused, connect_host=connect_host)

    return start


def rss(pid: int) -> int:
    """The process's resident memory in bytes (``VmRSS`` of ``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def rss_watch(agent: KassabroProcess, limit: int, every_s: float = 0.05) -> Iterator[list[int]]:
    """Sample the subprocess agent's RSS every 50 ms while the block runs; assert it stayed under ``limit``.

    The list holds the samples, for a test that also wants the peak.
    """
    assert agent.proc is not None
    pid = agent.proc.pid
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append(rss(pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            done.wait(every_s)

    sampler = threading.Thread(target=sample, name="rss-watch", daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        done.set()
        sampler.join(5)
    assert samples, "the agent's memory was never sampled"
    assert max(samples) < limit, f"the agent's RSS reached {max(samples) / 2**20:.0f} MiB"
