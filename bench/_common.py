"""What every benchmark needs: the machine it ran on, records, tables, an agent process.

Benchmarks print figures; they assert nothing. A target is shown next to the
figure it judges, met or not, so the table says plainly how far off it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STORE_ID = "store-001"
FAULTS = str(Path(__file__).resolve().parent.parent / "tools" / "faults")
"""Slow or failing fsyncs at the system-call level (strace): ``FAULTS slow-fsync 5 -- CMD``."""


# ----------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _disk(path: Path) -> str:
    try:
        source, fstype = subprocess.run(
            ["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(path)], check=False, capture_output=True, text=True, timeout=5
        ).stdout.split()[:2]
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"
    kind = ""
    device = Path(source).name.rstrip("0123456789") if source.startswith("/dev/") else ""
    rotational = Path(f"/sys/block/{device}/queue/rotational")
    if rotational.exists():
        kind = ", rotational" if rotational.read_text().strip() == "1" else ", non-rotational"
    return f"{source} ({fstype}{kind})"


def fsync_ms(directory: Path, count: int = 200) -> float:
    """Median time of a 4 KiB write + fsync in ``directory``: what one durable commit costs at least."""
    path = directory / "fsync-probe.bin"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def machine(directory: Path) -> str:
    """One paragraph naming the machine: cores, CPU, memory, the disk under ``directory``."""
    try:
        mem_kib = int(
            next(
                line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
            ).split()[1]
        )
        memory = f"{mem_kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = "RAM unknown"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores (nproc), {_cpu_model()}, {memory}, load average {load}; disk {_disk(directory)}, "
        f"fsync of 4 KiB p50 {fsync_ms(directory):.2f} ms; Python {platform.python_version()}, "
        f"SQLite {__import__('sqlite3').sqlite_version}, {platform.system()} {platform.release()}"
    )


# ----------------------------------------------------------------- figures


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------- records


_LINES = [
    {"sku": "7310865004703", "name": "Mjölk 1,5%", "quantity": 2, "unit_price": "15.90", "vat_rate": 12},
    {
        "sku": "7318690079512",
        "name": "Kaffe mellanrost 450 g",
        "quantity": 1,
        "unit_price": "64.90",
        "vat_rate": 12,
        "discount": "5.00",
    },
    {"sku": "7310500144405", "name": "Tidning", "quantity": 1, "unit_price": "39.00", "vat_rate": 6},
]
_TOTALS = {2: ("0.30", "92.00"), 3: ("0.30", "131.00")}


def sale(n: int, till_id: str = "kassa-1", *, lines: int = 2) -> dict[str, Any]:
    """A valid receipt of 2 or 3 lines, numbered ``n``; about 600 (800) bytes of JSON.

    Three lines is the sale the issue's CPU and wear targets are stated for:
    it derives three stock movements.
    """
    rounding, total = _TOTALS[lines]
    return {
        "till_id": till_id,
        "receipt_no": n,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "lines": [dict(line) for line in _LINES[:lines]],
        "rounding": rounding,
        "total": total,
        "payments": [{"method": "card", "amount": total}],
    }


# ----------------------------------------------------------------- the agent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def agent_pid(pid: int, deadline_s: float = 10.0) -> int:
    """The ``kassabro run`` Python process at or under ``pid``.

    taskset and the faults script exec their command; strace forks it as its
    child (and carries the same words in its own command line), so this
    descends to the process whose program is Python itself.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"agent.cli" in argv and b"python" in os.path.basename(argv[0]):
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            pid = int(children[0])
        elif time.monotonic() > deadline:
            raise RuntimeError(f"no kassabro run process under pid {pid}")
        else:
            time.sleep(0.01)  # strace has not started its command yet


