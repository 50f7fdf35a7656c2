"""``kassabro-fleet consume``: one worker of the durable JetStream consumer, writing into PostgreSQL.

Each round fetches up to ``batch`` messages, stores them in one transaction
(``fleet.store.write_batch``) and acknowledges each only after the commit. A
worker that dies between the commit and its acks costs a redelivery after
``ack_wait``, which the record tables' primary keys turn into nothing. Run as
many workers as the database keeps up with, on as many machines as you like:
they share the durable consumer, so JetStream hands each message to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import nats
import psycopg
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from agent.backoff import RetryPolicy
from fleet.messages import Message, parse
from fleet.schema import migrate
from fleet.store import BatchOutcome, write_batch
from fleet.stream import StreamSettings, ensure_consumer, ensure_stream

__all__ = ["ConsumerStats", "Worker", "WorkerSettings", "connect_nats"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSettings:
    """Where to read from and write to, and how much at a time."""

    nats_urls: list[str]
    dsn: str
    user: str | None = None
    password: str | None = None
    stream: StreamSettings = field(default_factory=StreamSettings)
    batch: int = 500
    fetch_timeout_s: float = 1.0
    report_every_s: float = 10.0


@dataclass
class ConsumerStats:
    """Counted since the worker started."""

    batches: int = 0
    inserted: int = 0
    duplicates: int = 0
    statuses: int = 0
    unreadable: int = 0
    redelivered: int = 0

    def add(self, outcome: BatchOutcome, redelivered: int) -> None:
        self.batches += 1
        self.inserted += outcome.inserted
        self.duplicates += outcome.duplicates
        self.statuses += outcome.statuses
        self.unreadable += outcome.unreadable
        self.redelivered += redelivered

    def line(self) -> str:
        return (
            f"batches={self.batches} inserted={self.inserted} duplicates={self.duplicates} "
            f"statuses={self.statuses} unreadable={self.unreadable} redelivered={self.redelivered}"
        )


async def connect_nats(urls: list[str], user: str | None, password: str | None, name: str) -> NatsClient:
    """A NATS connection that fails over between ``urls`` and reconnects forever."""
    return await nats.connect(
        servers=urls,
        user=user,
        password=password,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=3,
        allow_reconnect=True,
    )


def _parse(msg: Msg, prefix: str) -> Message:
    metadata = msg.metadata
    return parse(
        msg.subject,
        msg.data,
        prefix=prefix,
        stream_seq=int(metadata.sequence.stream),
        stream_time=metadata.timestamp,
    )


class Worker:
    """One consumer worker: fetch, store in one transaction, acknowledge; until stopped."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.stats = ConsumerStats()
        self._stop = asyncio.Event()
        self._policy = RetryPolicy(0.5, 10.0)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        settings = self.settings
        nc = await connect_nats(settings.nats_urls, settings.user, settings.password, "kassabro-fleet consume")
        try:
            js = nc.jetstream(timeout=10)
            await self._retry("set up the stream", lambda: ensure_stream(js, settings.stream))
            await self._retry("set up the consumer", lambda: ensure_consumer(js, settings.stream))
            conn = await self._retry("connect to PostgreSQL", self._connect_db)
            try:
                await self._loop(js, conn)
            finally:
                await conn.close()
        finally:
            # close, not drain: draining waits out the pending fetch (up to 30 s), and what
            # was fetched but not acknowledged comes again to another worker anyway.
            with contextlib.suppress(Exception):
                await nc.close()
            log.info("worker stopped: %s", self.stats.line())

    async def _connect_db(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self.settings.dsn, autocommit=True)
        applied = await migrate(conn)
        if applied:
            log.info("migrations applied: %s", applied)
        return conn

    async def _retry(self, what: str, action: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await action()
            except Exception as exc:
                if self._stop.is_set():
                    raise
                attempt += 1
                delay = self._policy.delay(attempt)
                log.warning("could not %s (%s: %s); again in %.1fs", what, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _loop(self, js: Any, conn: psycopg.AsyncConnection[Any]) -> None:
        settings = self.settings
        prefix = settings.stream.subject_prefix
        subscription = await self._retry(
            "bind to the consumer", lambda: js.pull_subscribe_bind(settings.stream.durable, settings.stream.stream)
        )
        reported = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            if time.monotonic() - reported >= settings.report_every_s:
                log.info("progress: %s", self.stats.line())
                reported = time.monotonic()
            try:
                msgs: list[Msg] = await subscription.fetch(settings.batch, timeout=settings.fetch_timeout_s)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except Exception as exc:  # a node gone, a leader election: fetch again after a pause
                failures += 1
                delay = self._policy.delay(failures)
                log.warning("fetch failed (%s: %s); again in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            conn = await self._store_and_ack(conn, msgs, prefix)

    async def _store_and_ack(
        self, conn: psycopg.AsyncConnection[Any], msgs: list[Msg], prefix: str
    ) -> psycopg.AsyncConnection[Any]:
        """Commit the batch (retrying on a lost or deadlocked connection), then ack every message."""
        messages = [_parse(msg, prefix) for msg in msgs]
        attempt = 0
        while True:
            try:
                outcome = await write_batch(conn, messages)
                break
            except psycopg.Error as exc:
                attempt += 1
                delay = self._policy.delay(attempt)
                log.warning("batch of %d not stored (%s); again in %.1fs", len(msgs), exc, delay)
                await asyncio.sleep(delay)
                if conn.closed or conn.broken:
                    with contextlib.suppress(psycopg.Error):
                        conn = await self._connect_db()
                for msg in msgs:  # keep JetStream from handing them to another worker meanwhile
                    with contextlib.suppress(Exception):
                        await msg.in_progress()
        redelivered = sum(1 for msg in msgs if msg.metadata.num_delivered > 1)
        for msg in msgs:
            try:
                await msg.ack()
            except Exception as exc:  # redelivered later; the primary key makes that harmless
                log.info("ack lost (%s); the message will come again", exc)
        self.stats.add(outcome, redelivered)
        return conn


def run_worker(settings: WorkerSettings) -> int:
    """Run one worker until SIGINT or SIGTERM; exit code 0."""

    async def main() -> None:
        worker = Worker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(main())
    return 0
