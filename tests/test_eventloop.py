"""agent.eventloop: uvloop where it is installed, asyncio's loop where it is not (32-bit Raspberry Pi OS)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent import eventloop
from tests.helpers import KassabroProcess, make_sale, wait_until


def test_auto_takes_uvloop_when_installed_and_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.chosen() == "uvloop"  # make test installs the lock, uvloop included on this machine
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.chosen() == "asyncio"
    monkeypatch.setenv(eventloop.ENV, " UVLOOP ")
    assert eventloop.chosen() == "uvloop"


def test_a_wrong_value_or_a_missing_uvloop_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(eventloop.ENV, "tokio")
    with pytest.raises(eventloop.EventLoopError, match="KASSABRO_EVENT_LOOP='tokio': use auto, asyncio or uvloop"):
        eventloop.chosen()
    monkeypatch.setattr("sys.path", [str(no_wheels(tmp_path)), *__import__("sys").path])
    monkeypatch.delitem(__import__("sys").modules, "uvloop", raising=False)
    monkeypatch.setenv(eventloop.ENV, "auto")
    assert eventloop.chosen() == "asyncio"
    monkeypatch.setenv(eventloop.ENV, "uvloop")
    with pytest.raises(eventloop.EventLoopError, match="uvloop is not installed"):
        eventloop.chosen()


def no_wheels(root: Path) -> Path:
    """A directory that, first on the path, makes uvloop and httptools unimportable, as on a 32-bit Pi."""
    blocked = root / "no-wheels"
    for name in ("uvloop", "httptools"):
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(f'raise ImportError("no {name} wheel for armv7l (test)")\n')
    return blocked


def post_a_sale(agent: KassabroProcess, receipt_no: int) -> None:
    token = {"Authorization": "Bearer " + agent.token} if getattr(agent, "token", None) else {}
    answer = httpx.post(f"{agent.ingest_url}/v1/sales", json=make_sale(receipt_no), headers=token, timeout=10)
    assert answer.status_code == 201, answer.text
    again = httpx.post(f"{agent.ingest_url}/v1/sales", json=make_sale(receipt_no), headers=token, timeout=10)
    assert again.status_code == 200 and again.json()["id"] == answer.json()["id"], "a resend is the same record"


@pytest.mark.slow
@pytest.mark.parametrize("wheels", ["installed", "missing"])
def test_the_agent_serves_sales_with_and_without_the_uvloop_and_httptools_wheels(tmp_path: Path, wheels: str) -> None:
    """The 32-bit Raspberry Pi OS bundle carries neither (deploy/dist.py OPTIONAL): the agent must still run."""
    agent = KassabroProcess(tmp_path)
    env = {"PYTHONPATH": f"{no_wheels(tmp_path)}:{Path.cwd()}"} if wheels == "missing" else {}
    agent.start(env=env)
    try:
        post_a_sale(agent, 1)
        loop = "asyncio loop" if wheels == "missing" else "uvloop loop"
        wait_until(lambda: loop in agent.log_path.read_text(), what=f"the start line naming the {loop}")
    finally:
        assert agent.terminate() == 0, agent.log_tail()
