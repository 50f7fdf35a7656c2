"""End-to-end fixtures: the three simulators, a real agent, and ledger checks.

Everything is real: the simulated Hogia API, Sharespine and generic receiver
are served over loopback, the agent is ``agent.app.Agent`` built from a config
(in this event loop) or ``kassabro run`` in a subprocess when a test needs to
SIGKILL it. Each simulator app is wrapped in a :class:`Recorder`, a plain ASGI
wrapper that notes every API request (arrival time, ``Idempotency-Key``, body
digest, answer status and time), so a test can say what went over the wire,
not only what ended up in a ledger.

Ground truth for "the acknowledged ingest" is the outbox itself (every record
the agent acknowledged is committed there, derived stock movements included),
read on a fresh read-only connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.app import Agent
from agent.config import build_config
from agent.simulators import _server, hogia, receiver, sharespine
from agent.simulators.till import TillStats
from tests.helpers import KassabroProcess

STORE_ID = "store-e2e"
HOGIA_CLIENT = ("kassabro-e2e", "hogia-client-secret")
SHARESPINE_KEY = "sharespine-api-key"
BACKEND_TOKEN = "backend-bearer-token"
DERIVED_REASONS = ("sale", "return")


# ------------------------------------------------------------------ wire log
@dataclass
class Hit:
    """One API request a simulator received, and what it answered."""

    path: str
    arrived: float
    idempotency_key: str | None
    body_sha256: str
    status: int | None = None
    answered: float | None = None


class Recorder:
    """ASGI wrapper noting every request outside ``/_`` (ledgers and knobs).

    It reads the whole body first and replays it to the app, so the digest is
    known even when the sender is gone before the app reads it (a SIGKILLed
    agent). Thread-safe enough for a server in its own thread: only appends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.hits: list[Hit] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        hit = Hit(scope["path"], time.monotonic(), headers.get("idempotency-key"), hashlib.sha256(body).hexdigest())
        self.hits.append(hit)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def note(message: Message) -> None:
            if message["type"] == "http.response.start":
                hit.status = int(message["status"])
                hit.answered = time.monotonic()
            await send(message)

        await self.app(scope, replay, note)


