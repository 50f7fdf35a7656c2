"""A simulated chain: N shops in one process, each publishing as a Kassabro agent's ``mqtt`` destination does.

Every shop is its own MQTT client (aiomqtt, as the agent uses) with its own
client id and credentials, a retained ``{prefix}/{store}/status`` and a will
that sets it to ``{"online": false}``. It posts its sales, the stock movements
each sale implies (``agent.records.derive_movements``, as the agent derives
them) and a Z-report at the end of each day's receipts, as envelopes built
from the agent's own models and encoded by the agent's own encoder, QoS 1, in
``seq`` order. A record counts as delivered on its PUBACK; after a lost
connection the shop goes to the next host, with the agent's backoff, and sends
what was not acknowledged again (at least once, as the agent does).

``pace_s`` is the mean time between one shop's receipts (exponentially
distributed, so shops do not tick together); 0 is flat out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiomqtt

import agent
from agent.backoff import RetryPolicy
from agent.destinations.mqtt import OFFLINE_WILL, encode_envelope
from agent.ids import uuid7
from agent.mqtt.topics import Topics
from agent.records import Sale, ZReport, derive_movements, normalize

__all__ = ["SATURDAY_PACE_S", "Chain", "ShopPlan", "SimulatedShop"]

log = logging.getLogger(__name__)

SATURDAY_PACE_S = 30.0
"""A busy Saturday: one receipt every 30 s per shop (120 an hour), each with two lines."""

_SKUS = (("7310865004703", "Mjölk 1,5%", "15.90", 12), ("7318690499534", "Kaffe 450 g", "64.90", 12),
         ("5701073059041", "Diskmedel", "29.50", 25), ("7311041013571", "Tidning", "45.00", 6))  # fmt: skip


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sale_data(receipt_no: int, till_id: str, rng: random.Random) -> dict[str, Any]:
    """A valid two-line sale, normalised exactly as the agent stores it."""
    lines = []
    total = Decimal(0)
    for sku, name, price, vat in rng.sample(_SKUS, 2):
        quantity = rng.randint(1, 3)
        lines.append({"sku": sku, "name": name, "quantity": quantity, "unit_price": price, "vat_rate": vat})
        total += Decimal(price) * quantity
    occurred = dt.datetime.now(dt.timezone(dt.timedelta(hours=1))).isoformat(timespec="seconds")
    sale = Sale.model_validate(
        {
            "till_id": till_id,
            "receipt_no": receipt_no,
            "occurred_at": occurred,
            "lines": lines,
            "total": str(total),
            "payments": [{"method": rng.choice(("card", "swish", "cash")), "amount": str(total)}],
        }
    )
    return normalize(sale)


def z_report_data(till_id: str, z_no: int, sales: list[dict[str, Any]]) -> dict[str, Any]:
    """A Z-report (contract §1) over ``sales``: the day's close of one till, normalised by the agent's model."""
    gross: dict[int, Decimal] = {}
    payments: dict[str, Decimal] = {}
    for sale in sales:
        for line in sale["lines"]:
            amount = Decimal(line["quantity"]) * Decimal(line["unit_price"])
            gross[line["vat_rate"]] = gross.get(line["vat_rate"], Decimal(0)) + amount
        for payment in sale["payments"]:
            payments[payment["method"]] = payments.get(payment["method"], Decimal(0)) + Decimal(payment["amount"])
    grand = sum(gross.values(), Decimal(0)).quantize(Decimal("0.01"))
    numbers = [sale["receipt_no"] for sale in sales]
    return normalize(
        ZReport.model_validate(
            {
                "till_id": till_id,
                "z_no": z_no,
                "opened_at": sales[0]["occurred_at"] if sales else _now(),
                "closed_at": sales[-1]["occurred_at"] if sales else _now(),
                "first_receipt_no": min(numbers) if numbers else None,
                "last_receipt_no": max(numbers) if numbers else None,
                "receipt_count": len(sales),
                "gross": [
                    {"rate": rate, "amount": str(amount.quantize(Decimal("0.01")))} for rate, amount in gross.items()
                ],
                "vat": [
                    {"rate": rate, "amount": str((amount * rate / (100 + rate)).quantize(Decimal("0.01")))}
                    for rate, amount in gross.items()
                ],
                "payments": [{"method": m, "amount": str(a.quantize(Decimal("0.01")))} for m, a in payments.items()],
                "rounding": "0.00",
                "returns_total": "0.00",
                "grand_total": str(grand),
            }
        )
    )


@dataclass(frozen=True)
class ShopPlan:
    """What one simulated shop does.

    Args:
        store_id: the shop (also its MQTT user name).
        password: its MQTT password.
        receipts: how many receipts it rings up (then it idles, connected).
        skip: receipt numbers it never sends (they show as missing receipts).
        z_every: a Z-report after every this many receipts (and one at the end); 0 for none.
        till_id: its till.
    """

    store_id: str
    password: str
    receipts: int
    skip: frozenset[int] = frozenset()
    z_every: int = 0
    till_id: str = "kassa-1"


@dataclass
class SimulatedShop:
    """One shop: its MQTT connection, its records in ``seq`` order, and which were acknowledged."""

    plan: ShopPlan
    hosts: list[tuple[str, int]]
    topic_prefix: str = "kassabro"
    pace_s: float = 0.0
    keepalive_s: int = 30
    status_interval_s: float = 60.0
    max_inflight: int = 100
    first_host: int = 0
    seed: int = 0
    acked_ids: set[str] = field(default_factory=set)
    sent: int = 0
    connects: int = 0
    host_in_use: str | None = None
    produced_all: bool = False
    go: asyncio.Event | None = None
    """When given, the till rings up nothing until it is set (so a benchmark's clock starts with every shop connected)."""
    _queue: deque[dict[str, Any]] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: int = 0
    _started: float = field(default_factory=time.monotonic)

    @property
    def store_id(self) -> str:
        return self.plan.store_id

    @property
    def pending(self) -> int:
        return len(self._queue)

    def topic(self, kind: str) -> str:
        """The agent's topic for records of ``kind`` (``status`` for the retained status)."""
        topics = Topics(self.topic_prefix, self.store_id)
        return topics.status if kind == "status" else topics.record(kind)

    def _envelope(self, kind: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        return {
            "id": uuid7(),
            "key": key,
            "type": kind,
            "store_id": self.store_id,
            "seq": self._seq,
            "received_at": _now(),
            "clock_synced": True,
            "data": data,
        }

    def _records(self) -> Iterator[list[dict[str, Any]]]:
        """Each receipt's envelopes (the sale, its stock movements, maybe a Z-report), in seq order."""
        rng = random.Random(f"{self.seed}:{self.store_id}")
        day: list[dict[str, Any]] = []
        z_no = 0
        for receipt_no in range(1, self.plan.receipts + 1):
            data = sale_data(receipt_no, self.plan.till_id, rng)
            day.append(data)
            group = []
            if receipt_no not in self.plan.skip:
                group.append(self._envelope("sale", f"sale:{self.plan.till_id}:{receipt_no}", data))
                for movement in derive_movements(Sale.model_validate(data)):
                    group.append(self._envelope("stock_movement", movement.key, normalize(movement)))
            last = receipt_no == self.plan.receipts
            if self.plan.z_every and (receipt_no % self.plan.z_every == 0 or last):
                z_no += 1
                z = z_report_data(self.plan.till_id, z_no, day)
                group.append(self._envelope("z_report", f"z_report:{self.plan.till_id}:{z_no}", z))
                day = []
            yield group

    def status_payload(self) -> dict[str, Any]:
        """The retained status, shaped as the agent's (docs/mqtt.md)."""
        oldest = None if not self._queue else round(time.monotonic() - self._started, 1)
        return {
            "online": True,
            "store_id": self.store_id,
            "version": agent.__version__,
            "at": _now(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "destinations": [
                {
                    "name": "chain",
                    "pending": len(self._queue),
                    "oldest_pending_age_s": oldest,
                    "dead_letters": 0,
                    "state": "online",
                }
            ],
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Ring up the plan's receipts at the pace, keep the connection up until ``stop``."""
        producer = asyncio.create_task(self._produce(), name=f"{self.store_id} till")
        try:
            await self._connect_loop(stop)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self) -> None:
        rng = random.Random(f"pace:{self.seed}:{self.store_id}")
        if self.go is not None:
            await self.go.wait()
        receipts = self._records()
        while True:
            if self.pace_s > 0:  # the customer first, then the receipt (stamped when rung up)
                await asyncio.sleep(rng.expovariate(1 / self.pace_s))
            group = next(receipts, None)
            if group is None:
                break
            self._queue.extend(group)
            self._wake.set()
        self.produced_all = True

    async def _connect_loop(self, stop: asyncio.Event) -> None:
        policy = RetryPolicy(0.5, 5.0)
        attempt = 0
        index = self.first_host
        while not stop.is_set():
            host, port = self.hosts[index % len(self.hosts)]
            will = aiomqtt.Will(self.topic("status"), OFFLINE_WILL, qos=1, retain=True)
            client = aiomqtt.Client(
                host,
                port,
                username=self.store_id,
                password=self.plan.password,
                identifier=f"kassabro-{self.store_id}-chain",
                protocol=aiomqtt.ProtocolVersion.V311,
                will=will,
                clean_session=False,
                keepalive=self.keepalive_s,
                timeout=10,
                max_inflight_messages=self.max_inflight,
            )
            client.pending_calls_threshold = self.max_inflight + 10
            try:
                async with client:
                    attempt = 0
                    self.connects += 1
                    self.host_in_use = f"{host}:{port}"
                    await self._session(client, stop)
                    if stop.is_set():
                        offline = {
                            "online": False,
                            "store_id": self.store_id,
                            "version": agent.__version__,
                            "at": _now(),
                        }
                        with contextlib.suppress(aiomqtt.MqttError):
                            await client.publish(
                                self.topic("status"), json.dumps(offline), qos=1, retain=True, timeout=5
                            )
                        return
            except aiomqtt.MqttError as exc:
                log.debug("%s: %s", self.store_id, exc)
            self.host_in_use = None
            attempt += 1
            index += 1
            await asyncio.sleep(policy.delay(attempt))

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Publish status, then records as they come, until the link drops or ``stop``."""

        async def watch() -> None:  # the iterator raises MqttError the moment the link is gone
            async for _ in client.messages:
                pass

        async def refresh_status() -> None:  # as the agent: on connect, then every status_interval_s
            while True:
                await client.publish(
                    self.topic("status"), json.dumps(self.status_payload()), qos=1, retain=True, timeout=10
                )
                await asyncio.sleep(self.status_interval_s)

        lost = asyncio.create_task(watch())
        stopping = asyncio.create_task(stop.wait())
        sending = asyncio.create_task(self._send(client))
        status = asyncio.create_task(refresh_status())
        tasks = (lost, stopping, sending, status)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopping and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(self._queue)[: self.max_inflight]
            await asyncio.gather(
                *(client.publish(self.topic(r["type"]), encode_envelope(r), qos=1, timeout=10) for r in batch)
            )
            for record in batch:
                self.acked_ids.add(record["id"])
                self._queue.popleft()
            self.sent += len(batch)


class Chain:
    """N simulated shops in one process, spread over the cluster's MQTT gateways.

    Args:
        plans: one per shop.
        hosts: the MQTT gateways as ``(host, port)``; shop i starts on host ``i % len(hosts)``.
        pace_s: mean seconds between one shop's receipts (0: flat out).
        ramp_s: seconds between two shops' first connects, so the cluster is not hit by all at once.
        hold: connect, but ring up nothing until ``go`` is set.
        status_interval_s: how often each shop refreshes its retained status (the agent's default: 60 s).
    """

    def __init__(
        self,
        plans: list[ShopPlan],
        hosts: list[tuple[str, int]],
        *,
        topic_prefix: str = "kassabro",
        pace_s: float = 0.0,
        keepalive_s: int = 30,
        ramp_s: float = 0.01,
        seed: int = 0,
        hold: bool = False,
        status_interval_s: float = 60.0,
    ) -> None:
        self.shops = [
            SimulatedShop(
                plan,
                hosts,
                topic_prefix=topic_prefix,
                pace_s=pace_s,
                keepalive_s=keepalive_s,
                status_interval_s=status_interval_s,
                first_host=i,
                seed=seed,
            )
            for i, plan in enumerate(plans)
        ]
        self.go = asyncio.Event()
        if not hold:
            self.go.set()
        for shop in self.shops:
            shop.go = self.go
        self.ramp_s = ramp_s
        self.stop_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for shop in self.shops:
            self._tasks.append(asyncio.create_task(shop.run(self.stop_event), name=shop.store_id))
            if self.ramp_s:
                await asyncio.sleep(self.ramp_s)

    @property
    def acked_ids(self) -> set[str]:
        return set().union(*(shop.acked_ids for shop in self.shops))

    @property
    def produced(self) -> int:
        """Records the shops have made so far (sales, movements and Z-reports)."""
        return sum(shop._seq for shop in self.shops)

    def done(self) -> bool:
        """Every shop has rung up its plan and had every record acknowledged."""
        return all(shop.produced_all and not shop._queue for shop in self.shops)

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait (bounded) until every shop has a live connection."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(shop.host_in_use for shop in self.shops):
                return True
            await asyncio.sleep(0.1)
        return False

    async def wait_done(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.done():
                return True
            await asyncio.sleep(0.1)
        return self.done()

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
