"""A till simulator: realistic Swedish receipts and stock deliveries, posted to the agent.

Used by the demo (a shop that sells while you watch), the end-to-end tests
and the benchmarks. The receipts look like a small Swedish food-and-kiosk
shop's: food at 6 % VAT (the reduced rate in force since 2026-04-01), books
and newspapers at 6 %, other goods at 25 %, stamps at 0 %; goods sold by
weight; line and receipt discounts; now and then a shipping or handling fee;
card, Swish, cash (with öresavrundning to whole kronor, as Swedish cash has
no öre) and a gift card part; an occasional return, and now and then a gift
card sold (a multi-purpose voucher: VAT rate 0). Every receipt satisfies the
contract's money rule exactly, by construction: the total is computed with
the rule itself.

A ``Till`` also closes its day with a Z-report of the receipts since the last
one (``z_report``), and can lose a receipt on request (``miss_next``: rung up
and counted on the Z, but not sent until ``release``), so the demo and the
tests can show reconciliation finding and clearing a gap.

Randomness comes from a seeded ``random.Random``, so a seed gives the same
shop day every time (times aside, which come from ``clock``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

CENT = Decimal("0.01")
KRONA = Decimal(1)
QTY = Decimal("0.001")
STOCKHOLM = ZoneInfo("Europe/Stockholm")


@dataclass(frozen=True)
class Article:
    sku: str
    name: str
    price: Decimal  # per piece, or per kg when by_weight
    vat_rate: int
    by_weight: bool = False


def _a(sku: str, name: str, price: str, vat_rate: int, by_weight: bool = False) -> Article:
    return Article(sku, name, Decimal(price), vat_rate, by_weight)


CATALOG: tuple[Article, ...] = (
    _a("7310865004703", "Mjölk 1,5% 1 l", "15.90", 6),
    _a("7311070347272", "Lingongrova 500 g", "32.50", 6),
    _a("7310050001231", "Bryggkaffe 450 g", "64.90", 6),
    _a("7310130001233", "Smör 500 g", "59.95", 6),
    _a("7310500011231", "Falukorv 800 g", "42.90", 6),
    _a("2000000000011", "Bananer", "24.90", 6, by_weight=True),
    _a("2000000000028", "Äpplen Ingrid Marie", "34.95", 6, by_weight=True),
    _a("2000000000035", "Hushållsost 17%", "109.00", 6, by_weight=True),
    _a("9789100000013", "Pocketbok", "129.00", 6),
    _a("9771101000005", "Dagstidning", "40.00", 6),
    _a("9771234000008", "Veckotidning", "54.00", 6),
    _a("7310100000012", "Tandkräm 75 ml", "29.90", 25),
    _a("7310200000019", "Batterier AA 4-p", "59.00", 25),
    _a("7310300000016", "Presentpapper", "35.00", 25),
    _a("7310400000013", "Bärkasse", "3.00", 25),
    _a("7310600000017", "Snus", "56.50", 25),
    _a("7310700000014", "Frimärke inrikes", "22.00", 0),
)

GIFT_CARD = _a("presentkort", "Presentkort", "200.00", 0)
"""A gift card sold at the till: ``[skus] gift_card``'s default SKU, VAT rate 0 (contract §1)."""

PAYMENT_WEIGHTS = (("card", 60), ("swish", 25), ("cash", 15))


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def line_amount(quantity: Decimal, unit_price: Decimal, discount: Decimal) -> Decimal:
    """The contract's line amount: round(quantity x unit_price) - sign(quantity) x discount."""
    return _round(quantity * unit_price) - _sign(quantity) * discount


def receipt_total(sale: dict[str, Any]) -> Decimal:
    """The contract's total of a sale record (amounts as decimal strings)."""
    k = -1 if sale.get("kind") == "return" else 1
    lines = sum(
        (
            line_amount(Decimal(line["quantity"]), Decimal(line["unit_price"]), Decimal(line.get("discount", "0")))
            for line in sale["lines"]
        ),
        Decimal(0),
    )
    fees = sum((Decimal(f["amount"]) for f in sale.get("fees") or []), Decimal(0))
    return lines + fees - k * Decimal(sale.get("discount", "0")) + Decimal(sale.get("rounding", "0"))


