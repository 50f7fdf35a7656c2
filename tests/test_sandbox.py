"""``check-config`` refuses a SIE ``dir`` the service could never write under the unit's sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sandbox import SHIPPED_UNIT, installed_unit, parse_unit, write_problem
from tests.test_cli import kassabro


def test_the_shipped_unit_leaves_only_its_state_and_spool_writable() -> None:
    box = installed_unit(SHIPPED_UNIT)
    assert box is not None and box.strict
    assert box.allows(Path("/var/lib/kassabro/sie")) and box.allows(Path("/var/spool/kassabro"))
    assert not box.allows(Path("/srv/kassabro/sie")) and not box.allows(Path("/var/lib/kassabro-other"))
    assert not box.allows(Path("/tmp/sie"))  # PrivateTmp: a private /tmp the accountant never sees
    problem = write_problem(Path("/srv/kassabro/sie"), box)
    assert problem is not None
    assert "ProtectSystem=strict" in problem and "ReadWritePaths=/srv/kassabro/sie" in problem
    assert "/etc/systemd/system/kassabro.service.d/sie.conf" in problem


def test_a_drop_in_makes_a_directory_writable(tmp_path: Path) -> None:
    unit = tmp_path / "kassabro.service"
    unit.write_text(SHIPPED_UNIT.read_text())
    (tmp_path / "kassabro.service.d").mkdir()
    (tmp_path / "kassabro.service.d" / "sie.conf").write_text("[Service]\nReadWritePaths=/srv/kassabro/sie\n")
    box = installed_unit(unit)
    assert box is not None and box.allows(Path("/srv/kassabro/sie/2026"))
    assert parse_unit(["[Service]\nProtectSystem=full\n"]).allows(Path("/srv/x"))


@pytest.mark.slow
def test_check_config_names_the_key_and_the_drop_in(tmp_path: Path) -> None:
    config = tmp_path / "kassabro.toml"
    config.write_text(
        f'store_id = "s"\ndata_dir = "{tmp_path / "data"}"\n\n[[destinations]]\nname = "bok"\nkind = "sie"\n'
        'dir = "/srv/kassabro/sie"\norgnr = "556677-8899"\ncompany_name = "Butik AB"\n',
        encoding="utf-8",
    )
    refused = kassabro("check-config", "--config", config, "--unit", SHIPPED_UNIT)
    assert refused.returncode == 2
    assert "destinations[0].dir: /srv/kassabro/sie is not writable for the service" in refused.stderr
    assert "ReadWritePaths=/srv/kassabro/sie" in refused.stderr
    config.write_text(config.read_text().replace("/srv/kassabro/sie", "/var/lib/kassabro/sie"), encoding="utf-8")
    accepted = kassabro("check-config", "--config", config, "--unit", SHIPPED_UNIT)
    assert accepted.returncode == 0, accepted.stderr
