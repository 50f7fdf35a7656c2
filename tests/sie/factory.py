"""Hand-built sales, envelopes and batches for the SIE tests (the outbox's shapes, no outbox)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.outbox.types import Batch
from agent.records import normalize, parse_record
from agent.sie.config import SieDestinationConfig

_seq = itertools.count(1)


def config(directory: Path, **overrides: Any) -> SieDestinationConfig:
    values: dict[str, Any] = {
        "name": "bokforing",
        "kind": "sie",
        "dir": directory,
        "orgnr": "556677-8899",
        "company_name": 'Kafé & Bok "Hörnan" AB',
    }
    values.update(overrides)
    return SieDestinationConfig.model_validate(values)


def line(
    sku: str, name: str | None, quantity: str, unit_price: str, vat_rate: int, discount: str = "0"
) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": name,
        "quantity": quantity,
        "unit_price": unit_price,
        "vat_rate": vat_rate,
        "discount": discount,
    }


def sale(
    receipt_no: int,
    occurred_at: str,
    lines: list[dict[str, Any]],
    payments: list[tuple[str, str]],
    *,
    till_id: str = "kassa-1",
    kind: str = "sale",
    fees: list[dict[str, Any]] | None = None,
    discount: str = "0",
    rounding: str = "0",
    total: str | None = None,
    currency: str = "SEK",
) -> dict[str, Any]:
    """A sale as the outbox stores it (normalised); ``total`` defaults to the payments' sum."""
    paid = sum((Decimal(a) for _, a in payments), Decimal(0))
    raw = {
        "till_id": till_id,
        "receipt_no": receipt_no,
        "occurred_at": occurred_at,
        "kind": kind,
        "currency": currency,
        "lines": lines,
        "fees": fees or [],
        "discount": discount,
        "rounding": rounding,
        "total": total if total is not None else str(paid),
        "payments": [{"method": m, "amount": a} for m, a in payments],
    }
    return normalize(parse_record("sale", raw))


def envelope(
    data: dict[str, Any], *, record_type: str = "sale", store_id: str = "store-001", record_id: str | None = None
) -> dict[str, Any]:
    seq = next(_seq)
    key = f"sale:{data.get('till_id')}:{data.get('receipt_no')}" if record_type == "sale" else f"x:{seq}"
    return {
        "id": record_id or f"rec-{seq:06d}",
        "key": key,
        "type": record_type,
        "store_id": store_id,
        "seq": seq,
        "received_at": "2026-11-26T13:59:01.120Z",
        "clock_synced": True,
        "data": data,
    }


def batch(records: list[dict[str, Any]], batch_id: str = "batch-1", destination: str = "bokforing") -> Batch:
    return Batch(batch_id=batch_id, destination=destination, records=records)


class FixedClock:
    """A settable clock: tests move time by assigning ``now``."""

    def __init__(self, iso: str):
        self.now = datetime.fromisoformat(iso)

    def set(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso)

    def __call__(self) -> datetime:
        return self.now.astimezone(UTC)


