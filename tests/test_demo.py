"""``kassabro demo`` as a user runs it: the page address, records flowing, cut, restore, exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

RUN_FOR_S = 30


def test_demo_shows_the_flow_cut_and_restored_then_stops_by_itself(tmp_path: Path) -> None:
    status_port, ingest_port, control_port = free_port(), free_port(), free_port()
    out_path = tmp_path / "demo.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "demo",
                "--dir",
                str(tmp_path / "demo"),
                "--for",
                str(RUN_FOR_S),
                "--rate",
                "5",
                "--status-port",
                str(status_port),
                "--ingest-port",
                str(ingest_port),
                "--control-port",
                str(control_port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:

        def output() -> str:
            return out_path.read_text(encoding="utf-8", errors="replace")

        wait_until(lambda: "Status page:" in output() or proc.poll() is not None, 30, "the status page address")
        assert proc.poll() is None, output()
        assert f"Status page:      http://127.0.0.1:{status_port}/" in output()
        assert f"http://127.0.0.1:{control_port}/" in output()
        assert (tmp_path / "demo" / "kassabro.toml").is_file()

        http = httpx.Client(timeout=5)
        status_url = f"http://127.0.0.1:{status_port}/api/status"
        control_url = f"http://127.0.0.1:{control_port}"

        def destinations() -> dict[str, dict[str, Any]]:
            return {d["name"]: d for d in http.get(status_url).json()["destinations"]}

        def flowing() -> bool:
            body = http.get(status_url).json()
            dests = {d["name"]: d for d in body["destinations"]}
            return body["ingest"]["accepted_total"] >= 3 and all(
                d["state"] == "online" and d["last_success_at"] for d in dests.values()
            )

        wait_until(flowing, 15, "three destinations online with records flowing")
        assert set(destinations()) == {"hogia", "sharespine", "chain-backend"}

        assert http.post(control_url + "/cut").status_code == 303

        def all_offline_with_backlog() -> dict[str, dict[str, Any]] | None:
            now = destinations()
            return now if all(x["state"] == "offline" and x["pending"] for x in now.values()) else None

        offline = wait_until(all_offline_with_backlog, 10, "every destination offline with a backlog")
        wait_until(
            lambda: all(x["pending"] > offline[n]["pending"] for n, x in destinations().items()),
            10,
            "the backlog growing while the internet is cut",
        )
        assert "nere" in http.get(control_url + "/").text

        assert http.post(control_url + "/restore").status_code == 303
        wait_until(
            lambda: all(x["pending"] == 0 and x["state"] != "offline" for x in destinations().values()),
            RUN_FOR_S,
            "the backlog drained after the internet came back",
        )

        # The till loses a receipt and closes the day: the page says which; sent after all, it clears.
        assert http.post(control_url + "/miss").status_code == 303
        wait_until(lambda: "ej skickade: 1" in http.get(control_url + "/").text, 10, "the till keeping a receipt back")
        assert http.post(control_url + "/z").status_code == 303

        def missing() -> list[dict[str, Any]]:
            return [p for p in http.get(status_url).json()["problems"] if p["code"] == "z_missing_receipts"]

        [problem] = wait_until(missing, 10, "the Z-report's missing receipt on the status page")
        assert ": 1 kvitto saknas (" in problem["text"] and problem["text"].startswith("Kassa 1, Z ")
        assert http.post(control_url + "/release").status_code == 303
        wait_until(lambda: not missing() and not http.get(status_url).json()["problems"], 10, "the problem cleared")
        [till] = http.get(status_url).json()["tills"]
        assert till["missing_receipts"] == 0 and till["last_z"]["state"] == "ok"

        assert proc.wait(timeout=RUN_FOR_S + 15) == 0, output()
        assert "stopping; the till handed over" in output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
