"""Suite-wide settings.

``soak``-marked tests run for a long time (``make soak`` sets ``KASSABRO_SOAK=1``
and selects them); in a normal run they are deselected, not skipped, so
``make test`` neither runs nor reports them, whichever folder is collected.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KASSABRO_SOAK"):
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]