def stop_agent(proc: subprocess.Popen[bytes], pid: int) -> None:
    """SIGTERM to the agent itself (strace would only detach from it), then wait for the whole command."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


class AgentProcess:
    """``kassabro run`` in its own process (its own GIL), on loopback ports.

    Args:
        root: a directory for the config, the log and the data.
        destination_url: the one http destination's url (a closed port unless given).
        destinations_toml: ``[[destinations]]`` entries instead of that one.
        prefix: a command to run the agent under, e.g. ``taskset -c 0`` or
            ``tools/faults slow-fsync 5 --`` (both: one after the other).
    """

    def __init__(
        self,
        root: Path,
        *,
        destination_url: str = "http://127.0.0.1:9/in",
        destinations_toml: str | None = None,
        prefix: list[str] | None = None,
    ):
        self.root = root
        self.prefix = prefix or []
        self.data_dir = root / "data"
        self.ingest_port = free_port()
        self.status_port = free_port()
        self.config = root / "kassabro.toml"
        self.config.write_text(
            "\n".join(
                [
                    f'store_id = "{STORE_ID}"',
                    f'data_dir = "{self.data_dir}"',
                    "[ingest]",
                    f'listen = "127.0.0.1:{self.ingest_port}"',
                    "[status]",
                    f'listen = "127.0.0.1:{self.status_port}"',
                    destinations_toml
                    or "\n".join(
                        ["[[destinations]]", 'name = "backend"', 'kind = "http"', f'url = "{destination_url}"']
                    ),
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "agent.log"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until the ingest port accepts; returns the seconds that took."""
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
            )
        self._agent_pid: int | None = None
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kassabro run exited with {self.proc.returncode}; see {self.log}")
            if port_accepts(self.ingest_port):
                return time.perf_counter() - started
            time.sleep(0.005)
        raise RuntimeError(f"kassabro run not ready within {timeout} s")

    @property
    def pid(self) -> int:
        """The agent's own pid: the Python process, not a ``strace`` in front of it."""
        assert self.proc is not None
        if self._agent_pid is None:
            self._agent_pid = agent_pid(self.proc.pid)
        return self._agent_pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the agent process has used so far (every thread)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def write_bytes(self) -> int:
        """Bytes the agent has caused to be written to the disk (``/proc/PID/io``)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        raise RuntimeError("no write_bytes in /proc/PID/io")

    def rss_mib(self) -> tuple[float, float]:
        """(current RSS, peak RSS) of the agent in MiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        if self.proc is not None:
            stop_agent(self.proc, self.pid)


def pause_destinations(db: Path, names: list[str]) -> None:
    """Create the outbox with destinations paused, so a benchmark measures ingest alone."""
    from agent.outbox.store import OutboxStore

    store = OutboxStore.open(db, store_id=STORE_ID)
    try:
        store.register_destinations([(name, "http", ["sale", "stock_movement"]) for name in names])
        for name in names:
            store.set_paused(name, True)
    finally:
        store.close()


# ----------------------------------------------------------------- a cheap till


class RawPoster:
    """One keep-alive HTTP/1.1 connection that POSTs JSON bodies: a till that costs almost no CPU.

    httpx spends 1-2 ms of CPU per request, more than the agent spends
    answering one; on a 2-core machine a load of httpx clients takes the
    agent's cores. The shop's tills are other machines, so the load should
    cost as little as it can (this: well under 0.1 ms per request).
    """

    def __init__(self, port: int, path: str = "/v1/sales") -> None:
        self.port = port
        self.head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; the status and the answer's body."""
        if self._conn is None:
            self._conn = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._conn
        writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"\r\ncontent-length:")
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
        return int(head[9:12]), await reader.readexactly(length)

    async def accepted(self, body: bytes) -> float:
        """POST a record that must be answered 201; the seconds it took (anything else ends the run)."""
        started = time.perf_counter()
        status, answer = await self.post(body)
        if status != 201:
            raise RuntimeError(f"ingest answered {status}: {answer[:200]!r}")
        return time.perf_counter() - started

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


async def flat_out(port: int, clients: int, first: int, count: int, lines: int = 3) -> tuple[float, list[float]]:
    """``count`` sales of ``lines`` lines from ``clients`` keep-alive tills as fast as answered; (seconds, latencies)."""
    bodies = [json.dumps(sale(n, lines=lines)).encode() for n in range(first, first + count)]
    latencies: list[float] = []

    async def till(mine: list[bytes]) -> None:
        poster = RawPoster(port)
        try:
            for body in mine:
                latencies.append(await poster.accepted(body))
        finally:
            poster.close()

    started = time.perf_counter()
    await asyncio.gather(*(till(bodies[i::clients]) for i in range(clients)))
    return time.perf_counter() - started, latencies
