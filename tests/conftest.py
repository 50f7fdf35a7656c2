"""Suite-wide settings and the fixtures every area shares.

``soak``-marked tests run for a long time (``make soak`` sets ``KASSABRO_SOAK=1``
and selects them); in a normal run they are deselected, not skipped, so
``make test`` neither runs nor reports them, whichever folder is collected.

``outbox`` is a started :class:`~agent.outbox.service.Outbox` in ``tmp_path``,
closed after the test; a folder whose records carry another store id
overrides ``store_id``, and a module that needs destinations registered
overrides ``outbox`` with one that takes this one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox.service import Outbox
from tests.helpers import STORE_ID


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KASSABRO_SOAK"):
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


@pytest.fixture
def store_id() -> str:
    return STORE_ID


@pytest.fixture
async def outbox(tmp_path: Path, store_id: str) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", store_id=store_id)
    await box.start()
    try:
        yield box
    finally:
        await box.close()
