"""The asyncio face of the outbox: one owner thread and group commit.

SQLite allows one writer at a time and an fsync on an SD card costs
milliseconds, so the agent funnels every outbox operation through one thread
that owns the connection. While that thread is committing, new ``enqueue``
calls pile up in its queue; it takes them all at once and commits them in one
transaction (group commit), so the fsync is paid once per group, not once per
record. Each caller is answered only after the commit that holds its records.

Nothing here polls: the thread blocks on its queue, and delivery loops wait on
an ``asyncio.Event`` that is set after each commit that stored something new.

The file is opened without a whole-file check, so the ports open in a second
even with a million records on a slow card; ``PRAGMA quick_check`` then runs
in the background, every start. A file that fails it (or that cannot be
opened at all) is swapped for a fresh outbox on the owner thread, between two
commits, and moved aside; then every record that can still be read from it is
carried into the fresh one (``agent.outbox.salvage``) while ingest and
delivery go on. The problem, and what was salvaged, shows on the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agent.outbox import integrity, salvage
from agent.outbox.batches import Accept, Rejected
from agent.outbox.errors import Conflict, OutboxError, OutboxUnavailable, storage_error
from agent.outbox.stats import DestinationStats, OutboxStats, RecordView
from agent.outbox.store import DEFAULT_MAX_BYTES, OutboxStore
from agent.outbox.types import Batch, DeadLetter, EnqueueResult
from agent.records import Record

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_GROUP = 512
"""Most enqueue requests in one transaction: bounds the time a commit holds the lock."""
OUTCOME_GATHER_S = 0.01
"""How long a pass of delivery outcomes alone waits for the other destinations' (``_gather_outcomes``)."""


class _Job:
    __slots__ = ("future", "kind", "loop", "payload")

    def __init__(
        self, kind: str, payload: Any, future: asyncio.Future[Any] | None, loop: asyncio.AbstractEventLoop | None
    ):
        self.kind = kind
        self.payload = payload
        self.future = future
        self.loop = loop


class _GroupLost(Exception):
    """A job left its group's transaction unusable: the whole group is rolled back."""

    def __init__(self, cause: BaseException | None):
        super().__init__(str(cause))
        self.cause = cause


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _resolve_all(pairs: list[tuple[asyncio.Future[Any], Any]], notify: Callable[[], None] | None) -> None:
    for future, answer in pairs:
        if isinstance(answer, BaseException):
            _resolve(future, None, answer)
        else:
            _resolve(future, answer, None)
    if notify is not None:
        notify()


CHECKPOINT_PAGES = 1000
"""Pages of WAL a checkpoint should find: SQLite's own automatic checkpoint's threshold."""
CHECKPOINT_EVERY_PASSES = 100
"""Owner-thread passes (each one commit, or a few) before the first checkpoint; then adapted."""
CHECKPOINT_MIN_PASSES = 10
CHECKPOINT_MAX_PASSES = 2000
"""Bounds of the adapted passes: a big group is many pages, a lone outcome two or three."""


def _without_autocheckpoint(store: OutboxStore) -> OutboxStore:
    """The owner's store with SQLite's automatic checkpoint off: ``Outbox._checkpoint`` does it between passes."""
    store.conn.execute("PRAGMA wal_autocheckpoint = 0")
    return store


