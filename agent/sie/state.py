"""What has been exported already, kept beside the files so nothing is booked twice.

The outbox knows which records this destination acknowledged; the bookkeeping
also needs to know which (till, business day) pairs have had their voucher,
so a sale arriving later is booked as a separate, clearly marked late voucher
instead of being mixed into (or re-exporting) a day already imported. The
state also maps each batch to the file it became, so a batch resent after a
crash is recognised and not written twice.

It lives in ``dir/.kassabro-sie-state.json``, written atomically (temporary
file, fsync, rename, fsync of the directory), and is only read and written
while holding ``dir/.kassabro-sie.lock``, so ``kassabro sie export`` and the
running agent never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

STATE_NAME = ".kassabro-sie-state.json"
LOCK_NAME = ".kassabro-sie.lock"
KEEP_BATCHES_DAYS = 45
"""Batch entries (and their record ids) older than this are dropped; day entries are kept."""


class StateError(OSError):
    """The state file cannot be read; exporting stops rather than risk booking twice."""


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
    """The exported (till, day) pairs and the batches already written."""

    path: Path
    days: dict[str, dict[str, str]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ExportState:
        """Read the state; a missing file is an empty state.

        Raises:
            StateError: the file exists but is not a state this release wrote.
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
        if not isinstance(raw, dict) or raw.get("version") != 1:
            raise StateError(f"the SIE export state {path} is not a version 1 state file")
        return cls(path, dict(raw.get("days", {})), dict(raw.get("batches", {})))

    def exported(self, till_id: str, day: str) -> str | None:
        """The file that holds the day's voucher for ``till_id``, if it was exported."""
        return self.days.get(till_id, {}).get(day)

    def record_index(self) -> dict[str, str]:
        """Record id -> the file it was written to, for the batches still remembered."""
        return {
            record_id: str(batch.get("file") or "")
            for batch in self.batches.values()
            for record_id in batch.get("records", ())
        }

    def mark(
        self,
        batch_id: str,
        file_name: str | None,
        days: list[tuple[str, str]],
        record_ids: list[str],
        rejected: dict[str, str],
        now: datetime,
    ) -> None:
        """Remember a written batch (or one with nothing to write) and its days."""
        for till_id, day in days:
            self.days.setdefault(till_id, {}).setdefault(day, file_name or "")
        self.batches[batch_id] = {
            "file": file_name,
            "written_at": now.isoformat(),
            "records": record_ids,
            "rejected": rejected,
        }
        horizon = now - timedelta(days=KEEP_BATCHES_DAYS)
        for old in [b for b, e in self.batches.items() if _older(e.get("written_at"), horizon)]:
            del self.batches[old]

    def save(self) -> None:
        """Write atomically and durably: a crash leaves the old state or the new one."""
        body = json.dumps({"version": 1, "days": self.days, "batches": self.batches}, ensure_ascii=False, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)


def _older(value: object, horizon: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(value)) < horizon
    except ValueError:
        return True
