"""Small helpers shared by tests: loopback ports, waits, valid records, outbox dumps.

Kept generic on purpose: any test may import these without pulling in a
fixture tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from agent.records import money

LOOPBACK = "127.0.0.1"
STORE_ID = "store-001"
"""The store id tests use unless they test store ids."""
FAULTS = Path(__file__).resolve().parent.parent / "tools" / "faults"
"""Runs a command with slow or failing fsyncs, or SIGKILLs it at its Nth fsync (strace)."""


def memory_tmpdir() -> str | None:
    """``/dev/shm`` (a tmpfs, where an fsync costs nothing) when there is one; else None, the default.

    For tests of the outbox's logic against a model, which commit thousands of
    times: on a busy disk each commit's fsync costs milliseconds and proves
    nothing there. Durability across a power cut is tests/chaos's job (real
    fsyncs, killed and failed with tools/faults), on the ordinary temp dir.
    Pass it as ``dir=`` to ``tempfile.mkdtemp``.
    """
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 15.0) -> bool:
    """Wait (bounded by ``timeout``) until ``host:port`` accepts; True when it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return True
        time.sleep(0.02)
    return False


class _Deadline:
    """``timeout`` s from now; ``check`` raises, naming ``what``, once they are over."""

    def __init__(self, timeout: float, what: str | Callable[[], object]) -> None:
        self.at = time.monotonic() + timeout
        self.timeout = timeout
        self.what = what

    def check(self) -> None:
        if time.monotonic() < self.at:
            return
        if callable(self.what):
            raise AssertionError(f"not reached within {self.timeout:g} s; then: {self.what()}")
        raise AssertionError(f"{self.what} not reached within {self.timeout:g} s")


