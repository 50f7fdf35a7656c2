"""Whether the outbox file can be trusted, and what happens when it cannot.

The till must keep selling whatever state the card is in. A file that fails
``PRAGMA quick_check`` (or is not a database at all) is moved aside, never
deleted, and a fresh outbox is started; the problem is logged and kept in the
new file's ``events`` so the status page shows it for a week.

A whole-file check of a large outbox costs seconds, so a file left by a clean
close is not checked before it is opened: ``close`` notes the file's size,
mtime and inode beside it (``outbox.db.clean``) when the WAL is empty, and an
unchanged file at the next start is checked in the background instead
(``Outbox`` runs ``quick_check`` on its reader after the ports open). A crash
or a power cut, the usual causes of damage, never leaves the note, and a
failed background check marks the store ``suspect`` so the next close leaves
no note either.

Everything about that policy lives here: ``vet`` (before opening), ``quick_check``
(the verdict), ``deferred_check_failed`` (the background verdict),
``quarantine`` (moving a file aside) and the clean-close note.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent import clock

__all__ = [
    "Vetting",
    "closed_cleanly",
    "damaged_file_moved",
    "deferred_check_failed",
    "forget_clean_close",
    "health_problem",
    "quarantine",
    "quick_check",
    "remember_clean_close",
    "unreadable",
    "vet",
]

log = logging.getLogger("agent.outbox.store")  # the logger operators know these lines under


@dataclass(frozen=True)
class Vetting:
    """What ``vet`` found before the file was opened for writing.

    Attributes:
        moved_to: where a file that failed its check was moved (None: it passed or did not exist).
        check_deferred: the file was not checked (a clean close vouched for it): check it in the background.
    """

    moved_to: str | None = None
    check_deferred: bool = False

    @property
    def event(self) -> str | None:
        """The problem to keep in the new file's ``events`` (shown on the status page), if any."""
        if self.moved_to is None:
            return None
        return f"the outbox failed its integrity check and was moved aside to {self.moved_to}"


def vet(path: Path, *, check: bool = True, defer: bool = False) -> Vetting:
    """Decide, before ``path`` is opened for writing, whether it can be used as it is.

    A cleanly closed, unchanged file is trusted until the background check;
    any other existing file is checked now and moved aside if it fails. Only
    the next clean close may vouch for the file once it is opened, so the note
    is removed either way.

    Args:
        path: the outbox file (need not exist).
        check: False skips every check (tests and tools that know the file).
        defer: never check before opening; every existing file is checked in
            the background instead (the agent: its ports open first, since a
            whole-file check of a large outbox on an SD card takes tens of
            seconds, and a file that fails is salvaged while sales go on).
    """
    verified_clean = closed_cleanly(path)
    forget_clean_close(path)
    moved: str | None = None
    if defer:
        return Vetting(check_deferred=check and path.exists() and path.stat().st_size > 0)
    if check and path.exists() and not verified_clean:
        reason = health_problem(path)
        if reason:
            moved = quarantine(path)
            log.error("outbox %s failed its check (%s); moved aside to %s, starting a fresh one", path, reason, moved)
    return Vetting(moved_to=moved, check_deferred=check and verified_clean)


def quick_check(conn: sqlite3.Connection) -> str | None:
    """Why the database fails ``PRAGMA quick_check`` (its first five complaints), or None when it passes."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    verdict = "; ".join(str(r[0]) for r in rows[:5])
    return None if verdict == "ok" else verdict


def health_problem(path: Path) -> str | None:
    """Why the file at ``path`` cannot be trusted, or None when it passes quick_check."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=10.0)
        try:
            return quick_check(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)


def deferred_check_failed(problem: str) -> str:
    """The problem to show when the background check fails: the file is in use, so only a restart moves it."""
    return f"the outbox failed its integrity check ({problem}); restart the agent to move it aside"


def damaged_file_moved(problem: str, moved_to: str) -> str:
    """The problem to show when the agent moved a damaged file aside while running; salvage follows."""
    return (
        f"the outbox failed its integrity check ({problem}); it was moved aside to {moved_to} "
        "and a fresh outbox started; every readable record is being salvaged into it"
    )


def unreadable(exc: BaseException) -> bool:
    """Whether opening failed because the file is damaged or not a database (not because it is busy)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def quarantine(path: Path) -> str:
    """Move the file (and its WAL and shared memory) aside as ``<name>.corrupt-<UTC time>``; where it went."""
    stamp = clock.utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    return str(target)


# ------------------------------------------------------------ the clean-close note
def _clean_marker(path: Path) -> Path:
    return path.with_name(f"{path.name}.clean")


def _file_identity(path: Path) -> dict[str, int] | None:
    """What changes whenever the database file is written: size, mtime, inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _wal_empty(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return not wal.exists() or wal.stat().st_size == 0


def remember_clean_close(path: Path) -> None:
    """After a clean close with an empty WAL, note the file's identity beside it.

    At the next start an unchanged file skips the full ``quick_check`` before the
    ports open (the check runs in the background instead): a 750 MB outbox costs
    seconds of start-up to check, and power cuts, the usual cause of damage,
    never leave this note behind.
    """
    if not _wal_empty(path):
        return
    identity = _file_identity(path)
    if identity is None:
        return
    marker = _clean_marker(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(identity), encoding="utf-8")
    os.replace(tmp, marker)


def closed_cleanly(path: Path) -> bool:
    """Whether a clean close vouched for the file as it is now (unchanged since, WAL empty)."""
    marker = _clean_marker(path)
    try:
        noted = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return _wal_empty(path) and bool(noted == _file_identity(path))


def forget_clean_close(path: Path) -> None:
    """Once opened for writing, only the next clean close may vouch for the file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_clean_marker(path))
