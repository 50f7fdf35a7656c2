"""``kassabro init``: a technician's first run writes a config that passes check-config and starts.

What they rely on: the answers decide setup (a) or (b) of docs/setups.md
correctly, each till named gets its own token file nobody else can read, a
working config is never overwritten by accident, and the interactive run on a
real terminal asks in Swedish first and takes Enter for the default.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from agent.cli import main
from tests.helpers import free_port, make_sale, wait_for_port

pytestmark = pytest.mark.slow


def init(*args: str | Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KASSABRO_")}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "init", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


def check_config(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", "--config", str(config), "--unit", str(config.parent / "no-unit.service")])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture
def hogia_key(tmp_path: Path) -> Path:
    path = tmp_path / "hogia-key.txt"
    path.write_text("the-hogia-key\n", encoding="utf-8")
    return path


def setup_a(tmp_path: Path, hogia_key: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    config = tmp_path / "etc" / "kassabro.toml"
    result = init(
        "--non-interactive", "--config", config, "--store-id", "butik-17", "--till", "kassa-1", "--till", "kassa-2",
        "--hogia-url", "http://127.0.0.1:9", "--hogia-key-file", hogia_key, "--sie", "--orgnr", "556677-8899",
        "--company-name", "Butiken AB", "--data-dir", tmp_path / "data",
    )  # fmt: skip
    return config, result


def test_setup_a_non_interactive_passes_check_config_and_starts(
    tmp_path: Path, hogia_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, result = setup_a(tmp_path, hogia_key)
    assert result.returncode == 0, result.stderr
    assert "setup (a)" in result.stdout and "fraktavg, expavg och rabatt" in result.stdout
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    assert raw["flow"] == {"sales_to_hogia": "till", "webshop_stock": "hogia"}
    assert [d["name"] for d in raw["destinations"]] == ["hogia", "bokforing"]
    assert raw["destinations"][0]["send_records"] is False
    tokens = {t["id"]: Path(t["token_file"]) for t in raw["ingest"]["tills"]}
    assert set(tokens) == {"kassa-1", "kassa-2"}
    assert len({p.read_text() for p in tokens.values()}) == 2  # each till its own token
    for path in [*tokens.values(), config.parent / "admin.token", config.parent / "hogia.token"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (config.parent / "hogia.token").read_text().strip() == "the-hogia-key"
    assert check_config(config, capsys)[0] == 0

    # It starts, and a till's own token stores its sale.
    ingest, status = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KASSABRO_")},
        "KASSABRO_INGEST__LISTEN": f"127.0.0.1:{ingest}",
        "KASSABRO_STATUS__LISTEN": f"127.0.0.1:{status}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_port(ingest), "the agent did not start"
        token = tokens["kassa-1"].read_text().strip()
        # Over HTTPS, trusting the certificate init made for this machine (it names 127.0.0.1).
        answer = httpx.post(
            f"https://127.0.0.1:{ingest}/v1/sales",
            json=make_sale(1, till_id="kassa-1"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=ssl.create_default_context(cafile=str(config.parent / "tls" / "cert.pem")),
        )
        assert answer.status_code in (200, 201), answer.text
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_setup_b_non_interactive_passes_check_config(
    tmp_path: Path, hogia_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "kassabro.toml"
    result = init(
        "--non-interactive", "--config", config, "--store-id", "butik-17", "--till", "kassa-1",
        "--sales-to-hogia", "kassabro", "--webshop-stock", "kassabro",
        "--hogia-url", "http://127.0.0.1:9", "--hogia-key-file", hogia_key,
        "--sharespine-url", "http://127.0.0.1:9", "--sharespine-key-file", hogia_key, "--no-sie",
        "--data-dir", tmp_path / "data",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "setup (b)" in result.stdout and "Stäng av kassans egen synk" in result.stdout
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    assert raw["flow"] == {"sales_to_hogia": "kassabro", "webshop_stock": "kassabro"}
    assert [(d["kind"], d.get("send_records", True)) for d in raw["destinations"]] == [
        ("hogia", True),
        ("sharespine", True),
    ]
    assert check_config(config, capsys)[0] == 0


def test_init_never_overwrites_without_force(tmp_path: Path, hogia_key: Path) -> None:
    config, first = setup_a(tmp_path, hogia_key)
    assert first.returncode == 0
    before = config.read_text()
    till_token = (config.parent / "tills" / "kassa-1.token").read_text()
    again = init("--non-interactive", "--config", config, "--store-id", "other")
    assert again.returncode == 2 and "--force" in again.stderr
    assert config.read_text() == before
    forced = init("--non-interactive", "--force", "--config", config, "--store-id", "other")
    assert forced.returncode == 0, forced.stderr
    assert 'store_id = "other"' in config.read_text()
    # A till's token survives a re-init: the till keeps working.
    assert (config.parent / "tills" / "kassa-1.token").read_text() == till_token


def test_init_refuses_a_sharespine_stock_destination_while_hogia_owns_stock(tmp_path: Path, hogia_key: Path) -> None:
    config = tmp_path / "etc" / "kassabro.toml"
    result = init(
        "--non-interactive", "--config", config, "--sharespine-url", "http://127.0.0.1:9",
        "--sharespine-key-file", hogia_key,
    )  # fmt: skip
    assert result.returncode == 2 and "webshop_stock" in result.stderr and "docs/setups.md" in result.stderr
    assert not config.exists()


def converse(argv: list[str], answers: list[tuple[str, str]], timeout: float = 30.0) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal; on each prompt (text seen since the last answer) type the answer."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling tty, as for a technician over SSH
        env = {k: v for k, v in os.environ.items() if not k.startswith("KASSABRO_")}
        os.execve(sys.executable, [sys.executable, *argv], env)
    seen = ""
    mark = 0  # where the text after the last answer starts
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096).decode("utf-8", "replace")
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and pending[0][0] in seen[mark:]:
                _, answer = pending.pop(0)
                mark = len(seen)
                os.write(fd, answer.encode() + b"\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert not pending, f"never asked {pending[0][0]!r}:\n{seen}"
    return os.waitstatus_to_exitcode(status), seen


def test_interactive_run_on_a_terminal_writes_setup_a(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "etc" / "kassabro.toml"
    code, transcript = converse(
        ["-m", "agent.cli", "init", "--config", str(config), "--data-dir", str(tmp_path / "data")],
        [
            ("Store id [store-001]", "butik-17"),
            ("Tills, comma separated [kassa-1]", "kassa-1, kassa-2"),
            ("report to Hogia Smart itself", ""),  # Enter: yes, setup (a)
            ("Hogia API address", "http://127.0.0.1:9"),
            ("Hogia API key (not shown)", "typed-hogia-key"),
            ("Who gives the webshop its stock", "kanske"),  # not an option: asked again
            ("Answer hogia or kassabro", "hogia"),
            ("The chain's backend", ""),
            ("SIE files for the accountant", "n"),
        ],
    )
    assert code == 0, transcript
    assert "typed-hogia-key" not in transcript  # the key is not echoed
    assert "Nästa steg / Next steps" in transcript
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    assert raw["store_id"] == "butik-17"
    assert raw["flow"]["sales_to_hogia"] == "till"
    assert [t["id"] for t in raw["ingest"]["tills"]] == ["kassa-1", "kassa-2"]
    assert (config.parent / "hogia.token").read_text().strip() == "typed-hogia-key"
    assert check_config(config, capsys)[0] == 0


def test_init_replaces_the_installers_placeholder_config(tmp_path: Path, hogia_key: Path) -> None:
    """install.sh leaves the example (store-001, no destination) for init to replace."""
    example = Path(__file__).resolve().parents[1] / "deploy" / "raspberrypi" / "kassabro.toml"
    config = tmp_path / "etc" / "kassabro.toml"
    config.parent.mkdir()
    config.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    result = init("--non-interactive", "--config", config, "--store-id", "butik-17", "--data-dir", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert 'store_id = "butik-17"' in config.read_text()