class Sim:
    """A running simulator: base URL, its wire log, its ledger and fault knobs."""

    def __init__(self, base_url: str, recorder: Recorder) -> None:
        self.base_url = base_url
        self.recorder = recorder

    @property
    def hits(self) -> list[Hit]:
        return self.recorder.hits

    async def ledger(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            response = await client.get("/_ledger")
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    async def faults(self, **knobs: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            response = await client.post("/_faults", json=knobs)
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    async def fault_state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            return (await client.get("/_faults")).json()  # type: ignore[no-any-return]


@dataclass
class Shop:
    """The three simulators a shop's agent talks to."""

    hogia: Sim
    sharespine: Sim
    backend: Sim

    def all(self) -> dict[str, Sim]:
        return {"hogia": self.hogia, "sharespine": self.sharespine, "backend": self.backend}


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """Hogia (OAuth2), Sharespine (API key) and a receiver (bearer token) on loopback."""
    apps = {
        "hogia": Recorder(hogia.create_app(auth="oauth2", client_id=HOGIA_CLIENT[0], client_secret=HOGIA_CLIENT[1])),
        "sharespine": Recorder(sharespine.create_app(auth="api_key", api_key=SHARESPINE_KEY)),
        "backend": Recorder(receiver.create_app(token=BACKEND_TOKEN)),
    }
    async with contextlib.AsyncExitStack() as stack:
        sims = {name: Sim(await stack.enter_async_context(_server.serve(app)), app) for name, app in apps.items()}
        yield Shop(**sims)


# --------------------------------------------------------------------- agent
def destinations_for(shop_urls: dict[str, str], secrets: Path, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """The three ``[[destinations]]`` tables, with fast backoff for tests.

    Args:
        shop_urls: base URL per simulator name.
        secrets: a folder to write the secret files into.
        overrides: per destination name, keys to add or replace.
    """
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "hogia-secret").write_text(HOGIA_CLIENT[1] + "\n", encoding="utf-8")
    (secrets / "sharespine-key").write_text(SHARESPINE_KEY + "\n", encoding="utf-8")
    (secrets / "backend-token").write_text(BACKEND_TOKEN + "\n", encoding="utf-8")
    fast = {"backoff_base_s": 0.05, "backoff_cap_s": 0.5}
    tables = {
        "hogia": {
            "name": "hogia",
            "kind": "hogia",
            "base_url": shop_urls["hogia"],
            "auth": "oauth2",
            "client_id": HOGIA_CLIENT[0],
            "client_secret_file": str(secrets / "hogia-secret"),
            # The till simulator's articles are not in any register: every movement must reach Sharespine here.
            "read_register": False,
            "timeout_s": 5,
            **fast,
        },
        "sharespine": {
            "name": "sharespine",
            "kind": "sharespine",
            "base_url": shop_urls["sharespine"],
            "auth": "api_key",
            "api_key_file": str(secrets / "sharespine-key"),
            "sales_as_orders": True,
            "timeout_s": 5,
            **fast,
        },
        "backend": {
            "name": "backend",
            "kind": "http",
            "url": shop_urls["backend"] + "/ingest",
            "token_file": str(secrets / "backend-token"),
            "timeout_s": 5,
            **fast,
        },
    }
    for name, extra in overrides.items():
        tables[name].update(extra)
    return list(tables.values())


class RunningAgent:
    """An in-process agent plus ways to reach it the way a till and a browser do."""

    def __init__(self, agent: Agent, data_dir: Path) -> None:
        self.agent = agent
        self.data_dir = data_dir

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.agent.ingest_port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.agent.status_port}"

    @property
    def db(self) -> Path:
        return self.data_dir / "outbox.db"

    async def api_status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(self.status_url + "/api/status")
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    async def destination(self, name: str) -> dict[str, Any]:
        """That destination's live stats straight from the outbox and its loop (no cache)."""
        stats = {d["name"]: d for d in await self.agent.outbox.destination_stats()}[name]
        return stats | {"state": self.agent.loops[name].state, "loop_error": self.agent.loops[name].last_error}

    async def drained(self, *names: str) -> bool:
        stats = await self.agent.outbox.destination_stats()
        return all(d["pending"] == 0 for d in stats if not names or d["name"] in names)

    async def post_batch(self, sales: list[dict[str, Any]], movements: list[dict[str, Any]]) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                self.ingest_url + "/v1/batch", json={"sales": sales, "stock_movements": movements}
            )
            assert response.status_code == 201, response.text
            return response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningAgent]]]:
    """``await start_agent(shop, derive=True, **per_destination_overrides)``; stopped at teardown."""
    running: list[Agent] = []

    async def start(shop: Shop, *, derive: bool = True, **overrides: dict[str, Any]) -> RunningAgent:
        data_dir = tmp_path / f"agent{len(running)}" / "data"
        data_dir.mkdir(parents=True)
        config = build_config(
            {
                "store_id": STORE_ID,
                "data_dir": str(data_dir),
                "ingest": {"listen": "127.0.0.1:0", "derive_stock_from_sales": derive},
                "status": {"listen": "127.0.0.1:0"},
                "flow": {
                    "sales_to_hogia": "kassabro",
                    "webshop_stock": "kassabro",
                },  # setup (b): Hogia and Sharespine get all from Kassabro
                "destinations": destinations_for(
                    {n: s.base_url for n, s in shop.all().items()}, data_dir.parent / "secrets", **overrides
                ),
            }
        )
        agent = Agent(config)
        await agent.start()
        running.append(agent)
        return RunningAgent(agent, data_dir)

    yield start
    for agent in running:
        await agent.stop()


