"""The ``kassabro`` command as a technician runs it: a real subprocess of the console script.

Exit codes (contract §4): 0 success, 1 failure, 2 usage or config error. The
operator commands read and change the outbox file itself, so they are tested
with the agent stopped, on outboxes filled through ``OutboxStore``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import __version__
from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import movement, movement_json, sale, sale_json

pytestmark = pytest.mark.slow

KASSABRO = Path(sys.executable).with_name("kassabro")
COMMAND = [str(KASSABRO)] if KASSABRO.exists() else [sys.executable, "-m", "agent.cli"]


def kassabro(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real console script; the machine's KASSABRO_ variables are left out."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KASSABRO_")}
    environment.update(env or {})
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "kassabro.toml"
    path.write_text(
        f"""
store_id = "{STORE_ID}"
data_dir = "{tmp_path / "data"}"

[ingest]
listen = "127.0.0.1:18780"

[status]
listen = "127.0.0.1:18781"

[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:9/in"

[[destinations]]
name = "mirror"
kind = "http"
url = "http://127.0.0.1:9/mirror"
types = ["sale"]
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "outbox.db"


@pytest.fixture
def filled(outbox_path: Path) -> Iterator[dict[str, Any]]:
    """An outbox the agent left behind: 3 sales, 1 movement, one dead letter at backend."""
    store = OutboxStore.open(outbox_path, store_id=STORE_ID)
    store.register_destinations([("backend", "http", ["sale", "stock_movement"]), ("mirror", "http", ["sale"])])
    results = store.enqueue([sale(1), sale(2), sale(3)])
    store.enqueue([movement("d-1")])
    batch = store.claim_batch("backend", 2)
    assert batch is not None
    store.complete_batch("backend", batch.batch_id, {results[1].id: (422, "unknown sku SKU-0")})
    store.close()
    yield {"dead_id": results[1].id, "ids": [r.id for r in results]}


def open_store(path: Path) -> OutboxStore:
    return OutboxStore.open(path, store_id=STORE_ID)


# ------------------------------------------------------------------ usage and exit codes
def test_no_command_is_a_usage_error() -> None:
    result = kassabro()
    assert result.returncode == 2
    assert "usage: kassabro" in result.stderr


def test_an_unknown_command_is_a_usage_error() -> None:
    result = kassabro("frobnicate")
    assert result.returncode == 2
    assert "frobnicate" in result.stderr


def test_version() -> None:
    result = kassabro("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_the_commands() -> None:
    result = kassabro("--help")
    assert result.returncode == 0
    for command in ("run", "check-config", "status", "dead-letters", "submit", "pause", "resume"):
        assert command in result.stdout


# ------------------------------------------------------------------ check-config
def test_check_config_accepts_a_good_file(config: Path) -> None:
    result = kassabro("check-config", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "backend: http" in result.stdout
    assert "mirror: http, types sale" in result.stdout


def test_check_config_prints_every_problem_by_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        """
store_id = "store 001"
[ingest]
listen = "0.0.0.0:8780"
[outbox]
retention_days = -1
[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:9/in"
[[destinations]]
name = "relay"
kind = "http"
url = "no url"
colour = "red"
[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:9/other"
""",
        encoding="utf-8",
    )
    result = kassabro("check-config", "--config", bad)

    assert result.returncode == 2
    for key in (
        "store_id",
        "ingest.token_file",
        "outbox.retention_days",
        "destinations[1].url",
        "destinations[1].colour",
        "destinations[2].name",
    ):
        assert f"  {key}: " in result.stderr, key
    assert result.stdout == ""


def test_check_config_names_an_invalid_toml_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('store_id = "x\n', encoding="utf-8")
    result = kassabro("check-config", "--config", bad)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "TOML" in result.stderr


def test_check_config_names_a_missing_secret(tmp_path: Path, config: Path) -> None:
    text = config.read_text(encoding="utf-8").replace(
        'listen = "127.0.0.1:18780"', f'listen = "127.0.0.1:18780"\ntoken_file = "{tmp_path / "no-token"}"'
    )
    config.write_text(text, encoding="utf-8")
    result = kassabro("check-config", "--config", config)
    assert result.returncode == 2
    assert "ingest.token_file" in result.stderr


def test_the_config_path_comes_from_kassabro_config(config: Path, tmp_path: Path) -> None:
    result = kassabro("check-config", env={"KASSABRO_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout

    flag_wins = kassabro("check-config", "--config", config, env={"KASSABRO_CONFIG": str(tmp_path / "nope.toml")})
    assert flag_wins.returncode == 0, flag_wins.stderr


def test_the_environment_overrides_reach_the_cli(config: Path) -> None:
    result = kassabro("check-config", "--config", config, env={"KASSABRO_STORE_ID": "store-env"})
    assert result.returncode == 0
    assert "store store-env" in result.stdout

    bad = kassabro("check-config", "--config", config, env={"KASSABRO_INGEST__LISTEN": "10.1.2.3:80"})
    assert bad.returncode == 2
    assert "ingest.token_file" in bad.stderr


# ------------------------------------------------------------------ status
def test_status_reads_a_stopped_agents_outbox_as_text(config: Path, filled: dict[str, Any]) -> None:
    result = kassabro("status", "--config", config)

    assert result.returncode == 0, result.stderr
    assert f"store {STORE_ID}: 4 records" in result.stdout
    rows = {
        line.split()[0]: line.split() for line in result.stdout.splitlines()[2:] if line and not line.startswith(" ")
    }
    assert rows["backend"][1:4] == ["http", "online", "2"]  # pending: sale 3 and the movement
    assert rows["mirror"][1:4] == ["http", "online", "3"]


def test_status_as_json(config: Path, filled: dict[str, Any]) -> None:
    result = kassabro("status", "--config", config, "--json")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["store_id"] == STORE_ID
    assert status["outbox"]["records"] == 4
    assert status["outbox"]["bytes"] > 0
    dests = {d["name"]: d for d in status["destinations"]}
    assert (dests["backend"]["pending"], dests["backend"]["dead_letters"], dests["backend"]["state"]) == (
        2,
        1,
        "online",
    )
    assert (dests["mirror"]["pending"], dests["mirror"]["dead_letters"]) == (3, 0)
    assert dests["mirror"]["oldest_pending_age_s"] >= 0
    assert dests["backend"]["last_success_at"] is not None


def test_status_shows_a_failing_and_a_paused_destination(
    config: Path, outbox_path: Path, filled: dict[str, Any]
) -> None:
    store = open_store(outbox_path)
    batch = store.claim_batch("backend", 10)
    assert batch is not None
    store.record_failure("backend", batch.batch_id, "connection refused", None)
    store.set_paused("mirror", True)
    store.close()

    text = kassabro("status", "--config", config)
    status = json.loads(kassabro("status", "--config", config, "--json").stdout)

    states = {d["name"]: d["state"] for d in status["destinations"]}
    assert states == {"backend": "offline", "mirror": "paused"}
    assert "last error: connection refused" in text.stdout


def test_status_without_an_outbox_says_so(config: Path) -> None:
    result = kassabro("status", "--config", config)
    assert result.returncode != 0
    assert "no outbox" in result.stderr


def test_operator_commands_on_a_damaged_outbox_fail_in_one_line(config: Path, outbox_path: Path) -> None:
    outbox_path.parent.mkdir(parents=True)
    outbox_path.write_bytes(b"not a database at all\n" * 100)
    before = outbox_path.read_bytes()

    for command in (["status"], ["dead-letters", "list"], ["pause", "backend"]):
        result = kassabro(*command, "--config", config)
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr
        assert "cannot use the outbox" in result.stderr
    assert outbox_path.read_bytes() == before  # only the agent's start moves it aside


def test_a_newer_outbox_is_refused_in_one_line(config: Path, outbox_path: Path) -> None:
    from agent.outbox import schema

    store = open_store(outbox_path)
    store.register_destinations([("backend", "http", ["sale", "stock_movement"])])
    store.conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    store.close()

    result = kassabro("pause", "--config", config, "backend")

    assert result.returncode == 1
    assert "newer" in result.stderr and "Traceback" not in result.stderr


def test_status_with_a_bad_config_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dir = "/tmp"\n', encoding="utf-8")
    result = kassabro("status", "--config", bad)
    assert result.returncode == 2
    assert "store_id" in result.stderr


# ------------------------------------------------------------------ submit
def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_submit_stores_a_batch_file(config: Path, outbox_path: Path, tmp_path: Path) -> None:
    batch = write_json(
        tmp_path / "day.json", {"sales": [sale_json(10, lines=2)], "stock_movements": [movement_json("d-9")]}
    )

    result = kassabro("submit", "--config", config, batch)

    assert result.returncode == 0, result.stderr
    assert f"{batch}: stored" in result.stdout
    answer = json.loads(result.stdout.splitlines()[1])
    assert [r["key"] for r in answer["records"]] == ["sale:kassa-1:10", "stock_movement:kassa-1:d-9"]
    store = open_store(outbox_path)
    try:
        assert store.get_record("sale:kassa-1:10") is not None
        assert store.get_record("stock_movement:kassa-1:r10.1") is not None  # derived, as through the API
        assert store.outbox_stats()["records"] == 4
    finally:
        store.close()


def test_submit_the_same_file_again_is_already_stored(config: Path, tmp_path: Path) -> None:
    batch = write_json(tmp_path / "day.json", {"sales": [sale_json(10)]})
    assert kassabro("submit", "--config", config, batch).returncode == 0

    again = kassabro("submit", "--config", config, batch)

    assert again.returncode == 0
    assert f"{batch}: already stored" in again.stdout


def test_submit_refuses_an_invalid_file_naming_the_field(config: Path, outbox_path: Path, tmp_path: Path) -> None:
    bad_sale = sale_json(11)
    bad_sale["total"] = "1.00"
    bad = write_json(tmp_path / "bad.json", {"sales": [sale_json(12), bad_sale]})

    result = kassabro("submit", "--config", config, bad)

    assert result.returncode == 1
    assert f"{bad}: refused (422)" in result.stderr
    answer = json.loads(result.stderr.splitlines()[1])
    assert answer["details"][0]["loc"] == ["sales", 1, "total"]
    store = open_store(outbox_path)
    try:
        assert store.outbox_stats()["records"] == 0  # all or nothing: sale 12 is not stored either
    finally:
        store.close()


def test_submit_several_files_stores_the_good_and_fails_overall(
    config: Path, outbox_path: Path, tmp_path: Path
) -> None:
    good = write_json(tmp_path / "a.json", {"sales": [sale_json(20)]})
    broken = tmp_path / "b.json"
    broken.write_text('{"sales": [', encoding="utf-8")
    missing = tmp_path / "c.json"
    clash = write_json(tmp_path / "d.json", {"sales": [sale_json(20, price="1.00")]})

    result = kassabro("submit", "--config", config, good, broken, missing, clash)

    assert result.returncode == 1
    assert f"{good}: stored" in result.stdout
    assert f"{broken}: refused (422)" in result.stderr
    assert f"{missing}: cannot read" in result.stderr
    assert f"{clash}: refused (409)" in result.stderr
    store = open_store(outbox_path)
    try:
        [(total,)] = store.conn.execute(
            "SELECT json_extract(data, '$.total') FROM records WHERE key = 'sale:kassa-1:20'"
        )
        assert total == "31.80"
    finally:
        store.close()


def test_submit_single_records_with_type(config: Path, outbox_path: Path, tmp_path: Path) -> None:
    one = write_json(tmp_path / "one.json", movement_json("d-1"))
    result = kassabro("submit", "--config", config, "--type", "stock_movement", one)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[1])["key"] == "stock_movement:kassa-1:d-1"

    wrong = kassabro("submit", "--config", config, "--type", "sale", one)
    assert wrong.returncode == 1
    assert "refused (422)" in wrong.stderr


def test_submit_without_files_is_a_usage_error(config: Path) -> None:
    result = kassabro("submit", "--config", config)
    assert result.returncode == 2
    assert "files" in result.stderr


# ------------------------------------------------------------------ dead letters
def test_dead_letters_list(config: Path, filled: dict[str, Any]) -> None:
    text = kassabro("dead-letters", "list", "--config", config)
    as_json = kassabro("dead-letters", "list", "--config", config, "--json")

    assert text.returncode == 0 and as_json.returncode == 0
    assert filled["dead_id"] in text.stdout
    assert "sale:kassa-1:2" in text.stdout and "unknown sku SKU-0" in text.stdout
    [letter] = json.loads(as_json.stdout)
    assert (letter["destination"], letter["record_id"], letter["status"], letter["state"]) == (
        "backend",
        filled["dead_id"],
        422,
        "dead",
    )

    other = kassabro("dead-letters", "list", "--config", config, "--destination", "mirror")
    assert other.returncode == 0
    assert "no dead letters" in other.stdout


def test_dead_letters_retry_by_id(config: Path, outbox_path: Path, filled: dict[str, Any]) -> None:
    result = kassabro("dead-letters", "retry", "--config", config, filled["dead_id"])

    assert result.returncode == 0, result.stderr
    assert "1 dead letter(s) queued" in result.stdout
    store = open_store(outbox_path)
    try:
        [letter] = store.list_dead_letters("backend")
        assert letter.state == "retrying"
        replay = store.claim_batch("backend", 10)
        assert replay is not None and replay.kind == "replay" and replay.ids == [filled["dead_id"]]
    finally:
        store.close()


def test_dead_letters_retry_all_and_by_destination(config: Path, outbox_path: Path, filled: dict[str, Any]) -> None:
    none_at_mirror = kassabro("dead-letters", "retry", "--config", config, "--all", "--destination", "mirror")
    assert none_at_mirror.returncode == 0
    assert "0 dead letter(s)" in none_at_mirror.stdout

    everything = kassabro("dead-letters", "retry", "--config", config, "--all")
    assert everything.returncode == 0
    assert "1 dead letter(s)" in everything.stdout

    unknown = kassabro("dead-letters", "retry", "--config", config, "--all", "--destination", "nobody")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "kassabro: no destination named 'nobody'"  # one line, no traceback


def test_dead_letters_retry_needs_ids_or_all(config: Path, filled: dict[str, Any]) -> None:
    result = kassabro("dead-letters", "retry", "--config", config)
    assert result.returncode == 2
    assert "--all" in result.stderr


def test_dead_letters_retry_of_an_unknown_id_fails(config: Path, filled: dict[str, Any]) -> None:
    result = kassabro("dead-letters", "retry", "--config", config, "01000000-0000-7000-8000-000000000000")
    assert result.returncode == 1
    assert "0 dead letter(s)" in result.stdout


# ------------------------------------------------------------------ pause and resume
def test_pause_and_resume(config: Path, outbox_path: Path, filled: dict[str, Any]) -> None:
    paused = kassabro("pause", "--config", config, "backend")
    assert paused.returncode == 0, paused.stderr
    assert "backend paused" in paused.stdout
    store = open_store(outbox_path)
    try:
        assert store.claim_batch("backend", 10) is None
    finally:
        store.close()

    resumed = kassabro("resume", "--config", config, "backend")
    assert resumed.returncode == 0
    assert "backend resumed" in resumed.stdout
    store = open_store(outbox_path)
    try:
        assert store.claim_batch("backend", 10) is not None
    finally:
        store.close()


def test_pause_an_unknown_destination_fails(config: Path, filled: dict[str, Any]) -> None:
    result = kassabro("pause", "--config", config, "nobody")
    assert result.returncode == 1
    assert "nobody" in result.stderr


def test_pause_needs_a_destination(config: Path) -> None:
    assert kassabro("pause", "--config", config).returncode == 2


# ------------------------------------------------------------------ run
def run_config(tmp_path: Path, ingest_listen: str = "127.0.0.1:0") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        f"""
store_id = "{STORE_ID}"
data_dir = "{tmp_path / "data"}"
[ingest]
listen = "{ingest_listen}"
[status]
listen = "127.0.0.1:0"
[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:9/in"
""",
        encoding="utf-8",
    )
    return path


class Running:
    """A ``kassabro run`` subprocess whose stderr lines are collected by a thread."""

    def __init__(self, config: Path):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KASSABRO_")}
        self.process = subprocess.Popen(
            [*COMMAND, "run", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s:\n{''.join(self.log)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def test_run_takes_records_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = run_config(tmp_path)
    agent = Running(config)
    try:
        ready = agent.wait_for(r"ingest on \S+ \(port (\d+)\)")
        port = int(ready.group(1))
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/sales", json=sale_json(1), timeout=10)
        assert answer.status_code == 201, answer.text

        beside = kassabro("status", "--config", config, "--json")  # reads beside the running agent
        assert beside.returncode == 0, beside.stderr
        assert json.loads(beside.stdout)["outbox"]["records"] == 2

        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(timeout=30) == 0
    finally:
        agent.stop()

    status = kassabro("status", "--config", config, "--json")
    assert status.returncode == 0, status.stderr
    figures = json.loads(status.stdout)
    assert figures["outbox"]["records"] == 2  # the sale and its derived movement
    assert figures["destinations"][0]["pending"] == 2


def test_run_with_a_port_in_use_fails_with_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kassabro("run", "--config", run_config(tmp_path, f"127.0.0.1:{port}"))
    assert result.returncode == 1
    assert "Address already in use" in result.stderr


def test_run_with_a_bad_config_fails_with_2_before_opening_anything(tmp_path: Path) -> None:
    config = run_config(tmp_path, "0.0.0.0:0")
    result = kassabro("run", "--config", config)
    assert result.returncode == 2
    assert "ingest.token_file" in result.stderr
    assert not (tmp_path / "data").exists()


def test_submit_takes_z_reports_and_status_shows_what_is_missing(config: Path, tmp_path: Path) -> None:
    """``kassabro submit`` takes Z-reports (alone or in a batch file); ``kassabro status`` reconciles them."""
    from tests.helpers import make_sale, make_z_report

    sales = [make_sale(n) for n in range(1001, 1006)]
    day = write_json(tmp_path / "day.json", {"sales": [s for s in sales if s["receipt_no"] != 1004]})
    z = write_json(tmp_path / "z245.json", make_z_report(245, 1001, 1005, sales=sales))

    assert kassabro("submit", "--config", config, day).returncode == 0
    stored = kassabro("submit", "--config", config, "--type", "z_report", z)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout.splitlines()[1])["key"] == "z_report:kassa-1:245"

    text = kassabro("status", "--config", config)
    assert text.returncode == 0, text.stderr
    assert "PROBLEM: Kassa 1, Z 245: 1 kvitto saknas (1004)" in text.stdout
    assert "Till 1, Z 245: 1 receipt missing (1004)" in text.stdout
    body = json.loads(kassabro("status", "--config", config, "--json").stdout)
    assert body["tills"][0]["till_id"] == "kassa-1" and body["tills"][0]["missing_receipts"] == 1
    assert body["tills"][0]["last_z"]["state"] == "missing_receipts"
    assert [p["code"] for p in body["problems"]] == ["z_missing_receipts"]

    late = write_json(tmp_path / "late.json", make_sale(1004))
    assert kassabro("submit", "--config", config, "--type", "sale", late).returncode == 0
    body = json.loads(kassabro("status", "--config", config, "--json").stdout)
    assert body["problems"] == [] and body["tills"][0]["last_z"]["state"] == "ok"


def test_submit_a_5000_digit_number_is_refused_naming_the_field_without_a_traceback(
    config: Path, tmp_path: Path
) -> None:
    sale = json.dumps({"sales": [{**sale_json(11), "receipt_no": "@@"}]}).replace('"@@"', "9" * 5000)
    batch = tmp_path / "huge.json"
    batch.write_text(sale, encoding="utf-8")
    result = kassabro("submit", "--config", config, batch)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{batch}: refused (422)" in result.stderr
    assert "sales.0.receipt_no" in result.stderr or '["sales", 0, "receipt_no"]' in result.stderr
    assert "more than 20 significant digits" in result.stderr


def test_check_config_warns_about_a_token_file_others_can_read(config: Path, tmp_path: Path) -> None:
    token = tmp_path / "ingest.token"
    token.write_text("s3cret-token\n", encoding="utf-8")
    token.chmod(0o644)
    with_token = tmp_path / "with-token.toml"
    text = config.read_text(encoding="utf-8").replace("[ingest]\n", f'[ingest]\ntoken_file = "{token}"\n', 1)
    assert "token_file" in text, "the fixture config has an [ingest] table to add the token to"
    with_token.write_text(text, encoding="utf-8")
    result = kassabro("check-config", "--config", with_token)
    assert result.returncode == 0, result.stderr
    assert f"{token} is readable by group or others (mode 0644)" in result.stderr
    assert "s3cret-token" not in result.stderr + result.stdout
    token.chmod(0o600)
    quiet = kassabro("check-config", "--config", with_token)
    assert "readable by group or others" not in quiet.stderr
