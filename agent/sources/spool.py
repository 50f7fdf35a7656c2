"""The spool directory (contract §2): records handed over as files.

A writer puts ``*.json`` into ``incoming/`` by writing another name and
renaming, so a file with a ``.json`` name is complete. The agent takes files
in name order, commits each file's records in one transaction, and only then
moves the file to ``done/``. A crash between the commit and the move leaves
the file in ``incoming/``; reading it again finds duplicates, not new records.
A file that cannot be accepted goes to ``rejected/`` with ``NAME.error.txt``
saying why. While the outbox is full or unavailable, files stay where they
are and are tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path

from agent.ingest import Ingestor
from agent.sources.inotify import DirectoryWatch

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 1024 * 1024
RESCAN_S = 30.0
"""A safety rescan (a missed event, a file left by a failed attempt); not a polling loop."""
RETRY_S = 5.0
"""How long a file waits after the outbox refused it for lack of space, before it is tried again."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolSource:
    """Watches ``spool_dir/incoming`` and feeds each file to the ingestor.

    ``retry_s`` is ``RETRY_S`` unless a test wants the retry without the wait.
    """

    def __init__(self, spool_dir: Path, ingestor: Ingestor, *, retry_s: float = RETRY_S):
        self.root = Path(spool_dir)
        self.incoming = self.root / "incoming"
        self.done = self.root / "done"
        self.rejected = self.root / "rejected"
        self.ingestor = ingestor
        self.retry_s = retry_s
        self._event = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watch: DirectoryWatch | None = None
        self.accepted_files = 0
        self.rejected_files = 0

    def prepare(self) -> None:
        for folder in (self.incoming, self.done, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.prepare()
        self._watch = DirectoryWatch(self.incoming, self._event)
        if not self._watch.start():
            log.info("spool: inotify not available; scanning %s every %.0f s", self.incoming, RESCAN_S)
        self._task = asyncio.create_task(self.run(), name="spool")

    async def stop(self) -> None:
        self._stop.set()
        self._event.set()
        if self._task is not None:
            await self._task
        if self._watch is not None:
            self._watch.close()

    async def run(self) -> None:
        while not self._stop.is_set():
            self._event.clear()
            blocked = await self.scan_once()
            if self._stop.is_set():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), self.retry_s if blocked else RESCAN_S)

    async def scan_once(self) -> bool:
        """Take every ready file in name order; True when one had to wait (outbox full)."""
        names = sorted(p.name for p in self.incoming.iterdir() if p.name.endswith(".json") and p.is_file())
        for name in names:
            if self._stop.is_set():
                return False
            if not await self.take(self.incoming / name):
                return True
        return False

    async def take(self, path: Path) -> bool:
        """Ingest one file. False when it must wait (storage full, shutting down)."""
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                self._reject(path, f"the file is {size} bytes; the most a spool file may hold is {MAX_FILE_BYTES}")
                return True
            body = path.read_bytes()
        except FileNotFoundError:
            return True
        answer = await self.ingestor.batch(body)
        if answer.status in (200, 201):
            self._move(path, self.done / path.name)
            self.accepted_files += 1
            log.info("spool: %s accepted (%d records)", path.name, len(answer.body.get("records", [])))
            return True
        if answer.status in (409, 422):
            self._reject(path, json.dumps(answer.body, ensure_ascii=False, indent=2))
            return True
        log.warning("spool: %s must wait: %s", path.name, answer.body.get("message", answer.body))
        return False

    def _reject(self, path: Path, why: str) -> None:
        note = self.rejected / f"{path.name}.error.txt"
        note.write_text(f"{path.name} was not accepted; nothing in it was stored.\n\n{why}\n", encoding="utf-8")
        self._move(path, self.rejected / path.name)
        self.rejected_files += 1
        log.warning("spool: %s rejected: %s", path.name, why.splitlines()[0] if why else "")

    def _move(self, source: Path, target: Path) -> None:
        if target.exists():
            stem = target.name
            n = 1
            while target.exists():
                target = target.with_name(f"{stem}.{n}")
                n += 1
        os.replace(source, target)
        _fsync_dir(target.parent)
        _fsync_dir(source.parent)
