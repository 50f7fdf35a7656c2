"""What has been booked already, kept beside the files so nothing is booked twice.

The books need to know, whatever order records arrived in and however often
the agent restarted: which records have been read (``scanned_seq``: every
sale and Z-report stored up to that outbox seq has been looked at), which of
those are still waiting (not due yet, a Z-report waiting for its receipts),
which could never be booked (``refused``), which (till, business day) pairs
and Z-reports have had their voucher (a later sale becomes a late voucher),
and which receipt numbers are booked.

A run's file is written ahead: the state saved with the file's text in
``unwritten`` is the commit point; the file is then written and the entry
removed. A crash in between leaves the text in the state, and the next run
writes it first (a file already in place is verified, never doubled).

It lives in ``dir/.kassabro-sie-state.json``, written atomically (temporary
file, fsync, rename, fsync of the directory), and is only read and written
while holding ``dir/.kassabro-sie.lock``, so ``kassabro sie export`` and the
running agent never interleave. A version 1 state (per-batch files, the
release before) is read: its exported days are kept, and the records the
outbox had acknowledged count as booked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.intervals import Intervals

STATE_NAME = ".kassabro-sie-state.json"
LOCK_NAME = ".kassabro-sie.lock"
STATE_VERSION = 2
KEEP_RUNS = 400
"""Runs remembered for the status page's list of files (about a year of daily runs)."""


class StateError(OSError):
    """The state file cannot be read; booking stops rather than risk booking twice."""


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the directory's export lock (shared by the agent and the CLI)."""
    with open(directory / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass
class ExportState:
    """The books' memory (see the module docstring)."""

    path: Path
    scanned_seq: int | None = None
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    days: dict[str, dict[str, str]] = field(default_factory=dict)
    zs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    receipts: dict[str, Intervals] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    unwritten: dict[str, str] = field(default_factory=dict)
    last_run_at: str | None = None

    @classmethod
    def load(cls, path: Path) -> ExportState:
        """Read the state; a missing file is an empty state.

        Raises:
            StateError: the file exists but cannot be read as a state this release knows.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise StateError(
                f"the SIE export state {path} cannot be read ({exc}); "
                "restore it from a backup or see docs/bookkeeping.md"
            ) from None
        if not isinstance(raw, dict) or raw.get("version") not in (1, STATE_VERSION):
            raise StateError(f"the SIE export state {path} is not a state this release wrote")
        if raw["version"] == 1:  # per-batch files: the days are what matter now
            return cls(path, days=dict(raw.get("days", {})))
        try:
            return cls(
                path,
                scanned_seq=raw.get("scanned_seq"),
                waiting=dict(raw.get("waiting", {})),
                refused=dict(raw.get("refused", {})),
                days=dict(raw.get("days", {})),
                zs=dict(raw.get("zs", {})),
                receipts={k: Intervals(tuple(r) for r in v) for k, v in raw.get("receipts", {}).items()},
                runs=list(raw.get("runs", [])),
                unwritten=dict(raw.get("unwritten", {})),
                last_run_at=raw.get("last_run_at"),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"the SIE export state {path} is damaged ({exc})") from None

    def exported(self, till_id: str, day: str) -> str | None:
        """The file that holds the day's voucher for ``till_id``, if it was exported."""
        return self.days.get(till_id, {}).get(day)

    def booked(self, seq: int, record_id: str) -> bool:
        """Whether the record has been read and dealt with (booked or refused), not waiting."""
        return self.scanned_seq is not None and seq <= self.scanned_seq and record_id not in self.waiting

    def save(self) -> None:
        """Write atomically and durably: a crash leaves the old state or the new one."""
        body = json.dumps(
            {
                "version": STATE_VERSION,
                "scanned_seq": self.scanned_seq,
                "waiting": self.waiting,
                "refused": self.refused,
                "days": self.days,
                "zs": self.zs,
                "receipts": {k: v.ranges() for k, v in sorted(self.receipts.items())},
                "runs": self.runs[-KEEP_RUNS:],
                "unwritten": self.unwritten,
                "last_run_at": self.last_run_at,
            },
            ensure_ascii=False,
            indent=1,
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
