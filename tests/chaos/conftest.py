"""Chaos tests run the real ``kassabro run`` in a subprocess and treat it roughly.

Their ``soak`` variants are deselected by ``tests/conftest.py`` unless
``KASSABRO_SOAK`` is set (``make soak``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, port_accepts


class AgentProcess:
    """``kassabro run`` on loopback ports that stay the same across restarts.

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
        self.root = root
        self.data_dir = data_dir or root / "data"
        self.ingest_port = free_port()
        self.status_port = free_port()
        self.config_path = root / "kassabro.toml"
        self.log_path = root / "agent.log"
        lines = [
            'store_id = "store-001"',
            f'data_dir = "{self.data_dir}"',
            "[ingest]",
            f'listen = "127.0.0.1:{self.ingest_port}"',
            "[status]",
            f'listen = "127.0.0.1:{self.status_port}"',
        ]
        if max_bytes is not None:
            lines += ["[outbox]", f"max_bytes = {max_bytes}"]
        lines += [
            "[[destinations]]",
            'name = "backend"',
            'kind = "http"',
            f'url = "{destination_url}"',
            "backoff_base_s = 0.2",
            "backoff_cap_s = 1.0",
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def db(self) -> Path:
        return self.data_dir / "outbox.db"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts + 1}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the ingest port accepts; fail loudly (with the log) otherwise."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kassabro run exited with {self.proc.returncode}:\n{self.log_tail()}")
            if port_accepts(self.ingest_port):
                return
            time.sleep(0.01)
        raise AssertionError(f"kassabro run not ready within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the clean stop systemd asks for. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"kassabro run ignored SIGTERM for {timeout} s:\n{self.log_tail()}") from None
        return int(self.proc.returncode)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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
