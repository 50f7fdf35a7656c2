"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and logging.

Why pure Python: the notify protocol is one datagram of ``KEY=value`` lines to
the unix socket named in ``$NOTIFY_SOCKET``; linking libsystemd for that would
make a C build a hard dependency on the Pi. Every function here is a harmless
no-op when the agent does not run under systemd (no ``$NOTIFY_SOCKET``), so the
agent behaves the same in a terminal, in the tests and in the unit.

The watchdog is fed by ``watchdog_loop``, which pings only when a probe proves
progress (the event loop answers and the outbox can commit). A bare timer would
keep pinging from a wedged agent and defeat the point of ``WatchdogSec=``.

Logging goes to journald with structured fields when systemd-python (the
``journal`` extra) is installed and stderr is the journal, else to stderr one
line per event. Callers attach the fields through ``extra`` with lower-case
names; they become journal fields::

    log.warning("batch refused", extra={"destination": "hogia",
                                        "batch_id": batch.batch_id,
                                        "record_key": "sale:kassa-1:100234"})
    # journal: DESTINATION=hogia BATCH_ID=... RECORD_KEY=sale:kassa-1:100234
    # stderr:  ... batch refused [destination=hogia record_key=... batch_id=...]

so ``journalctl -u kassabro DESTINATION=hogia`` shows one destination's story.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from agent.redact import RedactingFilter
from agent.states import TROUBLED, DestinationState

log = logging.getLogger(__name__)

JOURNAL_FIELDS: dict[str, str] = {
    "destination": "DESTINATION",
    "record_key": "RECORD_KEY",
    "batch_id": "BATCH_ID",
}
"""``extra`` names callers use -> the journal field each becomes."""

_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_warned_send_failure = False


# --------------------------------------------------------------------------- notify


def _notify_address() -> str | bytes | None:
    """The socket address from ``$NOTIFY_SOCKET``: a path, or an abstract name.

    ``@name`` is Linux's abstract namespace: the address starts with a NUL byte.
    Anything else systemd may hand out (``vsock:``) is not for us: None.
    """
    raw = os.environ.get("NOTIFY_SOCKET", "")
    if not raw:
        return None
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None


def _format(fields: Mapping[str, object]) -> bytes:
    """``KEY=value`` lines; a value never spans lines (the protocol is line based)."""
    lines = []
    for name, value in fields.items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"sd_notify field name {name!r} must be upper case letters, digits and _")
        text = " ".join(str(value).splitlines())
        lines.append(f"{name}={text}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def notify(**fields: object) -> bool:
    """Send one sd_notify message, e.g. ``notify(READY=1, STATUS="starting")``.

    Returns True when the datagram was sent, False when there is no
    ``$NOTIFY_SOCKET`` or sending failed. It never raises for a send failure:
    a missing notify socket must not take the agent down (systemd will notice
    the missing READY or WATCHDOG by itself).

    Raises:
        ValueError: a field name that is not ``[A-Z][A-Z0-9_]*``.
    """
    global _warned_send_failure
    payload = _format(fields)
    address = _notify_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        if not _warned_send_failure:
            _warned_send_failure = True
            log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status_line: str | None = None) -> bool:
    """Tell systemd the agent is up: the outbox is open and the listeners are bound."""
    if status_line is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status_line)


def status(line: str) -> bool:
    """Set the one line ``systemctl status kassabro`` shows (``STATUS=``)."""
    return notify(STATUS=line)


def watchdog() -> bool:
    """Feed the watchdog once (``WATCHDOG=1``). Call it only after proving progress."""
    return notify(WATCHDOG=1)


def stopping(status_line: str | None = None) -> bool:
    """Tell systemd a clean shutdown has begun (``STOPPING=1``)."""
    if status_line is None:
        return notify(STOPPING=1)
    return notify(STOPPING=1, STATUS=status_line)


def extend_timeout(seconds: float) -> bool:
    """Ask for more start or stop time, e.g. while a long migration runs."""
    return notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))


# --------------------------------------------------------------------------- watchdog


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, or None when no watchdog is armed for us.

    systemd sets ``WATCHDOG_USEC`` (the timeout) and ``WATCHDOG_PID`` (whose
    watchdog it is). The value returned is half the timeout, as sd_watchdog(3)
    recommends, so one late ping is not fatal. When ``WATCHDOG_PID`` names
    another process (a variable inherited by a child), the watchdog is not ours.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        timeout_us = int(usec)
    except ValueError:
        return None
    if timeout_us <= 0:
        return None
    return timeout_us / 2 / 1_000_000