def wait_until(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str | Callable[[], object] = "the condition",
    *,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``check`` every ``interval`` s until it returns something truthy, and return that.

    After ``timeout`` s it fails with an AssertionError naming ``what`` (a
    callable ``what`` is called then, to show the state at the moment of
    failure). The deadline is looked at only after a call, so a loaded machine
    that got there just in time passes. Exceptions listed in ``ignoring``
    count as "not yet" (a page element being redrawn).
    """
    deadline = _Deadline(timeout, what)
    while True:
        with contextlib.suppress(*ignoring):
            if value := check():
                return value
        deadline.check()
        time.sleep(interval)


async def eventually(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str | Callable[[], object] = "the condition",
    *,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """``wait_until`` inside an event loop: ``check`` may be a plain or an async callable."""
    deadline = _Deadline(timeout, what)
    while True:
        with contextlib.suppress(*ignoring):
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        deadline.check()
        await asyncio.sleep(interval)


def make_sale(
    n: int,
    *,
    till_id: str = "kassa-1",
    sku: str = "7310865004703",
    price: str = "15.90",
    quantity: int = 2,
    vat_rate: int = 12,
    **fields: Any,
) -> dict[str, Any]:
    """A valid one-line sale (receipt ``n`` of ``till_id``) whose total and payment add up.

    ``fields`` replace top-level fields as given (no recomputation), so a test
    can break exactly one rule: ``make_sale(1, total="31.81")``.
    """
    from decimal import Decimal

    total = str((Decimal(price) * quantity).quantize(Decimal("0.01")))
    sale: dict[str, Any] = {
        "till_id": till_id,
        "receipt_no": n,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "lines": [{"sku": sku, "name": "Mjölk 1,5%", "quantity": quantity, "unit_price": price, "vat_rate": vat_rate}],
        "total": total,
        "payments": [{"method": "card", "amount": total}],
    }
    sale.update(fields)
    return sale


def make_movement(n: int, *, till_id: str = "kassa-1", **fields: Any) -> dict[str, Any]:
    """A valid stock movement (a delivery of 24 units), id ``d-{n}``."""
    movement: dict[str, Any] = {
        "till_id": till_id,
        "movement_id": f"d-{n}",
        "sku": "7310865004703",
        "delta": 24,
        "reason": "delivery",
        "occurred_at": "2026-11-26T07:30:00+01:00",
    }
    movement.update(fields)
    return movement


# Random valid receipts (hypothesis): the money rule's property tests and the quick reader's equivalence.


def cents(low: int, high: int) -> st.SearchStrategy[Decimal]:
    return st.integers(low, high).map(lambda n: Decimal(n).scaleb(-2))


def spell(value: Decimal, places: int) -> st.SearchStrategy[Any]:
    """The ways a till may write one decimal: number, string, padded string."""
    options: list[Any] = [str(value), f"{value:.{places}f}", float(value), Decimal(value)]
    if value == value.to_integral_value():
        options.append(int(value))
    return st.sampled_from(options)


@st.composite
def valid_receipts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid sale or return of 1..12 lines, decimals spelled every way a till may (``spell``).

    Line discounts, fees (on sales), a receipt discount, cash rounding and 1..3 payments,
    so the money rule to the öre holds by construction; no printed ``vat``.
    """
    kind = draw(st.sampled_from(["sale", "return"]))
    sign = 1 if kind == "sale" else -1
    lines: list[dict[str, Any]] = []
    gross_total = Decimal(0)
    for index in range(draw(st.integers(1, 12))):
        quantity = sign * Decimal(draw(st.integers(1, 50_000))).scaleb(-3)
        price = draw(cents(0, 500_000))
        gross = money(quantity * price)
        discount = draw(cents(0, int(abs(gross) * 100)))
        amount = gross - sign * discount
        gross_total += amount
        lines.append(
            {
                "sku": draw(st.text(string.ascii_letters + string.digits + "åäö-", min_size=1, max_size=64)),
                "name": draw(st.none() | st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)),
                "quantity": draw(spell(quantity, 3)),
                "unit_price": draw(spell(price, 2)),
                "vat_rate": draw(st.sampled_from([25, 12, 6, 0, "25", "12", 6.0])),
                "discount": draw(spell(discount, 2)),
            }
        )
        del index
    fees = []
    if kind == "sale":
        for _ in range(draw(st.integers(0, 2))):
            amount = draw(cents(0, 20_000))
            gross_total += amount
            fees.append(
                {
                    "role": draw(st.sampled_from(["shipping", "handling"])),
                    "amount": draw(spell(amount, 2)),
                    "vat_rate": 25,
                }
            )
    receipt_discount = draw(cents(0, int(abs(gross_total) * 100)))
    before_rounding = gross_total - sign * receipt_discount
    rounding = draw(cents(-99, 99))
    if sign * (before_rounding + rounding) < 0:  # keep the sign the kind demands
        rounding = -before_rounding
    total = money(before_rounding + rounding)
    parts = draw(st.integers(1, 3))
    share = money(total / parts)
    amounts = [share] * (parts - 1) + [total - share * (parts - 1)]
    payments = [
        {
            "method": draw(st.sampled_from(["card", "cash", "swish", "gift_card", "invoice", "other"])),
            "amount": draw(spell(a, 2)),
        }
        for a in amounts
    ]
    return {
        "till_id": draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)),
        "receipt_no": draw(st.integers(1, 2**63 - 1)),
        "occurred_at": draw(
            st.sampled_from(["2026-11-26T14:59:01+01:00", "2026-06-01T00:00:00Z", "2027-01-01T23:59:59.5-03:00"])
        ),
        "kind": kind,
        "lines": lines,
        "fees": fees,
        "discount": draw(spell(receipt_discount, 2)),
        "rounding": draw(spell(rounding, 2)),
        "total": draw(spell(total, 2)),
        "payments": payments,
    }


