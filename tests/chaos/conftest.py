"""Chaos tests run the real ``kassabro run`` in a subprocess and treat it roughly.

Their ``soak`` variants are deselected by ``tests/conftest.py`` unless
``KASSABRO_SOAK`` is set (``make soak``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.simulators._server import ServerThread
from agent.simulators.receiver import create_app as create_receiver
from tests.helpers import KassabroProcess


class AgentProcess(KassabroProcess):
    """``kassabro run`` with one http destination, for crash and full-disk tests.

    Args:
        root: a directory for the config, the log and (unless given) the data.
        data_dir: where the outbox lives (default ``root/data``).
        max_bytes: ``[outbox] max_bytes``.
        destination_url: the one http destination's url (default: a closed port,
            so delivery keeps failing and retrying, writing its cursor as it goes).
    """

    def __init__(
        self,
        root: Path,
        *,
        data_dir: Path | None = None,
        max_bytes: int | None = None,
        destination_url: str = "http://127.0.0.1:9/in",
    ):
        outbox = f"[outbox]\nmax_bytes = {max_bytes}\n" if max_bytes is not None else ""
        destination = (
            f'[[destinations]]\nname = "backend"\nkind = "http"\nurl = "{destination_url}"\n'
            "backoff_base_s = 0.2\nbackoff_cap_s = 1.0\n"
        )
        super().__init__(root, outbox + destination, data_dir=data_dir)

    def start(self, timeout: float | None = None, *, faults: Sequence[str] = ()) -> None:
        """Start without waiting: a crash test may kill it during start-up."""
        super().start(timeout, faults=faults)


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Any]:
    """``agent_process(**kwargs) -> AgentProcess``; every one started is killed at teardown."""
    started: list[AgentProcess] = []

    def make(**kwargs: Any) -> AgentProcess:
        root = tmp_path / f"agent{len(started)}"
        root.mkdir()
        agent = AgentProcess(root, **kwargs)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.kill()


@pytest.fixture
def receiver() -> Iterator[str]:
    """A backend that accepts every batch at ``/in`` (the generic receiver simulator); yields its base URL."""
    server = ServerThread(create_receiver(path="/in"))
    try:
        yield server.start()
    finally:
        server.stop()
