"""agent.app's process entry: what ``kassabro run`` does around the ``Agent``."""

from __future__ import annotations

import gc
from pathlib import Path

from agent.app import Agent, run_agent
from agent.config import load_config
from tests.helpers import free_port


async def test_the_agent_process_takes_its_start_out_of_the_collectors_sight(tmp_path: Path) -> None:
    """A full collection under load must not walk every module and model (a till's sale waited 20-40 ms here)."""
    config = tmp_path / "kassabro.toml"
    config.write_text(
        f'store_id = "s1"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[ingest]\nlisten = "127.0.0.1:{free_port()}"\n[status]\nlisten = "127.0.0.1:{free_port()}"\n',
        encoding="utf-8",
    )
    assert gc.get_freeze_count() == 0
    frozen: list[int] = []

    async def ready(agent: Agent) -> None:
        frozen.append(gc.get_freeze_count())
        gc.collect()  # what a full collection finds to walk now is only what came after
        frozen.append(len(gc.get_objects(generation=2)))
        agent.request_stop()

    try:
        await run_agent(load_config(config), on_ready=ready)
    finally:
        gc.unfreeze()  # the test session's own objects go back to the collector
    assert frozen[0] > 50_000, "the modules, models and routes of the start are frozen"
    assert frozen[1] < frozen[0] // 5