def _quantity(rng: random.Random, article: Article) -> Decimal:
    if article.by_weight:
        return Decimal(rng.randint(150, 2500)) * QTY
    return Decimal(rng.choice((1, 1, 1, 1, 2, 2, 3, 6)))


def generate_receipt(
    rng: random.Random,
    *,
    till_id: str = "kassa-1",
    receipt_no: int = 1,
    occurred_at: datetime | None = None,
    kind: str | None = None,
    return_rate: float = 0.05,
    gift_card_rate: float = 0.0,
) -> dict[str, Any]:
    """One sale record, as a till would post it to ``/v1/sales``.

    Args:
        rng: the random source (seed it for repeatable receipts).
        kind: ``sale`` or ``return``; None picks a return with ``return_rate``.
        occurred_at: the till's clock; now in Stockholm when None.
        gift_card_rate: the share of receipts that sell a gift card (alone, paid by card).
    """
    if kind is None and gift_card_rate and rng.random() < gift_card_rate:
        value = rng.choice((Decimal(200), Decimal(300), Decimal(500)))
        when = occurred_at or datetime.now(STOCKHOLM)
        return {
            "till_id": till_id,
            "receipt_no": receipt_no,
            "occurred_at": when.isoformat(timespec="seconds"),
            "kind": "sale",
            "currency": "SEK",
            "lines": [
                {
                    "sku": GIFT_CARD.sku,
                    "name": GIFT_CARD.name,
                    "quantity": "1",
                    "unit_price": _money(value),
                    "vat_rate": 0,
                    "discount": "0.00",
                }
            ],
            "fees": [],
            "discount": "0.00",
            "rounding": "0.00",
            "total": _money(value),
            "payments": [{"method": "card", "amount": _money(value)}],
        }
    if kind is None:
        kind = "return" if rng.random() < return_rate else "sale"
    sign = Decimal(-1) if kind == "return" else Decimal(1)
    k = -1 if kind == "return" else 1
    count = rng.choice((1, 1, 2, 2, 3, 4, 5, 8)) if kind == "sale" else rng.choice((1, 1, 2))
    lines = []
    line_sum = Decimal(0)
    for article in rng.sample(CATALOG, count):
        quantity = sign * _quantity(rng, article)
        gross = abs(_round(quantity * article.price))
        discount = Decimal(0)
        if rng.random() < 0.1 and gross >= 10:
            discount = min(gross, _round(gross * Decimal(rng.choice((10, 20, 25, 50))) / 100))
        lines.append(
            {
                "sku": article.sku,
                "name": article.name,
                "quantity": str(quantity.quantize(QTY)) if article.by_weight else str(quantity.quantize(KRONA)),
                "unit_price": _money(article.price),
                "vat_rate": article.vat_rate,
                "discount": _money(discount),
            }
        )
        line_sum += line_amount(quantity, article.price, discount)
    fees: list[dict[str, Any]] = []
    if kind == "sale" and rng.random() < 0.03:
        role, amount = rng.choice((("shipping", "49.00"), ("handling", "29.00")))
        fees.append({"role": role, "amount": amount, "vat_rate": 25})
    receipt_discount = Decimal(0)
    if rng.random() < 0.05 and abs(line_sum) >= 50:
        receipt_discount = rng.choice((Decimal(10), Decimal(20), _round(abs(line_sum) / 10)))
    subtotal = line_sum + sum((Decimal(f["amount"]) for f in fees), Decimal(0)) - k * receipt_discount
    method = rng.choices([m for m, _ in PAYMENT_WEIGHTS], weights=[w for _, w in PAYMENT_WEIGHTS])[0]
    rounding = Decimal(0)
    if method == "cash":
        # Öresavrundning: cash is paid in whole kronor, half away from zero.
        rounding = subtotal.quantize(KRONA, rounding=ROUND_HALF_UP) - subtotal
    total = subtotal + rounding
    payments = [{"method": method, "amount": _money(total)}]
    if kind == "sale" and method == "card" and total > 100 and rng.random() < 0.05:
        gift = Decimal(100)
        payments = [{"method": "gift_card", "amount": _money(gift)}, {"method": "card", "amount": _money(total - gift)}]
    when = occurred_at or datetime.now(STOCKHOLM)
    return {
        "till_id": till_id,
        "receipt_no": receipt_no,
        "occurred_at": when.isoformat(timespec="seconds"),
        "kind": kind,
        "currency": "SEK",
        "lines": lines,
        "fees": fees,
        "discount": _money(receipt_discount),
        "rounding": _money(rounding),
        "total": _money(total),
        "payments": payments,
    }