def golden_sales() -> list[dict[str, Any]]:
    """The golden day of till kassa-1 on 2026-11-26 (see test_golden.py for the hand computation)."""
    day = "2026-11-26T{}+01:00"
    return [
        # cash with öresavrundning, two food lines (6 %, the reduced rate since 2026-04-01)
        sale(
            1001,
            day.format("09:02:11"),
            [
                line("7310865004703", "Mjölk 1,5%", "2", "15.90", 6),
                line("7310050000001", "Kaffe 500 g", "1", "54.95", 6),
            ],
            [("cash", "87.00")],
            rounding="0.25",
        ),
        # card, two VAT rates, a fractional quantity (0.453 kg × 129.00 = 58.437 -> 58.44)
        sale(
            1002,
            day.format("10:15:00"),
            [
                line("2000000004531", "Ost, lagrad", "0.453", "129.00", 6),
                line("7388888000001", "Dagstidning", "1", "39.00", 6),
                line("7311111000002", "Glödlampa", "1", "49.90", 25),
            ],
            [("card", "147.34")],
        ),
        # Swish, a line discount
        sale(
            1003,
            day.format("11:40:30"),
            [line("T-SHIRT-M", 'Tröja "Åre"', "2", "199.00", 25, "50.00")],
            [("swish", "348.00")],
        ),
        # gift card and card, a receipt discount spread over 6 % and 25 %
        sale(
            1004,
            day.format("13:05:00"),
            [line("9789100000001", "Bok: Sagor", "1", "249.00", 6), line("PENNA", "Penna", "1", "25.00", 25)],
            [("gift_card", "200.00"), ("card", "46.60")],
            discount="27.40",
        ),
        # invoice, shipping and handling fees
        sale(
            1005,
            day.format("15:30:00"),
            [line("HYLLA", "Hylla ek", "1", "800.00", 25)],
            [("invoice", "928.00")],
            fees=[
                {"role": "shipping", "amount": "99.00", "vat_rate": 25},
                {"role": "handling", "amount": "29.00", "vat_rate": 25},
            ],
        ),
        # a return of the coffee, refunded in cash with rounding
        sale(
            1006,
            day.format("17:45:00"),
            [line("7310050000001", "Kaffe 500 g", "-1", "54.95", 6)],
            [("cash", "-55.00")],
            kind="return",
            rounding="-0.05",
        ),
    ]


class Books:
    """A real outbox file, the books of its ``sie`` destination, and a settable clock.

    ``put`` stores records as ingest would; ``run`` is a booking run (as at
    ``export_at``); ``acknowledge`` lets the destination's delivery tell the
    outbox what is booked (claim with ``accept``, refusals as dead letters).
    ``restart`` builds new objects over the same files, as a restarted agent has.
    """

    def __init__(self, root: Path, now: str = "2026-11-27T02:00:00+01:00", **overrides: Any) -> None:
        from agent.destinations.sie import SieDestination
        from agent.outbox.store import OutboxStore

        self.root = root
        self.dir = root / "sie"
        self.clock = FixedClock(now)
        self.config = config(self.dir, **overrides)
        self.store = OutboxStore.open(root / "outbox.db", store_id="store-001")
        self.store.register_destinations([("bokforing", "sie", ["sale"])])
        self.destination = SieDestination(self.config, store_id="store-001", clock=self.clock, program_version="0.1.0")
        self.destination.books.prepare()

    def restart(self) -> None:
        from agent.destinations.sie import SieDestination

        self.destination = SieDestination(self.config, store_id="store-001", clock=self.clock, program_version="0.1.0")
        self.destination.books.prepare()

    def put(self, *records: dict[str, Any], record_type: str = "sale") -> None:
        self.store.enqueue([parse_record(record_type, r) for r in records])

    def run(self, *force: tuple[date, str | None]) -> Any:
        return self.destination.books.run(self.store.conn, list(force))

    def acknowledge(self) -> dict[str, str]:
        """Deliver what the books hold; returns the dead letters made (record id -> reason)."""
        refused: dict[str, str] = {}
        for _ in range(100):
            batch = self.store.claim_batch("bokforing", 1000, accept=self.destination.accept)
            if batch is None:
                break
            result = self.destination.write(batch)
            self.store.complete_batch("bokforing", batch.batch_id, {r: (None, w) for r, w in result.rejected.items()})
            refused.update(result.rejected)
        return refused

    def pending(self) -> int:
        return int(next(d for d in self.store.destination_stats() if d["name"] == "bokforing")["pending"])

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("*.si"))

    def vouchers(self) -> list[Any]:
        from agent.sie.reader import read_strict

        return [v for f in self.files() for v in read_strict(f.read_bytes()).vouchers]

    def close(self) -> None:
        self.store.close()


def by_account(voucher: Any) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for row in voucher.rows:
        out[row.account] = out.get(row.account, Decimal(0)) + row.amount
    return out
