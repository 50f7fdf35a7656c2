"""docs/bookkeeping.md stays true: its sample is the golden file and it names every account key."""

from __future__ import annotations

from pathlib import Path

from agent.sie.config import SieAccounts, SieDestinationConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "bookkeeping.md").read_text(encoding="utf-8")
GOLDEN = Path(__file__).parent / "golden"


def test_the_sample_files_are_the_golden_days() -> None:
    for name in ("kassabro-20261126-store-001-golden-day.si", "kassabro-20261126-store-001-golden-z.si"):
        sample = (GOLDEN / name).read_bytes().decode("cp437").replace("\r\n", "\n")
        assert f"```\n{sample}```" in DOC, name


def test_every_key_is_documented() -> None:
    for key in SieAccounts.model_fields:
        assert f"`{key}`" in DOC and f"{key} = " in DOC, key
    for key in SieDestinationConfig.model_fields:
        assert f"`{key}`" in DOC, key
