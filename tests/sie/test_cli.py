"""``kassabro sie show`` and ``kassabro sie export`` as the shop's technician runs them (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.outbox.store import OutboxStore
from agent.records import parse_record
from agent.sie.reader import read_strict
from tests.sie.factory import golden_sales

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).parent / "golden" / "kassabro-20261126-store-001-golden-day.si"


def kassabro(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_sie_show(tmp_path: Path) -> None:
    good = kassabro("sie", "show", str(GOLDEN))
    assert good.returncode == 0, good.stderr
    assert "Checksum: OK" in good.stdout and "Balance:  OK" in good.stdout
    bad = tmp_path / "bad.si"
    bad.write_bytes(GOLDEN.read_bytes().replace(b"Kassa kassa-1", b"Kassa kassa-9"))
    tampered = kassabro("sie", "show", str(bad))
    assert tampered.returncode == 1
    assert "Checksum: NOT OK" in tampered.stderr


def test_sie_export_a_day_once(tmp_path: Path) -> None:
    data_dir, sie_dir = tmp_path / "data", tmp_path / "sie"
    config = tmp_path / "kassabro.toml"
    config.write_text(
        f'store_id = "store-001"\ndata_dir = "{data_dir}"\n\n'
        f'[[destinations]]\nname = "bokforing"\nkind = "sie"\ndir = "{sie_dir}"\n'
        'orgnr = "556677-8899"\ncompany_name = "Kafé & Bok \\"Hörnan\\" AB"\n',
        encoding="utf-8",
    )
    store = OutboxStore.open(data_dir / "outbox.db", store_id="store-001")
    store.enqueue([parse_record("sale", s) for s in golden_sales()])
    store.close()

    first = kassabro("sie", "export", "--config", str(config), "--date", "2026-11-26")
    assert first.returncode == 0, first.stderr
    assert "6 sale(s) exported in 1 file(s)" in first.stdout
    [file] = list(sie_dir.glob("*.si"))
    assert len(read_strict(file.read_bytes()).vouchers) == 1

    second = kassabro("sie", "export", "--config", str(config), "--date", "2026-11-26")
    assert second.returncode == 0 and "nothing to export" in second.stdout
    assert list(sie_dir.glob("*.si")) == [file]

    usage = kassabro("sie", "export", "--config", str(config), "--date", "26/11/2026")
    assert usage.returncode == 2 and "--date" in usage.stderr