def make_z_report(
    z_no: int,
    first: int | None,
    last: int | None,
    *,
    till_id: str = "kassa-1",
    sales: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Z-report for receipts ``first..last`` of ``till_id``.

    With ``sales`` (receipts as ``make_sale`` builds them: one line each, no
    receipt discount or fees), its sums are those receipts' (gross, VAT per
    receipt, payments, rounding), so it reconciles; ``fields`` then replace
    top-level fields as given, so a test can break exactly one figure.
    """
    from collections import defaultdict
    from decimal import ROUND_HALF_UP, Decimal

    cent = Decimal("0.01")
    gross: dict[int, Decimal] = defaultdict(Decimal)
    vat: dict[int, Decimal] = defaultdict(Decimal)
    payments: dict[str, Decimal] = defaultdict(Decimal)
    rounding = returns = Decimal(0)
    for sale in sales or []:
        receipt: dict[int, Decimal] = defaultdict(Decimal)
        for line in sale["lines"]:
            amount = (Decimal(str(line["quantity"])) * Decimal(str(line["unit_price"]))).quantize(cent, ROUND_HALF_UP)
            receipt[int(line["vat_rate"])] += amount - Decimal(str(line.get("discount", "0")))
        for rate, amount in receipt.items():
            gross[rate] += amount
            vat[rate] += (amount * rate / (100 + rate)).quantize(cent, ROUND_HALF_UP)
        for payment in sale["payments"]:
            payments[payment["method"]] += Decimal(str(payment["amount"]))
        rounding += Decimal(str(sale.get("rounding", "0")))
        if sale.get("kind") == "return":
            returns += Decimal(str(sale["total"]))
    z: dict[str, Any] = {
        "till_id": till_id,
        "z_no": z_no,
        "opened_at": "2026-11-26T08:00:00+01:00",
        "closed_at": "2026-11-26T20:05:00+01:00",
        "first_receipt_no": first,
        "last_receipt_no": last,
        "receipt_count": 0 if first is None or last is None else last - first + 1,
        "gross": [{"rate": r, "amount": str(a)} for r, a in sorted(gross.items(), reverse=True)],
        "vat": [{"rate": r, "amount": str(a)} for r, a in sorted(vat.items(), reverse=True) if r],
        "payments": [{"method": m, "amount": str(a)} for m, a in sorted(payments.items())],
        "rounding": str(rounding),
        "returns_total": str(returns),
        "grand_total": "1234567.00",
    }
    z.update(fields)
    return z


def dump_tables(db_path: Path | str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every row of every table (SQL text, ``iterdump``), read on a fresh connection.

    Compares what is *stored*, not the file's bytes, which WAL checkpoints
    change without changing any row. ``exclude`` drops the INSERTs of the
    named tables (e.g. ``conflicts`` after a 409, where keeping the
    conflicting version aside is the specified behaviour).
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        lines = list(conn.iterdump())
    finally:
        conn.close()
    skipped = tuple(f'INSERT INTO "{name}"' for name in exclude)
    return [line for line in lines if not line.startswith(skipped)] if skipped else lines


def stored_keys(db_path: Path | str) -> dict[str, tuple[str, int]]:
    """``{key: (id, seq)}`` of every stored record, on a fresh connection."""
    conn = sqlite3.connect(db_path)
    try:
        return {key: (rid, seq) for key, rid, seq in conn.execute("SELECT key, id, seq FROM records")}
    finally:
        conn.close()


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie holds no port and no file lock)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class KassabroProcess:
    """``kassabro run`` as a real subprocess on loopback ports that stay the same across restarts.

    Args:
        root: a directory for the config, the log and (unless given) the data.
        extra_toml: the rest of the config (``[outbox]``, ``[[destinations]]``...).
        data_dir: where the outbox lives (default ``root/data``).
        store_id: the store.
    """

    def __init__(self, root: Path, extra_toml: str = "", *, data_dir: Path | None = None, store_id: str = "store-001"):
        self.root = root
        self.data_dir = data_dir or root / "data"
        self.ingest_port = free_port()
        self.status_port = free_port()
        self.config_path = root / "kassabro.toml"
        self.log_path = root / "agent.log"
        self.config_path.write_text(
            f'store_id = "{store_id}"\ndata_dir = "{self.data_dir}"\n'
            f'[ingest]\nlisten = "127.0.0.1:{self.ingest_port}"\n'
            f'[status]\nlisten = "127.0.0.1:{self.status_port}"\n' + extra_toml,
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._group = False
        self.starts = 0

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    base_url = ingest_url

    @property
    def db(self) -> Path:
        return self.data_dir / "outbox.db"

    def start(
        self, timeout: float | None = 20.0, *, faults: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> None:
        """Start it; wait until the ingest port accepts unless ``timeout`` is None.

        ``faults`` runs it under ``tools/faults`` (e.g. ``("kill-at-fsync", "40")``);
        it then runs in a process group of its own, so ``kill`` ends strace and
        the agent together. ``env``: more environment variables.
        """
        assert self.proc is None or self.proc.poll() is not None, "already running"
        command = [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path)]
        if faults:
            command = [str(FAULTS), *faults, "--", *command]
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts + 1}{' under faults ' + ' '.join(faults) if faults else ''}\n".encode())
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=bool(faults),
            )
        self._group = bool(faults)
        self.starts += 1
        if timeout is not None:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait until the ingest port accepts; fail loudly (with the log) otherwise."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kassabro run exited with {self.proc.returncode}:\n{self.log_tail()}")
            if port_accepts(self.ingest_port):
                return
            time.sleep(0.01)
        raise AssertionError(f"kassabro run not ready within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is None:
            return
        if self._group:
            # strace and the agent it runs: the group this process leads. The agent may
            # outlive strace for a moment; the next start must not meet it on the port.
            deadline = time.monotonic() + 10
            while _group_running(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.poll()
                if time.monotonic() > deadline:
                    raise AssertionError(f"process group {self.proc.pid} outlived SIGKILL for 10 s")
                time.sleep(0.01)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the clean stop systemd asks for. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"kassabro run ignored SIGTERM for {timeout} s:\n{self.log_tail()}") from None
        return int(self.proc.returncode)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