def generate_movement(
    rng: random.Random, *, till_id: str = "kassa-1", movement_id: str = "d-1", occurred_at: datetime | None = None
) -> dict[str, Any]:
    """One stock movement that is not a sale: mostly deliveries, some shrinkage and stocktakes."""
    article = rng.choice([a for a in CATALOG if not a.by_weight])
    reason = rng.choices(("delivery", "shrinkage", "stocktake", "correction"), weights=(80, 10, 7, 3))[0]
    if reason == "delivery":
        delta = Decimal(rng.choice((6, 12, 24, 48)))
        note: str | None = "leverans"
    elif reason == "shrinkage":
        delta, note = Decimal(-rng.randint(1, 3)), "svinn"
    else:
        delta, note = Decimal(rng.choice((-2, -1, 1, 2))), None
    when = occurred_at or datetime.now(STOCKHOLM)
    return {
        "till_id": till_id,
        "movement_id": movement_id,
        "sku": article.sku,
        "delta": str(delta),
        "reason": reason,
        "occurred_at": when.isoformat(timespec="seconds"),
        "note": note,
    }


class Till:
    """A till's stream of records: receipts with running numbers, now and then a delivery.

    Args:
        seed: the random seed.
        till_id: the till's id.
        first_receipt_no: the first receipt number (pick a new range per run,
            or the agent will see the same keys again).
        movement_rate: the share of records that are stock movements.
        return_rate: the share of receipts that are returns.
        clock: the till's clock; now in Stockholm by default.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        till_id: str = "kassa-1",
        first_receipt_no: int = 1,
        movement_rate: float = 0.05,
        return_rate: float = 0.05,
        gift_card_rate: float = 0.0,
        first_z_no: int = 1,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.till_id = till_id
        self.next_receipt_no = first_receipt_no
        self.movement_prefix = f"m{first_receipt_no}-"
        self.next_movement = 1
        self.movement_rate = movement_rate
        self.return_rate = return_rate
        self.gift_card_rate = gift_card_rate
        self.clock = clock or (lambda: datetime.now(STOCKHOLM))
        self.next_z_no = first_z_no
        self.grand_total = Decimal("100000.00")
        self.day: list[dict[str, Any]] = []  # the receipts since the last Z-report
        self.day_opened_at: datetime | None = None
        self.held: list[dict[str, Any]] = []  # rung up, not sent (miss_next)
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()  # to send before anything new
        self._miss = 0

    def sale(self) -> dict[str, Any]:
        record = generate_receipt(
            self.rng,
            till_id=self.till_id,
            receipt_no=self.next_receipt_no,
            occurred_at=self.clock(),
            return_rate=self.return_rate,
            gift_card_rate=self.gift_card_rate,
        )
        self.next_receipt_no += 1
        if self.day_opened_at is None:
            self.day_opened_at = self.clock()
        self.day.append(record)
        return record

    def miss_next(self, count: int = 1) -> None:
        """The next ``count`` receipts are rung up (and counted on the Z) but not sent: a lost receipt."""
        self._miss += count

    def release(self) -> list[dict[str, Any]]:
        """Send the receipts ``miss_next`` kept back, before anything new; returns them."""
        held, self.held = self.held, []
        self.queue.extend(("sale", record) for record in held)
        return held

    def z_report(self) -> dict[str, Any]:
        """Close the day: a Z-report of the receipts since the last one, queued to be sent next."""
        report = z_report_of(self.day, self.till_id, self.next_z_no, self.day_opened_at or self.clock(), self.clock())
        self.grand_total += sum((Decimal(g["amount"]) for g in report["gross"]), Decimal(0))
        report["grand_total"] = _money(self.grand_total)
        self.next_z_no += 1
        self.day, self.day_opened_at = [], None
        self.queue.append(("z_report", report))
        return report

    def stock_movement(self) -> dict[str, Any]:
        record = generate_movement(
            self.rng,
            till_id=self.till_id,
            movement_id=f"{self.movement_prefix}{self.next_movement}",
            occurred_at=self.clock(),
        )
        self.next_movement += 1
        return record

    def next_record(self) -> tuple[str, dict[str, Any]]:
        """``("sale" | "stock_movement" | "z_report", record)``: what is queued first, else a new one.

        A receipt ``miss_next`` asked for is rung up and kept back: the next
        record is returned instead.
        """
        if self.queue:
            return self.queue.popleft()
        if self.rng.random() < self.movement_rate:
            return "stock_movement", self.stock_movement()
        record = self.sale()
        if self._miss:
            self._miss -= 1
            self.held.append(record)
            return self.next_record()
        return "sale", record


def z_report_of(
    receipts: list[dict[str, Any]], till_id: str, z_no: int, opened_at: datetime, closed_at: datetime
) -> dict[str, Any]:
    """The Z-report a till prints for ``receipts``: per rate gross and VAT summed receipt by receipt."""
    gross: dict[int, Decimal] = {}
    vat: dict[int, Decimal] = {}
    payments: dict[str, Decimal] = {}
    rounding = returns = Decimal(0)
    for receipt in receipts:
        k = -1 if receipt.get("kind") == "return" else 1
        at: dict[int, Decimal] = {}
        weights: dict[int, Decimal] = {}
        for line in receipt["lines"]:
            amount = line_amount(Decimal(line["quantity"]), Decimal(line["unit_price"]), Decimal(line["discount"]))
            at[line["vat_rate"]] = at.get(line["vat_rate"], Decimal(0)) + amount
            weights[line["vat_rate"]] = weights.get(line["vat_rate"], Decimal(0)) + amount
        for fee in receipt.get("fees") or []:
            at[fee["vat_rate"]] = at.get(fee["vat_rate"], Decimal(0)) + Decimal(fee["amount"])
        discount = k * Decimal(receipt.get("discount", "0"))
        if discount:
            total_weight = sum(weights.values(), Decimal(0))
            shares = {r: _round(discount * w / total_weight) for r, w in weights.items()}
            rest = discount - sum(shares.values(), Decimal(0))
            if rest:
                shares[max(weights, key=lambda r: (abs(weights[r]), r))] += rest
            for rate, share in shares.items():
                at[rate] -= share
        for rate, amount in at.items():
            gross[rate] = gross.get(rate, Decimal(0)) + amount
            if rate:
                vat[rate] = vat.get(rate, Decimal(0)) + _round(amount * rate / (100 + rate))
        for payment in receipt["payments"]:
            payments[payment["method"]] = payments.get(payment["method"], Decimal(0)) + Decimal(payment["amount"])
        rounding += Decimal(receipt.get("rounding", "0"))
        if receipt.get("kind") == "return":
            returns += Decimal(receipt["total"])
    numbers = [r["receipt_no"] for r in receipts]
    return {
        "till_id": till_id,
        "z_no": z_no,
        "opened_at": opened_at.isoformat(timespec="seconds"),
        "closed_at": max(opened_at, closed_at).isoformat(timespec="seconds"),
        "first_receipt_no": min(numbers) if numbers else None,
        "last_receipt_no": max(numbers) if numbers else None,
        "receipt_count": len(numbers),
        "gross": [{"rate": r, "amount": _money(a)} for r, a in sorted(gross.items(), reverse=True)],
        "vat": [{"rate": r, "amount": _money(a)} for r, a in sorted(vat.items(), reverse=True)],
        "payments": [{"method": m, "amount": _money(a)} for m, a in sorted(payments.items())],
        "rounding": _money(rounding),
        "returns_total": _money(returns),
        "grand_total": "0.00",
    }


@dataclass
class TillStats:
    """The till's own account of what the agent acknowledged.

    ``created`` counts 201 answers, ``duplicates`` 200 answers; ``accepted``
    holds ``{key: id}`` for both, so a test can compare with a destination's
    ledger. ``failed`` counts final answers by status (or exception name).
    """

    sent: int = 0
    created: int = 0
    duplicates: int = 0
    retries: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)
    by_type: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None

    @property
    def acknowledged(self) -> int:
        return self.created + self.duplicates


PATHS = {"sale": "/v1/sales", "stock_movement": "/v1/stock-movements", "z_report": "/v1/z-reports"}
RETRYABLE = {408, 425, 429, 500, 502, 503, 504, 507}


async def post_record(
    client: httpx.AsyncClient, record_type: str, record: dict[str, Any], stats: TillStats, *, max_attempts: int = 5
) -> int | None:
    """Post one record, retrying what a till would retry; returns the final status."""
    stats.sent += 1
    status: int | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            response = await client.post(PATHS[record_type], json=record)
        except httpx.HTTPError as exc:
            stats.last_error = f"{type(exc).__name__}: {exc}"
            status = None
        else:
            status = response.status_code
            if status in (200, 201):
                body = response.json()
                stats.accepted[body["key"]] = body["id"]
                stats.by_type[record_type] += 1
                if status == 201:
                    stats.created += 1
                else:
                    stats.duplicates += 1
                return status
            stats.last_error = f"HTTP {status}: {response.text[:200]}"
            if status not in RETRYABLE:
                break
        if attempt < max_attempts:
            stats.retries += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
    stats.failed[str(status) if status is not None else "connection"] += 1
    return status


async def run_till(
    base_url: str,
    rate_per_s: float,
    *,
    count: int | None = None,
    duration_s: float | None = None,
    token: str | None = None,
    seed: int = 0,
    till: Till | None = None,
    concurrency: int = 1,
    stats: TillStats | None = None,
) -> TillStats:
    """Post records to the agent's ingest at ``rate_per_s`` until ``count`` or ``duration_s``.

    Sends are scheduled on a fixed grid from the start, so a slow answer does
    not lower the average rate (up to ``concurrency`` requests in flight).

    Args:
        base_url: the agent's ingest, e.g. ``http://127.0.0.1:8780``.
        count: stop after this many records; ``duration_s``: or after this long.
        token: the ingest bearer token, if the agent wants one.
        till: the record source; a ``Till(seed=seed)`` when None.
        stats: counters to fill (pass your own to watch progress while it runs).
    """
    if count is None and duration_s is None:
        raise ValueError("run_till needs count or duration_s")
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be > 0")
    till = till or Till(seed=seed)
    stats = stats if stats is not None else TillStats()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limit = asyncio.Semaphore(max(1, concurrency))
    tasks: set[asyncio.Task[int | None]] = set()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0) as client:
        start = time.monotonic()
        index = 0
        try:
            while count is None or index < count:
                due = start + index / rate_per_s
                if duration_s is not None and due - start >= duration_s:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await limit.acquire()
                record_type, record = till.next_record()

                async def send(record_type: str = record_type, record: dict[str, Any] = record) -> int | None:
                    try:
                        return await post_record(client, record_type, record, stats)
                    finally:
                        limit.release()

                task = asyncio.create_task(send())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            # Cancelled (the demo stopping) or failed: no send may outlive the client.
            pending = list(tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return stats
