"""``[flow]`` (docs/setups.md): Kassabro never sends Hogia or Sharespine what they already get.

A technician who enables the ``hogia`` destination beside a till that reports
to Hogia Smart itself books every sale twice; nothing at the shop would show
it until the accountant does. So ``check-config`` and start-up refuse it,
naming the flow and the page that explains the setups, and every example
config a technician copies passes as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import tlscert
from agent.cli import main

ROOT = Path(__file__).resolve().parents[1]
SETUPS = ROOT / "docs" / "setups.md"
EXAMPLE = ROOT / "deploy" / "raspberrypi" / "kassabro.toml"


def localised(text: str, tmp_path: Path) -> str:
    """The config with /etc/kassabro and /var/lib/kassabro moved under tmp_path, every named secret written."""
    for name in re.findall(r'"/etc/kassabro/([^"]+)"', text):
        secret = tmp_path / "etc" / name
        secret.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("tls/"):  # a real certificate: check-config loads it with its key
            if not secret.exists():
                tlscert.renew(tmp_path / "etc" / "tls" / "cert.pem", tmp_path / "etc" / "tls" / "key.pem")
            continue
        secret.write_text("secret\n", encoding="utf-8")
    (tmp_path / "var").mkdir(exist_ok=True)
    return text.replace('"/etc/kassabro/', f'"{tmp_path}/etc/').replace('"/var/lib/kassabro', f'"{tmp_path}/var')


def check_config(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "kassabro.toml"
    path.write_text(localised(text, tmp_path), encoding="utf-8")
    # No systemd sandbox here: the files live under tmp_path, not /var/lib/kassabro.
    code = main(["check-config", "--config", str(path), "--unit", str(tmp_path / "no-unit.service")])
    out, err = capsys.readouterr()
    return code, out, err


def setup_blocks() -> dict[str, str]:
    """docs/setups.md's complete example configs, by the setup their first line names."""
    blocks = re.findall(r"```toml\n(.*?)```", SETUPS.read_text(encoding="utf-8"), re.DOTALL)
    return {re.match(r"# Setup \((\w)\)", block).group(1): block for block in blocks}  # type: ignore[union-attr]


@pytest.mark.parametrize("setup", ["a", "b"])
def test_each_setup_in_the_docs_passes_check_config(
    setup: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check_config(tmp_path, setup_blocks()[setup], capsys)
    assert (code, err) == (0, "")
    assert "hogia: hogia" in out


def test_the_shipped_example_is_setup_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check_config(tmp_path, EXAMPLE.read_text(encoding="utf-8"), capsys)
    assert (code, err) == (0, "")
    # Setup (a)'s hogia block, uncommented into the shipped file, still passes: it books nothing.
    hogia_block = setup_blocks()["a"].split("[[destinations]]")[1]
    text = EXAMPLE.read_text(encoding="utf-8") + "\n[[destinations]]" + hogia_block
    code, _, err = check_config(tmp_path, text, capsys)
    assert (code, err) == (0, "")


HOGIA = '[[destinations]]\nname = "hogia"\nkind = "hogia"\nbase_url = "http://127.0.0.1:9"\nauth = "none"\n'
SHARESPINE = '[[destinations]]\nname = "ss"\nkind = "sharespine"\nbase_url = "http://127.0.0.1:9"\nauth = "none"\n'

FORBIDDEN = {
    "hogia books sales beside the till": ("", HOGIA, "sales_to_hogia", "would book sale and stock_movement"),
    "hogia books stock beside the till": (
        '[flow]\nsales_to_hogia = "till"\nwebshop_stock = "kassabro"\n',
        HOGIA + 'types = ["stock_movement"]\n',
        "sales_to_hogia",
        "would book stock_movement",
    ),
    "hogia explicitly sending records": ("", HOGIA + "send_records = true\n", "sales_to_hogia", "would book"),
    "sharespine stock while it reads Hogia": ("", SHARESPINE, "webshop_stock", "Sharespine already reads stock"),
    "sharespine stock in setup b's sales path": (
        '[flow]\nsales_to_hogia = "kassabro"\n',
        SHARESPINE + 'types = ["stock_movement"]\n',
        "webshop_stock",
        "Sharespine already reads stock",
    ),
    "sharespine orders while it reads Hogia": (
        "",
        SHARESPINE + 'types = ["sale"]\nsales_as_orders = true\n',
        "webshop_stock",
        "every sale would show twice in Sharespine",
    ),
}


@pytest.mark.parametrize("case", FORBIDDEN)
def test_check_config_refuses_what_hogia_already_gets(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow, destination, key, says = FORBIDDEN[case]
    code, out, err = check_config(tmp_path, f'store_id = "s"\n{flow}\n{destination}', capsys)
    assert code == 2 and out == ""
    assert ("destinations[0].sales_as_orders" if "orders" in case else "destinations[0].types") in err
    assert key in err and says in err and "docs/setups.md" in err


@pytest.mark.parametrize(
    ("flow", "destination"),
    [
        ("", HOGIA + "send_records = false\n"),
        ("", SHARESPINE + 'types = ["sale"]\n'),
        ('[flow]\nsales_to_hogia = "kassabro"\n', HOGIA),
        ('[flow]\nwebshop_stock = "kassabro"\n', SHARESPINE),
        ('[flow]\nwebshop_stock = "kassabro"\n', SHARESPINE + "sales_as_orders = true\n"),
    ],
)
def test_what_the_flow_allows_passes(
    flow: str, destination: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = check_config(tmp_path, f'store_id = "s"\n{flow}\n{destination}', capsys)
    assert (code, err) == (0, "")


def test_an_unknown_flow_value_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = check_config(tmp_path, 'store_id = "s"\n[flow]\nsales_to_hogia = "both"\n', capsys)
    assert code == 2 and "flow.sales_to_hogia" in err


@pytest.mark.slow
def test_start_up_refuses_a_double_counting_config(tmp_path: Path) -> None:
    path = tmp_path / "kassabro.toml"
    path.write_text(f'store_id = "s"\ndata_dir = "{tmp_path}/data"\n{HOGIA}', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "sales_to_hogia" in result.stderr and "docs/setups.md" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before the outbox was opened
