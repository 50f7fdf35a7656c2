"""The example config install.sh copies: valid as shipped, and every key shown.

The example is the technician's reference, so it must not drift from the
config models: every key of every section and of every destination kind
appears in it (commented keys show the default), and every commented-out
destination becomes a valid one when uncommented.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from agent.config import (
    IngestConfig,
    OutboxConfig,
    Settings,
    SkusConfig,
    StatusConfig,
    build_config,
)
from agent.configbase import DestinationBase
from agent.destinations.kinds import KINDS
from agent.flow import FlowConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "raspberrypi" / "kassabro.toml"
COMMON_KEYS = set(DestinationBase.model_fields)


def shown_keys(text: str) -> set[str]:
    """Keys written as ``key =`` or as a sub-table (``[destinations.key]``, ``[[ingest.key]]``), commented or not.

    An alternative to a key of the block (``hosts`` for ``host``) is commented twice
    (``# # key =``), so the block stays valid when uncommented.
    """
    keys = set(re.findall(r"^#?\s*(?:#\s*)?([a-z_0-9]+)\s*=", text, re.MULTILINE))
    return keys | set(re.findall(r"^#?\s*\[\[?(?:destinations|ingest)\.([a-z_0-9]+)\]", text, re.MULTILINE))


def destination_blocks(text: str) -> list[str]:
    """Each commented ``# [[destinations]]`` block, uncommented."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.strip() == "# [[destinations]]":
            current = ["[[destinations]]"]
            blocks.append("")
        elif current is not None and line.startswith("# "):
            current.append(line[2:])
        else:
            if current is not None:
                blocks[-1] = "\n".join(current)
            current = None
    if current is not None:
        blocks[-1] = "\n".join(current)
    return blocks


def test_example_is_valid_as_shipped() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    config = build_config(raw, EXAMPLE, check_secrets=False)
    assert config.data_dir == Path("/var/lib/kassabro")
    assert config.ingest.token_file == Path("/etc/kassabro/ingest.token")
    assert config.status.admin_token_file == Path("/etc/kassabro/admin.token")
    assert config.destinations == []
    # Setup (a), the seed's flow: the till reports to Hogia Smart itself (docs/setups.md).
    assert (config.flow.sales_to_hogia, config.flow.webshop_stock) == ("till", "hogia")


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("", Settings),
        ("ingest", IngestConfig),
        ("outbox", OutboxConfig),
        ("status", StatusConfig),
        ("skus", SkusConfig),
        ("flow", FlowConfig),
    ],
)
def test_every_key_is_shown(section: str, model: type) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    fields = set(model.model_fields) - {"ingest", "outbox", "status", "skus", "flow", "destinations"}
    assert fields - shown_keys(text) == set()
    if section:
        assert f"[{section}]" in text


def test_every_destination_kind_has_a_valid_example(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    blocks = destination_blocks(text)
    kinds = {}
    for block in blocks:
        # Files the example names (certificates, secrets) exist here, in tmp_path.
        for name in re.findall(r'"/etc/kassabro/([^"]+)"', block):
            (tmp_path / name).write_text("secret\n")
        raw = tomllib.loads(block.replace('"/etc/kassabro/', f'"{tmp_path}/'))
        (dest,) = raw["destinations"]
        kinds[dest["kind"]] = block
        # Each block valid in the flow that allows it: the hogia block as shown
        # books nothing (setup a); the sharespine block sends stock (setup b).
        flow = {"webshop_stock": "kassabro"} if dest["kind"] == "sharespine" else {}
        config = build_config({"store_id": "s", "flow": flow, "destinations": [dest]})
        assert config.destinations[0].kind == dest["kind"]
    assert set(kinds) == set(KINDS)
    for kind, block in kinds.items():
        missing = set(KINDS[kind].config.model_fields) - COMMON_KEYS - shown_keys(block)
        assert missing == set(), f"{kind}: keys not shown in the example: {missing}"
