"""A tiny inotify watcher (Linux), so the spool wakes on a new file instead of polling.

Only the two events the spool protocol needs: a file renamed into the folder
(``IN_MOVED_TO``) or closed after writing in it (``IN_CLOSE_WRITE``). Where
inotify is not available the caller falls back to a slow periodic scan.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class DirectoryWatch:
    """Sets ``event`` whenever a file is written or renamed into ``path``."""

    def __init__(self, path: Path, event: asyncio.Event):
        self.path = path
        self.event = event
        self.fd: int | None = None

    def start(self) -> bool:
        """Begin watching; False when inotify is not available here."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return False
            if libc.inotify_add_watch(fd, os.fsencode(self.path), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
                os.close(fd)
                return False
        except (OSError, AttributeError):
            return False
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return True

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass
        self.event.set()

    def close(self) -> None:
        if self.fd is not None:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
