"""docs/destinations.md covers every config key and every fault knob (sqlite-utils' docs test idea)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.destinations.hogia import HogiaDestinationConfig
from agent.destinations.http import HttpDestinationConfig
from agent.destinations.sharespine import SharespineDestinationConfig
from agent.simulators.faults import FaultSettings

DOC = (Path(__file__).parents[2] / "docs" / "destinations.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "model", [HttpDestinationConfig, HogiaDestinationConfig, SharespineDestinationConfig, FaultSettings]
)
def test_every_key_is_documented(model):
    missing = [name for name in model.model_fields if f"`{name}" not in DOC and f"{name} =" not in DOC]
    assert missing == []