async def watchdog_loop(
    probe: Callable[[], Awaitable[bool]],
    interval: float | None = None,
) -> None:
    """Ping the watchdog every ``interval`` seconds while ``probe()`` says all is well.

    ``probe`` should prove real progress, for example that the event loop runs
    and a tiny outbox transaction commits. A probe that returns False, raises,
    or does not answer within ``interval`` skips that ping; if that goes on for
    the whole ``WatchdogSec=``, systemd restarts the agent, which is the point.

    Args:
        probe: returns True when the agent is healthy enough to be kept alive.
        interval: seconds between probes; default ``watchdog_interval()``. When
            there is no watchdog (None), the loop returns at once.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None or interval <= 0:
        return
    healthy = True
    while True:
        try:
            ok = bool(await asyncio.wait_for(probe(), timeout=interval))
        except TimeoutError:
            ok = False
            reason = f"no answer within {interval:g}s"
        except Exception as exc:
            ok = False
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = "probe said unhealthy"
        if ok:
            watchdog()
            if not healthy:
                log.info("watchdog probe healthy again")
            healthy = True
        elif healthy:
            log.warning("watchdog probe failed, not feeding the watchdog: %s", reason)
            healthy = False
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- status line


def format_status(destinations: Iterable[Mapping[str, Any]]) -> str:
    """The one ``STATUS=`` line for the shop: "3 väntar, hogia offline sedan 14:02".

    Args:
        destinations: the ``/api/status`` destination dicts (``name``, ``state``,
            ``pending``, ``last_success_at``); offline and degraded ones are named.
    """
    items = list(destinations)
    pending = sum(int(d.get("pending") or 0) for d in items)
    parts = [f"{pending} väntar" if pending else "allt levererat"]
    for d in items:
        state = d.get("state")
        if state not in TROUBLED:
            continue
        since = _clock(d.get("last_success_at")) if state == DestinationState.OFFLINE else None
        parts.append(f"{d.get('name')} {state} sedan {since}" if since else f"{d.get('name')} {state}")
    return ", ".join(parts)


def _clock(value: object) -> str | None:
    """``HH:MM`` in local time from an ISO timestamp, or None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone()
    return when.strftime("%H:%M")


# --------------------------------------------------------------------------- logging


class JournalFields(logging.Filter):
    """Copies ``extra={"destination": ...}`` style attributes to journal field names.

    systemd-python's JournalHandler sends every record attribute as a field, but
    journald drops names that are not upper case, so ``destination`` alone would
    be lost. This filter adds ``DESTINATION`` etc. beside it; it never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for attr, field in JOURNAL_FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None and not hasattr(record, field):
                setattr(record, field, str(value))
        return True


class LineFormatter(logging.Formatter):
    """One line per event, structured fields appended as ``[name=value ...]``.

    Tracebacks are folded into the same line (`` | `` between lines) so a log
    reader or journald never sees half an event. With ``syslog_prefix`` the line
    starts with ``<N>`` (journald's ``SyslogLevelPrefix=``) and carries no time,
    as the journal stamps it itself.
    """

    _PRIORITY = ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3))

    def __init__(self, *, syslog_prefix: bool = False):
        fmt = (
            "%(name)s %(levelname)s: %(message)s"
            if syslog_prefix
            else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        super().__init__(fmt)
        self.syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(
            f"{attr}={getattr(record, attr)}" for attr in JOURNAL_FIELDS if getattr(record, attr, None) is not None
        )
        if fields:
            first, sep, rest = text.partition("\n")
            text = f"{first} [{fields}]{sep}{rest}"
        text = " | ".join(line for line in text.splitlines() if line.strip())
        if self.syslog_prefix:
            text = f"<{self._priority(record.levelno)}>{text}"
        return text

    def _priority(self, levelno: int) -> int:
        for threshold, priority in self._PRIORITY:
            if levelno <= threshold:
                return priority
        return 2  # CRITICAL


def stderr_is_journal() -> bool:
    """Whether stderr is connected to journald (``$JOURNAL_STREAM`` is ``dev:inode`` of it)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def journal_handler() -> logging.Handler | None:
    """systemd-python's JournalHandler (with the field filter), or None when not installed."""
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="kassabro")
    handler.addFilter(JournalFields())
    return handler


def setup_logging(level: int | str = "INFO", *, journal: bool | None = None) -> logging.Handler:
    """Send the agent's logs to journald when possible, else to stderr.

    Args:
        level: a logging level or its name (``"INFO"``, ``"DEBUG"``...).
        journal: None chooses by itself: the journal when systemd-python is
            installed and stderr is the journal (so a terminal run stays in the
            terminal); True prefers the journal whenever systemd-python is
            installed; False forces stderr.

    Returns:
        the one handler installed on the root logger (earlier handlers this
        function installed are replaced, so calling it twice does not double lines).

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, str):
        resolved = logging.getLevelNamesMapping().get(level.upper())
        if resolved is None:
            raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        level = resolved
    use_journal = stderr_is_journal() if journal is None else journal
    handler = journal_handler() if use_journal else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LineFormatter(syslog_prefix=stderr_is_journal()))
    handler.set_name("kassabro")
    handler.addFilter(RedactingFilter())  # credentials in a URL never reach the log
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "kassabro":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