# ------------------------------------------------------------ ground truth
@dataclass
class Stored:
    """The outbox's records in seq order (what the agent acknowledged)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sales(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["type"] == "sale"]

    @property
    def movements(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["type"] == "stock_movement"]

    def ids(self, rows: list[dict[str, Any]] | None = None) -> list[str]:
        return [r["id"] for r in (self.rows if rows is None else rows)]


def stored(db: Path) -> Stored:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, id, key, type, data FROM records ORDER BY seq").fetchall()
    finally:
        conn.close()
    return Stored([{"seq": s, "id": i, "key": k, "type": t, "data": json.loads(d)} for s, i, k, t, d in rows])


def assert_till_acknowledged(stats: TillStats | list[TillStats], box: Stored) -> None:
    """Every record the till(s) saw acknowledged is stored once with that id; nothing else but derived movements."""
    accepted: dict[str, str] = {}
    for one in stats if isinstance(stats, list) else [stats]:
        assert not one.failed, f"the till had failures: {one.failed} ({one.last_error})"
        accepted |= one.accepted
    by_key = {r["key"]: r["id"] for r in box.rows}
    assert {k: by_key.get(k) for k in accepted} == accepted
    extra = [r for r in box.rows if r["key"] not in accepted]
    assert all(r["type"] == "stock_movement" and r["data"]["reason"] in DERIVED_REASONS for r in extra)


def assert_backend_ledger(book: dict[str, Any], box: Stored, *, except_ids: frozenset[str] = frozenset()) -> None:
    """The receiver holds every stored record exactly once, in seq order, unchanged."""
    expected = [r for r in box.rows if r["id"] not in except_ids]
    got = book["records"]
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert [(r["seq"], r["key"], r["type"], r["store_id"]) for r in got] == [
        (r["seq"], r["key"], r["type"], STORE_ID) for r in expected
    ]
    assert [r["data"] for r in got] == [r["data"] for r in expected]


def assert_hogia_ledger(book: dict[str, Any], box: Stored, *, except_ids: frozenset[str] = frozenset()) -> None:
    """Hogia booked each sale once as an order, each non-sale movement once as an adjustment, in seq order.

    Movements derived from sales (reason ``sale``/``return``) are skipped by the
    adapter's default ``skip_stock_reasons``: Hogia books an order's stock itself.
    """
    sales = [r for r in box.sales if r["id"] not in except_ids]
    assert [o["externalId"] for o in book["orders"]] == box.ids(sales)
    for order, sale in zip(book["orders"], sales, strict=True):
        assert order["total"] == sale["data"]["total"]
        assert order["receiptNumber"] == sale["data"]["receipt_no"]
    movements = [r for r in box.movements if r["data"]["reason"] not in DERIVED_REASONS and r["id"] not in except_ids]
    assert [a["externalId"] for a in book["stock_adjustments"]] == box.ids(movements)
    assert [a["quantity"] for a in book["stock_adjustments"]] == [m["data"]["delta"] for m in movements]


def assert_sharespine_ledger(
    book: dict[str, Any], box: Stored, *, orders: bool, except_ids: frozenset[str] = frozenset()
) -> None:
    """Sharespine applied every movement's delta once (summed per SKU with refs), in seq order per SKU."""
    movements = [r for r in box.movements if r["id"] not in except_ids]
    refs = [ref for change in book["changes"] for ref in change["refs"]]
    assert sorted(refs) == sorted(box.ids(movements)), "every movement exactly once"
    seq_of = {r["id"]: r["seq"] for r in movements}
    per_sku: dict[str, list[int]] = {}
    for change in book["changes"]:
        per_sku.setdefault(change["sku"], []).extend(seq_of[ref] for ref in change["refs"])
        assert sum((Decimal(movement_delta(box, ref)) for ref in change["refs"]), Decimal(0)) == Decimal(
            change["delta"]
        )
    for sku, seqs in per_sku.items():
        assert seqs == sorted(seqs), f"{sku}: deltas out of seq order"
    levels: dict[str, Decimal] = {}
    for m in movements:
        levels[m["data"]["sku"]] = levels.get(m["data"]["sku"], Decimal(0)) + Decimal(m["data"]["delta"])
    assert {k: Decimal(v) for k, v in book["stock"].items()} == levels
    assert book["applied_refs"] == len(movements)
    if orders:
        sales = [r for r in box.sales if r["id"] not in except_ids]
        assert [o["externalId"] for o in book["orders"]] == box.ids(sales)


def movement_delta(box: Stored, record_id: str) -> str:
    for r in box.movements:
        if r["id"] == record_id:
            return str(r["data"]["delta"])
    raise AssertionError(f"{record_id} is not a stored movement")


async def assert_all_ledgers(shop: Shop, box: Stored, *, sharespine_orders: bool = True) -> None:
    assert_backend_ledger(await shop.backend.ledger(), box)
    assert_hogia_ledger(await shop.hogia.ledger(), box)
    assert_sharespine_ledger(await shop.sharespine.ledger(), box, orders=sharespine_orders)


# ------------------------------------------------------------ records
def movement(n: int, *, sku: str = "7310865004703", delta: str = "24", reason: str = "delivery") -> dict[str, Any]:
    """A stock movement that is not a sale (Hogia books it as an adjustment)."""
    return {
        "till_id": "kassa-1",
        "movement_id": f"e2e-{n}",
        "sku": sku,
        "delta": delta,
        "reason": reason,
        "occurred_at": "2026-11-26T07:30:00+01:00",
    }


# ------------------------------------------------ kassabro run in a subprocess
class AgentProcess(KassabroProcess):
    """``kassabro run`` on fixed loopback ports, restartable on the same data dir."""

    def __init__(self, root: Path, destinations_toml: str) -> None:
        super().__init__(root, destinations_toml, store_id=STORE_ID)


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[str], AgentProcess]]:
    """``agent_process(destinations_toml) -> AgentProcess``; every one is killed at teardown."""
    made: list[AgentProcess] = []

    def make(destinations_toml: str) -> AgentProcess:
        root = tmp_path / f"proc{len(made)}"
        root.mkdir()
        proc = AgentProcess(root, destinations_toml)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()