class Outbox:
    """Async access to an ``OutboxStore`` owned by one thread.

    Args:
        path: the SQLite file.
        store_id: the store this agent serves (goes into every envelope).
        max_bytes: the size limit; past it ``enqueue`` raises ``StorageFull``.
    """

    def __init__(self, path: Path | str, *, store_id: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.store_id = store_id
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._handing: list[_Job] = []
        """Jobs submitted during this turn of the loop, not yet on ``_queue`` (see ``_submit``)."""
        self._thread: threading.Thread | None = None
        self._store: OutboxStore | None = None
        self._events: list[asyncio.Event] = []
        self.paused: dict[str, bool] = {}
        """Per destination, whether its last plain claim found it paused (written on the owner thread)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.commits = 0
        self.last_commit_monotonic = 0.0
        self._reader: OutboxStore | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._deferred_check: asyncio.Task[None] | None = None
        self._generation = 0
        """Bumped when a damaged file is swapped for a fresh one: the reader reopens."""
        self._reader_generation = 0
        self._damaged: tuple[str, str] | None = None
        """(why, where it was moved) of a file that could not even be opened: salvaged after start."""
        self.last_salvage: salvage.SalvageReport | None = None
        self._checking = False
        self._stopping = False
        self._passes = 0
        """Passes of the owner thread since the last checkpoint (``_checkpoint``)."""
        self._checkpoint_every = CHECKPOINT_EVERY_PASSES
        self.checkpoints = 0
        """Checkpoints done between passes (``_checkpoint``)."""

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the store on the owner thread (integrity check, migrations)."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[OutboxStore] = self._loop.create_future()

        def owner() -> None:
            try:
                store = self._open()
            except BaseException as exc:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_resolve, opened, None, exc)
                return
            self._store = _without_autocheckpoint(store)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, opened, store, None)
            self._serve()

        self._thread = threading.Thread(target=owner, name="kassabro-outbox", daemon=True)
        self._thread.start()
        try:
            store = await opened
        except BaseException:
            # The owner thread has ended; without this the outbox would look open
            # and every later enqueue would wait forever on a queue nobody serves.
            self._thread = None
            raise
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kassabro-outbox-read")
        if store.check_deferred or self._damaged is not None:
            self._deferred_check = asyncio.create_task(self._check_in_background(), name="outbox-check")

    def _open(self) -> OutboxStore:
        """The store, opened without a whole-file check; a file SQLite cannot open at all is moved aside."""
        try:
            return OutboxStore.open(self.path, store_id=self.store_id, max_bytes=self.max_bytes, defer_check=True)
        except sqlite3.DatabaseError as exc:
            if not integrity.unreadable(exc):
                raise  # busy, read-only, ...: not the file's fault, never move it
            moved = integrity.quarantine(self.path)
            log.error("outbox %s cannot be opened (%s); moved aside to %s, starting a fresh one", self.path, exc, moved)
            store = OutboxStore.open(self.path, store_id=self.store_id, max_bytes=self.max_bytes, check=False)
            message = integrity.damaged_file_moved(str(exc), moved)
            store.add_event("error", message)
            store.problems = store.upkeep.recent_problems()
            self._damaged = (str(exc), moved)
            return store

    async def _check_in_background(self) -> None:
        """``quick_check`` after the ports are open (every start); a damaged file is swapped and salvaged.

        Salvage takes as long as reading the file does; meanwhile the fresh
        outbox takes sales and delivers them (and the salvaged records as they
        arrive).
        """
        if self._damaged is not None:
            await self._salvage(self._damaged[1])
            return
        self._checking = True
        try:
            problem = await self.read(lambda s: s.quick_check())
        except Exception as exc:
            problem = str(exc)
        finally:
            self._checking = False
        if self._stopping:
            log.info("outbox integrity check cut short by the stop; the next start checks again")
            return
        if not problem:
            log.info("outbox integrity check: ok")
            return
        log.error("outbox %s failed its integrity check: %s", self.path, problem)
        try:
            moved = await self.call(lambda s: self._swap_damaged(s, problem))
        except Exception as exc:
            message = integrity.deferred_check_failed(problem)
            log.error("%s (could not swap it for a fresh one: %s)", message, exc)
            if self._store is not None:
                self._store.problems.append(message)
                self._store.suspect = True  # no clean-close note: the next start checks fully
            return
        await self._salvage(moved)

    def _swap_damaged(self, damaged: OutboxStore, problem: str) -> str:
        """On the owner thread, between two commits: close the damaged file, move it aside, open a fresh one.

        The destinations (and which are paused) are read from the damaged file
        first; the fresh outbox starts every one of them at its beginning.
        """
        specs: list[tuple[str, str, list[str]]] = []
        paused: list[str] = []
        with contextlib.suppress(sqlite3.Error):
            for name, kind, types, is_paused in damaged.conn.execute(
                "SELECT name, kind, types, paused FROM destinations WHERE active = 1"
            ):
                specs.append((name, kind, json.loads(types)))
                if is_paused:
                    paused.append(name)
        earlier = list(damaged.problems)
        damaged.suspect = True
        with contextlib.suppress(sqlite3.Error):
            damaged.close()
        moved = integrity.quarantine(self.path)
        fresh = OutboxStore.open(self.path, store_id=self.store_id, max_bytes=self.max_bytes, check=False)
        if specs:
            fresh.register_destinations(specs)
        for name in paused:
            fresh.set_paused(name, True)
        message = integrity.damaged_file_moved(problem, moved)
        fresh.add_event("error", message)
        fresh.problems = [*earlier, message]
        self._store = _without_autocheckpoint(fresh)
        self._generation += 1
        log.error(message)
        return moved

    async def _salvage(self, moved: str) -> None:
        """Carry every trustworthy record of the file at ``moved`` into the live outbox, chunk by chunk."""
        report = salvage.SalvageReport(source=moved)
        chunks = salvage.salvage_rows(Path(moved), report)
        loop = asyncio.get_running_loop()
        while True:
            chunk = await loop.run_in_executor(None, next, chunks, None)
            if chunk is None:
                break
            requests = [[record] for record, _ in chunk]
            origins = [[origin] for _, origin in chunk]

            def carry(store: OutboxStore) -> list[list[EnqueueResult] | OutboxError]:
                # Each record its own request: a conflict refuses only itself.
                return store.enqueue_many(requests, origins)  # noqa: B023  # awaited before the next chunk

            try:
                answers = await self.call(carry)
            except OutboxError as exc:
                report.error = str(exc)
                break
            for answer in answers:
                if isinstance(answer, Conflict):
                    report.conflicts += 1
                elif isinstance(answer, OutboxError):
                    report.error = str(answer)
                elif answer[0].duplicate:
                    report.present += 1
                else:
                    report.carried += 1
            self._notify()  # the delivery loops send what was salvaged
            if report.error is not None:
                break
        summary = report.summary()
        log.error("outbox salvage: %s", summary)
        self.last_salvage = report
        with contextlib.suppress(OutboxError, sqlite3.Error):
            await self.call(lambda s: s.add_event("error", summary))
        if self._store is not None:
            self._store.problems.append(summary)

    async def close(self) -> None:
        """Finish every queued operation, then close the database cleanly."""
        if self._thread is None:
            return
        if self._deferred_check is not None and not self._deferred_check.done():
            self._stopping = True
            if self._checking and self._reader is not None:
                # A stop must not wait for a whole-file check (tens of seconds on a card);
                # the next start checks again. A salvage under way is finished, not cut.
                self._reader.conn.interrupt()
            await self._deferred_check
        self._closing = True
        self._hand_over()  # jobs of this loop turn go before the stop, as they were submitted
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None
        if self._read_pool is not None:
            pool, self._read_pool = self._read_pool, None
            if self._reader is not None:
                pool.submit(self._reader.conn.close)
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
            self._reader = None

    @property
    def store(self) -> OutboxStore:
        """The underlying store; only for the owner thread (used through ``call``)."""
        if self._store is None:
            raise OutboxUnavailable("the outbox is not open")
        return self._store

    @property
    def problems(self) -> list[str]:
        return list(self._store.problems) if self._store else []

    def subscribe(self) -> asyncio.Event:
        """An event set after every commit that stored new records."""
        event = asyncio.Event()
        self._events.append(event)
        return event

    def _notify(self) -> None:
        for event in self._events:
            event.set()

    # ------------------------------------------------------------ owner thread
    def _serve(self) -> None:
        pending: list[_Job] = []
        stop = False
        while not stop:
            if not pending:
                job = self._queue.get()
                if job is None:
                    break
                pending.append(job)
            while len(pending) < MAX_GROUP:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                pending.append(job)
            if not stop and all(j.kind == "outcome" for j in pending):
                stop = self._gather_outcomes(pending)
            enqueues = [j for j in pending if j.kind == "enqueue"]
            others = [j for j in pending if j.kind != "enqueue"]
            pending = []
            # self.store each time: a call may have swapped a damaged file for a fresh one.
            if enqueues:
                self._group_commit(self.store, enqueues)
            # Delivery bookkeeping taken in this pass goes in one transaction per
            # run of consecutive delivery jobs; any other call runs alone, in order.
            run: list[_Job] = []
            for job in others:
                if job.kind in ("delivery", "outcome"):
                    run.append(job)
                    continue
                self._run_calls(run)
                run = []
                self._run_call(self.store, job)
            self._run_calls(run)
            self._passes += 1
            if self._passes >= self._checkpoint_every:
                self._checkpoint(self.store)
        # Drain what arrived before the stop, then close.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._fail(job, OutboxUnavailable("the agent is shutting down"))
        self.store.close()
        log.info("outbox closed cleanly")

    def _group_commit(self, store: OutboxStore, jobs: list[_Job]) -> None:
        try:
            answers: list[Any] = list(store.enqueue_many([j.payload for j in jobs]))
        except BaseException as exc:
            log.exception("outbox: enqueue failed")
            answers = [OutboxUnavailable(str(exc)) for _ in jobs]
        else:
            self.commits += 1
            self.last_commit_monotonic = time.monotonic()
        stored_new = any(
            not isinstance(answer, Exception) and any(not r.duplicate for r in answer) for answer in answers
        )
        # One hop to the event loop per group, not one per caller: with 64
        # producers the thread-safe wake-ups were a visible share of a commit.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for job, answer in zip(jobs, answers, strict=True):
            if job.future is not None and job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, answer))
        for loop, pairs in by_loop.items():
            notify = self._notify if stored_new and loop is self._loop else None
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve_all, pairs, notify)

    def _gather_outcomes(self, pending: list[_Job]) -> bool:
        """Wait up to ``OUTCOME_GATHER_S`` for more jobs to join a pass of delivery outcomes only; True on stop.

        The destinations a sale went to answer a few milliseconds apart, and
        each outcome alone is a commit of its own (two pages on the card).
        Outcomes are written relaxed and the delivery loop is already sending
        the next batch meanwhile, so waiting a little costs nobody; anything
        else that arrives (a till's sale, a claim) ends the wait at once.
        """
        deadline = time.monotonic() + OUTCOME_GATHER_S
        while len(pending) < MAX_GROUP:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if job is None:
                return True
            pending.append(job)
            if job.kind != "outcome":
                return False
        return False

    def _run_calls(self, jobs: list[_Job]) -> None:
        """Delivery jobs (claims, completions, failures, splits) in one transaction, each in its own savepoint.

        Three destinations woken by the same sale claim, and later complete,
        within a millisecond of each other, touching the same batch and cursor
        pages: one commit writes those pages and pays the flush once instead of
        once per job (the SD card's wear, ``Database.group``). A job that fails
        is rolled back alone and answered with its error; the others commit.
        Nobody is answered before the COMMIT; if it fails, every job of the
        group fails as a lone call would (``OutboxError``), and their work is
        undone, so a batch id never reaches the wire without being on the card.
        """
        if len(jobs) <= 1:
            for job in jobs:
                self._run_call(self.store, job)
            return
        store = self.store
        db = store.db
        answers: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            with db.group(durable=any(job.kind == "delivery" for job in jobs)) as unit:
                for job in jobs:
                    try:
                        with unit():
                            answers.append((job, job.payload(store), None))
                    except sqlite3.Error as exc:
                        answers.append((job, None, storage_error(exc)))
                    except Exception as exc:
                        answers.append((job, None, exc))
                    if db.broken or not store.conn.in_transaction:
                        raise _GroupLost(answers[-1][2])
        except BaseException as exc:
            lost = exc.cause if isinstance(exc, _GroupLost) else exc
            error = storage_error(lost) if isinstance(lost, sqlite3.Error) else lost
            if not isinstance(error, OutboxError):
                error = OutboxError(f"the outbox could not write this down: {error}")
            for job in jobs:
                self._fail(job, error)
            if not isinstance(exc, Exception):
                raise
            return
        for job, value, failure in answers:
            if failure is None:
                self._succeed(job, value)
            else:
                self._fail(job, failure)

    def _run_call(self, store: OutboxStore, job: _Job) -> None:
        try:
            value = job.payload(store)
        except sqlite3.Error as exc:
            # Callers handle OutboxError (a delivery loop backs off and tries again);
            # a raw sqlite3 error (a full disk at COMMIT) would end their task for good.
            self._fail(job, storage_error(exc))
            return
        except BaseException as exc:
            self._fail(job, exc)
            return
        self._succeed(job, value)

    def _succeed(self, job: _Job, value: Any) -> None:
        if job.future is not None and job.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                job.loop.call_soon_threadsafe(_resolve, job.future, value, None)

    def _fail(self, job: _Job, error: BaseException) -> None:
        if job.future is not None and job.loop is not None:
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    # --------------------------------------------------------------- the API
    def _submit(self, kind: str, payload: Any) -> asyncio.Future[Any]:
        """Queue a job for the owner thread; from the outbox's own loop, handed over once per loop turn.

        Waking the owner thread is a system call, and on a VM or a Pi a wake-up
        across cores costs tens of microseconds: the jobs submitted during one
        turn of the event loop (the tills whose requests arrived in the same
        poll) are handed over together after it, so they wake the thread once
        and share one commit, in the order they were submitted.
        """
        if self._thread is None or self._closing:
            raise OutboxUnavailable("the outbox is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        job = _Job(kind, payload, future, loop)
        if loop is not self._loop:
            self._queue.put(job)
            return future
        if not self._handing:
            loop.call_soon(self._hand_over)
        self._handing.append(job)
        return future

    def _hand_over(self) -> None:
        jobs, self._handing = self._handing, []
        for job in jobs:
            self._queue.put(job)

    async def enqueue(self, records: Sequence[Record]) -> list[EnqueueResult]:
        """Store ``records`` all or nothing; answered after the commit that holds them."""
        results: list[EnqueueResult] = await self._submit("enqueue", list(records))
        return results

    async def call(self, fn: Callable[[OutboxStore], T]) -> T:
        """Run ``fn(store)`` on the owner thread and return its result."""
        result: T = await self._submit("call", fn)
        return result

    async def read(self, fn: Callable[[OutboxStore], T]) -> T:
        """Run a read-only ``fn(store)`` on a second connection in its own thread.

        WAL lets readers and the writer work at once, so the status page counting
        a million pending records never holds up a till's commit.
        """
        if self._read_pool is None:
            raise OutboxUnavailable("the outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._on_reader, fn)

    def _on_reader(self, fn: Callable[[OutboxStore], T]) -> T:
        """``fn`` of the reading connection, (re)opened on the current file; on the read thread."""
        if self._reader is not None and self._reader_generation != self._generation:
            with contextlib.suppress(sqlite3.Error):
                self._reader.conn.close()  # still on the damaged file, moved aside
            self._reader = None
        if self._reader is None:
            self._reader_generation = self._generation
            self._reader = OutboxStore.open_reader(self.path, store_id=self.store_id, max_bytes=self.max_bytes)
        self._reader.problems = self.store.problems  # the same list: later problems show too
        return fn(self._reader)

    def _checkpoint(self, store: OutboxStore) -> None:
        """Fold the WAL into the file between passes of the owner thread, after their callers are answered.

        SQLite's own automatic checkpoint runs inside the commit that crosses
        1,000 pages of WAL: two flushes and the pages' copy, on an SD card tens
        of milliseconds that the tills of that commit waited for on top of
        their own flush, several times a second under load. The owner
        connection has it turned off (``_without_autocheckpoint``); instead,
        every so many passes, the checkpoint runs here, when that pass's
        callers have already been handed their answers. (On a thread of its
        own it would race the writer under load and never catch up, so the
        WAL would never restart.) The number of passes adapts so that a
        checkpoint finds about ``CHECKPOINT_PAGES`` pages, whether a pass is
        one sale or a group of sixty. A clean close still folds everything in
        (``checkpoint_and_close``).
        """
        self._passes = 0
        try:
            _, pages, _ = store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the next one tries again; the WAL is durable meanwhile
            log.warning("outbox: checkpoint failed: %s", exc)
            return
        self.checkpoints += 1
        if pages > 0:
            every = self._checkpoint_every * CHECKPOINT_PAGES // pages
            self._checkpoint_every = max(CHECKPOINT_MIN_PASSES, min(CHECKPOINT_MAX_PASSES, every))

    async def _delivery(self, fn: Callable[[OutboxStore], T], *, outcome: bool = False) -> T:
        """Like ``call``, for delivery bookkeeping: may share a transaction with others (``_run_calls``).

        ``outcome``: ``fn`` only writes a relaxed outcome (``Database.relaxed``),
        so a group of nothing else commits without waiting for the card.
        """
        result: T = await self._submit("outcome" if outcome else "delivery", fn)
        return result

    async def claim_batch(
        self, name: str, limit: int, accept: Accept | None = None, *, after: str | None = None
    ) -> Batch | None:
        """The next batch for ``name`` (``OutboxStore.claim_batch``); ``paused`` says afterwards why None came.

        A plain claim that finds nothing also looks whether ``name`` is paused
        (one primary-key read, on the same job), so its delivery loop can wait
        for the resume instead of claiming again after every till's commit.
        """

        def claim(store: OutboxStore) -> Batch | None:
            batch = store.claim_batch(name, limit, accept, after=after)
            if after is None:
                self.paused[name] = batch is None and store.is_paused(name)
            return batch

        return await self._delivery(claim)

    async def complete_batch(self, name: str, batch_id: str, rejected: Rejected | None = None) -> None:
        await self._delivery(lambda s: s.complete_batch(name, batch_id, rejected), outcome=True)

    async def split_batch(self, name: str, batch_id: str) -> list[str]:
        return await self._delivery(lambda s: s.split_batch(name, batch_id), outcome=True)

    async def record_failure(self, name: str, batch_id: str | None, error: str, next_attempt_at: str | None) -> None:
        await self._delivery(lambda s: s.record_failure(name, batch_id, error, next_attempt_at), outcome=True)

    async def retry_dead_letters(self, name: str | None = None, ids: Sequence[str] | None = None) -> int:
        count = await self.call(lambda s: s.retry_dead_letters(name, ids))
        if count:
            self._notify()
        return count

    async def list_dead_letters(self, name: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self.read(lambda s: s.list_dead_letters(name, limit))

    async def set_paused(self, name: str, paused: bool) -> None:
        await self.call(lambda s: s.set_paused(name, paused))
        if not paused:
            self._notify()

    async def destination_stats(self) -> list[DestinationStats]:
        return await self.read(lambda s: s.destination_stats())

    async def outbox_stats(self) -> OutboxStats:
        return await self.read(lambda s: s.outbox_stats())

    async def get_record(self, key: str) -> RecordView | None:
        return await self.read(lambda s: s.get_record(key))
