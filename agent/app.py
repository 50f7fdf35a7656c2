"""The running agent: config -> outbox -> sources, delivery loops, status.

``Agent`` wires the parts together and is the ``StatusProvider`` the status
page reads. Start order matters for systemd: READY=1 is sent only when the
outbox is open and both listeners are bound, so "ready" means a till can
hand records over. Stop order matters for the till: ingest answers 503 first,
the commits in flight finish, then the loops stop and the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from agent import __version__, systemd, tlscert
from agent.backoff import RetryPolicy
from agent.clock import iso_now
from agent.config import Config
from agent.delivery import DeliveryLoop, state_at_rest
from agent.destinations.base import Destination
from agent.destinations.kinds import AgentContext, build_destination
from agent.ingest import IngestAnswer, Ingestor
from agent.metrics import Metrics
from agent.mqtt import MqttDestinationConfig
from agent.outbox.service import Outbox
from agent.outbox.stats import DestinationStats, OutboxStats
from agent.outbox.store import OutboxError, UnknownDestination
from agent.outbox.types import DeadLetter
from agent.reconcile import STATE_NAME, Problem, Reconciler, outbox_problem
from agent.register import ArticleRegister
from agent.serve import AppServer, bind
from agent.sie.config import SieDestinationConfig
from agent.sources.http import create_ingest_app
from agent.sources.spool import SpoolSource
from agent.web.provider import Health

if TYPE_CHECKING:
    from agent.destinations.sie import SieDestination

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 30.0
STATUS_CACHE_S = 0.5
HEALTH_PROBE_S = 2.0


def _destination_problems(dest: Destination) -> list[Any]:
    """What a destination asks a person to act on (the books: sales dated in the future)."""
    try:
        return list(dest.problems())
    except Exception:
        log.exception("%s: its problems could not be read", dest.name)
        return []


class Agent:
    """Kassabro's agent for one store.

    Args:
        config: the validated config; each ``[[destinations]]`` entry becomes
            its kind's adapter (``agent.destinations.kinds``).
    """

    def __init__(self, config: Config):
        self.config = config
        self.store_id = config.store_id
        self.version = __version__
        self.admin_token = config.admin_token()
        self.ingest_token = config.ingest_token()
        cert = config.ingest.tls_cert_file or config.status.tls_cert_file
        self.tls_fingerprint = tlscert.fingerprint(cert) if cert is not None else None
        """SHA-256 of the listeners' certificate, shown on the page so a till can pin it."""
        self.outbox = Outbox(config.outbox_path, store_id=config.store_id, max_bytes=config.outbox.max_bytes)
        self.metrics = Metrics()
        self.reconciler = Reconciler(config.data_dir / STATE_NAME, gift_card_skus=config.skus.gift_card)
        self.register: ArticleRegister | None = None
        self.ingestor = Ingestor(
            self.outbox,
            derive_stock_from_sales=config.ingest.derive_stock_from_sales,
            gift_card_skus=config.skus.gift_card,
            on_answer=self._count_answer,
            on_refused=self.reconciler.refused,
            max_age_days=config.ingest.max_age_days,
            max_future_hours=config.ingest.max_future_hours,
        )
        self.destinations: dict[str, Destination] = {}
        self.loops: dict[str, DeliveryLoop] = {}
        self.ingest_server: AppServer | None = None
        self.status_server: AppServer | None = None
        self.spool: SpoolSource | None = None
        self.mqtt_sources: list[Any] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._started_monotonic = time.monotonic()
        self._status_cache: tuple[float, dict[str, Any]] | None = None
        self._status_lock = asyncio.Lock()
        self._health_cache: tuple[float, Health] | None = None
        self._state_changed = asyncio.Event()
        self._stopped_since: dict[str, str] = {}
        self._logged_stopped: set[str] = set()
        """When each source was first seen stopped (its problem's ``since``)."""

    # ---------------------------------------------------------------- start
    async def start(self) -> None:
        """Open everything; returns when the agent accepts records."""
        cfg = self.config
        await self.outbox.start()
        await asyncio.to_thread(self.reconciler.load)
        specs = [(d.name, d.kind, list(d.types)) for d in cfg.destinations]
        await self.outbox.call(lambda s: s.register_destinations(specs))
        for problem in self.outbox.problems:
            log.error("outbox problem: %s", problem)

        # One article register per agent when a hogia destination reads it (agent.register).
        reads = any(getattr(d, "read_register", False) for d in cfg.destinations)
        self.register = ArticleRegister(cfg.outbox_path, cfg.skus) if reads else None
        context = AgentContext(
            store_id=cfg.store_id, skus=cfg.skus, status_source=self.status, outbox=self.outbox, register=self.register
        )
        for dcfg in cfg.destinations:
            dest = build_destination(dcfg, context)
            self.destinations[dest.name] = dest
            loop = DeliveryLoop(
                self.outbox,
                dest,
                policy=RetryPolicy(base_s=dcfg.backoff_base_s, cap_s=dcfg.backoff_cap_s),
                batch_max=dcfg.batch_max,
                metrics=self.metrics,
                on_state_change=self._on_state_change,
            )
            self.loops[dest.name] = loop
            if hasattr(dest, "on_booked"):  # the books: a run's bookings are acknowledged at once
                dest.on_booked = loop.kick

        ingest_app = create_ingest_app(
            self.ingestor,
            token=self.ingest_token,
            tills=self.config.till_tokens(),
            on_auth_failed=self.metrics.auth_failed,
            on_refused=self._count_refusal,
            get_record=self._get_record,
        )
        self.ingest_server = AppServer(
            ingest_app,
            bind(cfg.ingest.listen.host, cfg.ingest.listen.port),
            name="ingest",
            tls_cert_file=cfg.ingest.tls_cert_file,
            tls_key_file=cfg.ingest.tls_key_file,
        )
        from agent.web.app import create_status_app  # the page's templates load lazily

        self.status_server = AppServer(
            create_status_app(self),
            bind(cfg.status.listen.host, cfg.status.listen.port),
            name="status",
            tls_cert_file=cfg.status.tls_cert_file,
            tls_key_file=cfg.status.tls_key_file,
        )
        if cfg.ingest.plain_on_lan:
            log.warning(
                "ingest on %s is plain HTTP (allow_plain_http = true): sales and tokens cross the LAN in clear;"
                " set [ingest] tls_cert_file and tls_key_file (kassabro tls renew)",
                cfg.ingest.listen,
            )
        self.ingest_server.start()
        self.status_server.start()
        # The adapters open their connection pools after the ports: a pool's TLS
        # context takes a few hundred milliseconds to load (more on a Pi), and
        # sales must be taken from the first moment; delivery starts just after.
        for dest in self.destinations.values():
            await dest.start()
        if cfg.ingest.spool_dir is not None:
            self.spool = SpoolSource(cfg.ingest.spool_dir, self.ingestor)
            self.spool.start()
        for dcfg in cfg.destinations:
            if isinstance(dcfg, MqttDestinationConfig) and dcfg.ingest:
                from agent.sources.mqtt import MqttIngestSource

                source = MqttIngestSource.from_config(dcfg, store_id=self.store_id, ingestor=self.ingestor)
                await source.start()
                self.mqtt_sources.append(source)
        for loop in self.loops.values():
            loop.start()
        self._tasks += [
            asyncio.create_task(self._sampler(), name="sampler"),
            asyncio.create_task(self._pruner(), name="pruner"),
            asyncio.create_task(self.reconciler.follow(self.outbox), name="reconcile"),
        ]
        interval = systemd.watchdog_interval()
        if interval:
            self._tasks.append(
                asyncio.create_task(systemd.watchdog_loop(self._watchdog_probe, interval), name="watchdog")
            )
        log.info(
            "kassabro %s for store %s: ingest on %s (port %d), status on %s (port %d), %d destination(s)",
            __version__,
            self.store_id,
            cfg.ingest.listen,
            self.ingest_port,
            cfg.status.listen,
            self.status_port,
            len(self.loops),
        )
        systemd.ready(await self._status_line())

    @property
    def ingest_port(self) -> int:
        assert self.ingest_server is not None
        return self.ingest_server.port

    @property
    def status_port(self) -> int:
        assert self.status_server is not None
        return self.status_server.port

    # ----------------------------------------------------------------- stop
    def request_stop(self) -> None:
        self._stop_requested.set()

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT ask for a clean stop. Installed before ``start`` so a
        stop that systemd sends right after READY=1 is never the default (fatal) one."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        self.handle_signals()
        await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop accepting (503), finish the commits in flight, close the database."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        systemd.stopping("stopping")
        log.info("stopping: ingest now answers 503")
        # MQTT first: a message that arrives while ingest refuses would be answered
        # "unavailable" on ingest/rejected; unsubscribed, the broker keeps it for us.
        for source in self.mqtt_sources:
            with contextlib.suppress(Exception):
                await source.close()
        self.ingestor.closing = True
        if self.spool is not None:
            await self.spool.stop()
        await asyncio.gather(*(s.stop() for s in (self.ingest_server, self.status_server) if s is not None))
        await asyncio.gather(*(loop.stop() for loop in self.loops.values()))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for dest in self.destinations.values():
            with contextlib.suppress(Exception):
                await dest.close()
        await asyncio.to_thread(self.reconciler.save)
        await self.outbox.close()
        log.info("stopped")

    # -------------------------------------------------------------- counters
    def _count_answer(self, record_type: str, answer: IngestAnswer) -> None:
        if answer.ok:
            new = [r for r in answer.results if not r.duplicate]
            if new:
                for record_type_, count in Counter(r.key.split(":", 1)[0] for r in new).items():
                    self.metrics.ingest_accepted(record_type_, count)
            return
        reason = {403: "forbidden", 409: "conflict", 422: "validation", 507: "storage_full", 503: "unavailable"}.get(
            answer.status
        )
        if reason:
            self.metrics.ingest_rejected(reason)

    def _count_refusal(self, reason: str) -> None:
        self.metrics.ingest_rejected(reason)

    async def _get_record(self, key: str) -> dict[str, Any] | None:
        found = await self.outbox.get_record(key)
        return None if found is None else dict(found)

    # -------------------------------------------------------- StatusProvider
    async def status(self) -> dict[str, Any]:
        """``/api/status`` (contract §4), computed at most every half second."""
        async with self._status_lock:
            now = time.monotonic()
            if self._status_cache and now - self._status_cache[0] < STATUS_CACHE_S:
                return self._status_cache[1]
            dests = await self.outbox.destination_stats()
            box = await self.outbox.outbox_stats()
            body = self._status_body(dests, box)
            self.metrics.observe_stats(body["destinations"], box, body["tills"], body["problems"])
            self._status_cache = (time.monotonic(), body)
            return body

    def _status_body(self, dests: list[DestinationStats], box: OutboxStats) -> dict[str, Any]:
        order = {d.name: i for i, d in enumerate(self.config.destinations)}
        out = []
        for d in sorted(dests, key=lambda d: (order.get(d["name"], len(order)), d["name"])):
            loop = self.loops.get(d["name"])
            live = loop.snapshot() if loop else {}
            state = live["state"] if loop is not None and not d["paused"] else state_at_rest(d)
            out.append(
                {
                    "name": d["name"],
                    "kind": d["kind"],
                    "state": state,
                    "pending": d["pending"],
                    "pending_by_type": d["pending_by_type"],
                    "oldest_pending_age_s": d["oldest_pending_age_s"],
                    "dead_letters": d["dead_letters"],
                    "last_success_at": d["last_success_at"],
                    "last_error": live.get("last_error") or d["last_error"],
                    "next_attempt_at": live.get("next_attempt_at") or d["next_attempt_at"],
                    "offline_since": live.get("offline_since") or d["failing_since"],
                    "types": d["types"],
                }
            )
            if "broker" in live:  # mqtt: the host in use, of its hosts (None while not connected)
                out[-1]["broker"] = live["broker"]
            if getattr(self.destinations.get(d["name"]), "reads_only", False):  # hogia, send_records = false
                out[-1]["reads_only"] = True
        return {
            "store_id": self.store_id,
            "version": self.version,
            "uptime_s": round(time.monotonic() - self._started_monotonic, 1),
            "outbox": {"records": box["records"], "bytes": box["bytes"]},
            "destinations": out,
            "ingest": self.metrics.ingest_summary(),
            "problems": [outbox_problem(text) for text in box.get("problems", [])]
            + self.reconciler.problems()
            + [problem for dest in self.destinations.values() for problem in _destination_problems(dest)]
            + self._stopped_sources(),
            "tills": self.reconciler.summaries(),
            "register": self.register.summary() if self.register is not None else None,
        }

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        letters = await self.outbox.list_dead_letters(None, limit)
        for letter in letters:
            if letter.state == "replaying":  # in a batch on its way: for the shop, "being sent again"
                letter.state = "retrying"
        return sorted(letters, key=lambda d: d.created_at, reverse=True)

    async def recent_records(self, limit: int = 20) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [dict(row) for row in await self.outbox.read(lambda s: s.recent_records(limit))]
        for row in rows:
            row["deliveries"] = {
                k: ("dead" if v == "dead_letter" else "delivered" if v == "delivered" else "pending")
                for k, v in row["deliveries"].items()
                if v != "not_applicable"
            }
        return rows

    async def books(self) -> list[dict[str, Any]]:
        """The SIE files of each ``sie`` destination (the page's Bokföring panel), newest first."""
        out = []
        for dest in self._sie_destinations():
            listed = await asyncio.to_thread(dest.files)
            out.append({"destination": dest.name, "files": [dataclasses.asdict(f) for f in listed]})
        return out

    async def book_file(self, destination: str, name: str) -> bytes:
        """One file of a ``sie`` destination's books, for a download behind the admin token.

        Raises:
            KeyError: no ``sie`` destination of that name.
            FileNotFoundError: no such file among its books.
        """
        for dest in self._sie_destinations():
            if dest.name == destination:
                return await asyncio.to_thread(dest.read_file, name)
        raise KeyError(destination)

    def _sie_destinations(self) -> list[SieDestination]:
        """The running ``sie`` adapters, found by their config (importing their class would load SIE for all)."""
        return [
            cast("SieDestination", self.destinations[d.name])
            for d in self.config.destinations
            if isinstance(d, SieDestinationConfig) and d.name in self.destinations
        ]

    async def history(self) -> list[dict[str, float]]:
        return self.metrics.history()

    async def retry_dead_letters(self, destination: str | None, ids: list[str] | None) -> int:
        if destination is not None and destination not in self.loops:
            raise KeyError(destination)
        try:
            count = await self.outbox.retry_dead_letters(destination, ids)
        except UnknownDestination as exc:
            raise KeyError(destination) from exc
        for name, loop in self.loops.items():
            if destination in (None, name):
                loop.kick()
        self._status_cache = None
        log.info("dead letters queued for retry: %d (destination %s)", count, destination or "all")
        return count

    async def set_paused(self, destination: str, paused: bool) -> None:
        if destination not in self.loops:
            raise KeyError(destination)
        await self.outbox.set_paused(destination, paused)
        if not paused:
            self.loops[destination].kick()
        self._status_cache = None
        log.info(
            "destination %s %s", destination, "paused" if paused else "resumed", extra={"destination": destination}
        )

    async def health(self) -> Health:
        """Writable outbox and living loops; the write probe runs at most every 2 s."""
        now = time.monotonic()
        if self._health_cache and now - self._health_cache[0] < HEALTH_PROBE_S:
            return self._health_cache[1]
        verdict = await self._check_health()
        self._health_cache = (time.monotonic(), verdict)
        return verdict

    async def _check_health(self) -> Health:
        if self._stopped.is_set():
            return Health(False, "the agent is stopping")
        try:
            await asyncio.wait_for(self.outbox.call(lambda s: s.probe_write()), timeout=5.0)
        except TimeoutError:
            return Health(False, "the outbox did not answer within 5 s")
        except Exception as exc:
            return Health(False, f"the outbox cannot be written: {exc}")
        dead = [name for name, loop in self.loops.items() if loop._task is not None and loop._task.done()]
        if dead:
            return Health(False, f"delivery stopped for {', '.join(dead)}")
        stopped = self._stopped_sources()
        if stopped:
            return Health(False, "; ".join(problem["text_en"] for problem in stopped))
        return Health(True, "ok")

    def _stopped_sources(self) -> list[Problem]:
        """Sources that should be taking records in and are not: a spool task or an MQTT ingest that ended.

        Each is answered 503 by ``/healthz`` and shown at the top of the page, so
        a till whose files pile up in ``incoming/`` is seen the same hour, not
        at the month's close. Nothing is named while the agent is stopping.
        """
        if self._stopped.is_set():
            return []
        found: list[Problem] = []
        if self.spool is not None and not self.spool.running:
            found.append(
                self._source_problem(
                    "spool_stopped",
                    f"Spoolkatalogen läses inte: filer i {self.spool.incoming} tas inte emot",
                    f"The spool directory is not being read: files in {self.spool.incoming} are not taken in",
                )
            )
        for source in self.mqtt_sources:
            if not source.running:
                name = source.config.name
                found.append(
                    self._source_problem(
                        f"mqtt_ingest_stopped:{name}",
                        f"MQTT-mottagningen ({name}) har stannat: poster från brokern tas inte emot",
                        f"MQTT ingest ({name}) has stopped: records from the broker are not taken in",
                    )
                )
        return found

    def _source_problem(self, code: str, text: str, text_en: str) -> Problem:
        since = self._stopped_since.setdefault(code, iso_now())
        if code not in self._logged_stopped:
            self._logged_stopped.add(code)
            log.error("%s", text_en)
        return Problem(code=code, text=text, text_en=text_en, since=since)

    async def _watchdog_probe(self) -> bool:
        ok, reason = await self.health()
        if not ok:
            log.error("watchdog withheld: %s", reason)
        return ok

    # ------------------------------------------------------------ background
    async def _status_line(self) -> str:
        try:
            body = await self.status()
        except OutboxError:
            return "outbox unavailable"
        return systemd.format_status(body["destinations"])

    def _on_state_change(self) -> None:
        self._status_cache = None
        self._state_changed.set()

    async def _sampler(self) -> None:
        """Chart history, metrics gauges and systemd's STATUS= line.

        Every 30 s, and at once when a destination goes offline or comes back,
        so ``systemctl status kassabro`` tells the truth within a second.
        """
        last_line = ""
        while True:
            self._state_changed.clear()
            try:
                line = await self._status_line()
                if line != last_line:
                    systemd.status(line)
                    last_line = line
            except Exception:
                log.exception("status sampling failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), SAMPLE_INTERVAL_S)
            await asyncio.sleep(0.2)  # let a burst of changes settle into one line

    async def _pruner(self) -> None:
        retention_s = self.config.outbox.retention_days * 86400
        while True:
            await asyncio.sleep(self.config.outbox.prune_interval_s)
            try:
                await self.outbox.call(lambda s: s.prune(retention_s))
            except Exception:
                log.exception("pruning the outbox failed")


def settle_the_heap() -> None:
    """Take everything made while starting out of the cyclic collector's sight (``gc.freeze``).

    The modules, models, routes and adapters live as long as the process, yet
    every full collection walked them all: under load here each one held the
    event loop and the outbox thread (the GIL) for 20-40 ms, a Pi's core
    several times that, and a till's sale waited for it. Frozen, a full
    collection walks only what came after (about 1 ms here). The garbage of
    the start is collected first, so none of it is kept. For the agent's own
    process only (``kassabro run``, ``kassabro demo``), not for an ``Agent``
    made inside another program such as the tests.
    """
    gc.collect()
    gc.freeze()


async def run_agent(config: Config, *, on_ready: Callable[[Agent], Awaitable[None]] | None = None) -> None:
    """Start an agent, serve until a signal, stop cleanly."""
    agent = Agent(config)
    agent.handle_signals()
    await agent.start()
    settle_the_heap()
    if on_ready is not None:
        await on_ready(agent)
    await agent.run_until_stopped()
