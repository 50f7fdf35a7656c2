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
import errno
import json
import logging
import os
import stat
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


class _NotAFile(Exception):
    """A ``*.json`` entry in ``incoming/`` that is not a regular file (a symlink, a FIFO, a directory)."""


def _shown(name: str) -> str:
    """A file name as text for logs and ``.error.txt``: a non-UTF-8 name shows its bytes escaped."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file, never following a symlink nor blocking on a FIFO.

    A symlink to ``/etc/shadow`` is refused as a symlink, not read with the
    agent's rights; a FIFO named ``*.json`` is refused instead of ignored forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotAFile("the file is a symbolic link; put the file itself in incoming/") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotAFile("this is not a regular file (a FIFO, a directory or a device); put a file in incoming/")
        if info.st_size > MAX_FILE_BYTES:
            raise _NotAFile(f"the file is {info.st_size} bytes; the most a spool file may hold is {MAX_FILE_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read(MAX_FILE_BYTES + 1)
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
        self._logged: set[str] = set()

    def prepare(self) -> None:
        for folder in (self.incoming, self.done, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.prepare()
        self._watch = DirectoryWatch(self.incoming, self._event)
        if not self._watch.start():
            log.info("spool: inotify not available; scanning %s every %.0f s", self.incoming, RESCAN_S)
        self._task = asyncio.create_task(self.run(), name="spool")

    @property
    def running(self) -> bool:
        """True while the spool task lives: the agent's health and problems name a spool that stopped."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stop.set()
        self._event.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a task that died is already reported
                await self._task
        if self._watch is not None:
            self._watch.close()

    async def run(self) -> None:
        while not self._stop.is_set():
            self._event.clear()
            try:
                blocked = await self.scan_once()
            except Exception as exc:  # the spool must outlive any one bad file or directory state
                self._log_once("scan", f"spool: cannot scan {self.incoming}: {exc!r}; trying again")
                blocked = True
            else:
                self._logged.discard("scan")
            if self._stop.is_set():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), self.retry_s if blocked else RESCAN_S)

    async def scan_once(self) -> bool:
        """Take every ready file in name order; True when one had to wait (outbox full)."""
        names = sorted(p.name for p in self.incoming.iterdir() if p.name.endswith(".json"))
        for name in names:
            if self._stop.is_set():
                return False
            try:
                if not await self.take(self.incoming / name):
                    return True
            except Exception as exc:  # one file's trouble never stops the spool (contract §2)
                self._log_once(name, f"spool: {_shown(name)} cannot be taken: {exc!r}; it is left in incoming/")
        return False

    def _log_once(self, what: str, message: str) -> None:
        """Log a problem the first time only: a file stuck on every rescan must not flood the log."""
        if what not in self._logged:
            self._logged.add(what)
            log.error("%s", message)

    async def take(self, path: Path) -> bool:
        """Ingest one file. False when it must wait (storage full, shutting down)."""
        try:
            body = _read_regular(path)
        except FileNotFoundError:
            return True
        except _NotAFile as exc:
            self._reject(path, str(exc))
            return True
        except OSError as exc:
            self._reject(path, f"the file cannot be read: {exc.strerror or exc}")
            return True
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:
            self._reject(path, "the file name is not UTF-8; name spool files in UTF-8")
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
        """Move ``path`` to ``rejected/`` with ``NAME.error.txt`` beside it, readable by the spool group.

        ``.error.txt`` is chmod 0640 explicitly: under the unit's ``UMask=0077``
        it would be 0600 and the till could not read why its file was refused.
        """
        shown = _shown(path.name)
        note = self.rejected / f"{path.name}.error.txt"
        note.write_text(f"{shown} was not accepted; nothing in it was stored.\n\n{why}\n", encoding="utf-8")
        os.chmod(note, 0o640)
        self._move(path, self.rejected / path.name)
        self.rejected_files += 1
        log.warning("spool: %s rejected: %s", shown, why.splitlines()[0] if why else "")

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
