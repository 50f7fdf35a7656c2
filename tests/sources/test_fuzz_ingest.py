"""Fuzzing the ingest API of a real ``kassabro run`` (issue 11): broken input never makes it fail.

Hypothesis mutates valid sales, stock movements and Z-reports (any field to
any JSON value, lone surrogates, control characters, numbers JSON allows but
a float cannot hold) and posts them over real HTTP, or drops them as files into
the spool's ``incoming/``. Asserted: no 5xx (the outbox is roomy and open, so
not even 503/507), no traceback in the agent's log, every record answered 201
is readable afterwards, every spool file ends in ``done/`` or in ``rejected/``
with its ``.error.txt`` (nothing wedges the spool), and the agent's resident
memory stays under 150 MiB throughout (sampled from ``/proc``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import KassabroProcess, make_movement, make_sale, make_z_report, memory_tmpdir, wait_until
from tests.sources.conftest import rss_watch

pytestmark = pytest.mark.slow

ALLOWED = {200, 201, 409, 422}
RSS_LIMIT = 150 * 1024 * 1024
"""The agent's resident memory may never exceed this (issue 11: a Pi unit runs under MemoryMax=256M)."""
RAW_NUMBERS = ["9" * 5000, "1e-400", "10.0000000000000001", "1e999999999", "-0", "123456789012345678901.5", "0.1e1"]

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["\ud800", "a\x00b", "\x1f", "2026-11-26T14:59:01+01:00", "0001-01-01T00:00:00+14:00"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_RECORDS = {
    "/v1/sales": lambda n: make_sale(n),
    "/v1/stock-movements": lambda n: make_movement(n),
    "/v1/z-reports": lambda n: make_z_report(n, 1, 3),
}


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, str]:
    path = draw(st.sampled_from(sorted(_RECORDS)))
    record: dict[str, Any] = _RECORDS[path](draw(st.integers(min_value=1, max_value=10**6)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        key = draw(st.sampled_from(sorted(record)) | st.text(max_size=8))
        record[key] = draw(_values)
    text = json.dumps(record)  # ensure_ascii: a lone surrogate travels as \\ud800, as a till's JSON would
    if draw(st.booleans()):
        key = draw(st.sampled_from(sorted(record)))
        text = json.dumps({**record, key: "@@raw@@"}).replace('"@@raw@@"', draw(st.sampled_from(RAW_NUMBERS)))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        path = "/v1/batch"
        text = '{"sales": [' + text + "]}"
    return path, text


_BATCH_KEYS = {"/v1/sales": "sales", "/v1/stock-movements": "stock_movements", "/v1/z-reports": "z_reports"}


@st.composite
def spool_files(draw: st.DrawFn) -> bytes:
    """A spool file: a batch of one fuzzed record (or a fuzzed batch), or bytes that are no JSON at all."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.binary(max_size=200))
    path, text = draw(bodies())
    body = text if path == "/v1/batch" else f'{{"{_BATCH_KEYS[path]}": [{text}]}}'
    return body.encode("utf-8")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The agent's outbox on /dev/shm where there is one (``memory_tmpdir``).

    Every accepted case is a commit of its own; their fsyncs prove nothing
    about input handling and cost seconds on a busy disk.
    """
    path = Path(tempfile.mkdtemp(prefix="kassabro-fuzz-", dir=memory_tmpdir()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_fuzzed_records_never_make_the_agent_fail(tmp_path: Path, data_dir: Path) -> None:
    agent = KassabroProcess(
        tmp_path,
        '[[destinations]]\nname = "backend"\nkind = "http"\nurl = "http://127.0.0.1:9/in"\n',
        data_dir=data_dir,
    )
    agent.start()
    stored: dict[str, int] = {}
    try:
        with httpx.Client(base_url=agent.ingest_url, timeout=10) as client, rss_watch(agent, RSS_LIMIT):

            @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(bodies())
            def post(case: tuple[str, str]) -> None:
                path, text = case
                response = client.post(path, content=text, headers={"Content-Type": "application/json"})
                assert response.status_code in ALLOWED, (path, text[:300], response.status_code, response.text[:300])
                if response.status_code == 201:
                    body = response.json()
                    for record in body.get("records", [body]):
                        stored[record["key"]] = record["seq"]

            post()
            assert stored, "no fuzzed record was valid: the strategies test nothing but refusals"
            for key, seq in stored.items():
                found = client.get(f"/v1/records/{key}")
                assert found.status_code == 200, key
                assert found.json()["record"]["seq"] == seq
    finally:
        agent.terminate()
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, agent.log_tail()


def test_fuzzed_spool_files_each_end_in_done_or_rejected(tmp_path: Path, data_dir: Path) -> None:
    spool = tmp_path / "spool"
    agent = KassabroProcess(
        tmp_path,
        '[[destinations]]\nname = "backend"\nkind = "http"\nurl = "http://127.0.0.1:9/in"\n',
        data_dir=data_dir,
    )
    agent.config_path.write_text(  # spool_dir belongs to [ingest], which KassabroProcess writes first
        agent.config_path.read_text(encoding="utf-8").replace("[status]", f'spool_dir = "{spool}"\n[status]', 1),
        encoding="utf-8",
    )
    agent.start()
    incoming = spool / "incoming"
    names: list[str] = []
    try:
        with rss_watch(agent, RSS_LIMIT):

            @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(spool_files())
            def drop(data: bytes) -> None:
                name = f"{len(names):04d}.json"
                (incoming / f"{name}.tmp").write_bytes(data)
                os.replace(incoming / f"{name}.tmp", incoming / name)  # as a till writes: another name, then rename
                names.append(name)

            wait_until(incoming.is_dir, timeout=10)
            drop()
            # And one memory bomb among them: ~1 MiB of 340,000 empty sales must not grow the agent past the limit.
            (incoming / "bomb.tmp").write_bytes(b'{"sales":[' + b",".join([b"{}"] * 340_000) + b"]}")
            os.replace(incoming / "bomb.tmp", incoming / "bomb.json")
            names.append("bomb.json")
            started = time.monotonic()
            wait_until(
                lambda: not any(p.suffix == ".json" for p in incoming.iterdir()),
                timeout=30,
                what="every spool file taken from incoming/",
            )
            took = time.monotonic() - started
            health = httpx.get(f"http://127.0.0.1:{agent.status_port}/healthz", timeout=5)
            assert health.status_code == 200, health.text
    finally:
        agent.terminate()
    done = spool / "done"
    rejected = spool / "rejected"
    for name in names:
        if (done / name).exists():
            assert not (rejected / name).exists(), name
            continue
        assert (rejected / name).exists(), f"{name} neither in done/ nor in rejected/"
        assert "was not accepted" in (rejected / f"{name}.error.txt").read_text(encoding="utf-8"), name
    assert any((done / name).exists() for name in names), "no fuzzed file was valid: the strategy tests only refusals"
    assert any((rejected / name).exists() for name in names[:-1]), "no fuzzed file was refused"
    assert (rejected / "bomb.json").exists()
    assert took < 30
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, agent.log_tail()
