"""Fuzzing the ingest API of a real ``kassabro run`` (issue 11): broken input never makes it fail.

Hypothesis mutates valid sales, stock movements and Z-reports (any field to
any JSON value, lone surrogates, control characters, numbers JSON allows but
a float cannot hold) and posts them over real HTTP. Asserted: no 5xx (the
outbox is roomy and open, so not even 503/507), no traceback in the agent's
log, and every record answered 201 is readable afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import KassabroProcess, make_movement, make_sale, make_z_report

pytestmark = pytest.mark.slow

ALLOWED = {200, 201, 409, 422}
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


def test_fuzzed_records_never_make_the_agent_fail(tmp_path: Path) -> None:
    agent = KassabroProcess(
        tmp_path,
        '[[destinations]]\nname = "backend"\nkind = "http"\nurl = "http://127.0.0.1:9/in"\n',
    )
    agent.start()
    stored: dict[str, int] = {}
    try:
        with httpx.Client(base_url=agent.ingest_url, timeout=10) as client:

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
