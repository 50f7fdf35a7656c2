"""Turns the agent's status into what the page says: a headline, notes and cards.

This is where "state=offline, pending=3" becomes "3 försäljningar väntar –
internet nere sedan 14:02". It is pure (status in, words out) so the wording
of every state can be tested without a browser.

The headline is the most urgent thing the shop must know, in this order:

1. a destination is unreachable (``offline``): what is waiting and since when;
   "internet down" when every network destination is unreachable at once;
2. records were refused (dead letters);
3. a destination is paused;
4. a destination is ``degraded`` with records waiting (one that refused
   records earlier but has nothing waiting now is only a note under "All sent");
5. records are on their way ("Sending 3 sales");
6. problems the agent reports (``"problems"``: missing receipts, a Z-report
   that does not match its receipts, a corrupt outbox moved aside);
7. otherwise "All sent".

Everything after the first shows as a note under the headline.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.outbox.types import DeadLetter
from agent.states import DestinationState
from agent.web.i18n import Translator, parse_time

Z_STATES = ("ok", "missing_receipts", "mismatch", "unverified")
"""A till's last Z-report compared with its receipts (``agent.reconcile.ZState``)."""
LOCAL_KINDS = frozenset({"sie"})
"""Kinds that write locally: their failing says nothing about the internet."""


@dataclass
class Message:
    """One sentence for the shop; ``level`` is ``ok``, ``info``, ``warn`` or ``bad``."""

    level: str
    text: str
    detail: str = ""


@dataclass
class Card:
    """One destination as its card shows it."""

    name: str
    kind: str
    kind_label: str
    state: DestinationState
    state_label: str
    pending: str
    pending_n: int
    oldest: str
    dead_letters: int
    last_success: str
    last_error: str
    next_attempt: str
    paused: bool
    error_class: str = ""
    """``error_class(last_error)``: network, dns, address, login, refused, or empty."""
    error_text: str = ""
    """``last_error`` explained by its class (``error_class``), in the page's language; empty when unknown."""
    broker: str = ""
    """An mqtt destination's broker in use (one of its ``hosts``); empty for other kinds or while not connected."""


@dataclass
class Headline:
    """The page's top: the main message and the notes below it."""

    main: Message
    notes: list[Message] = field(default_factory=list)


def headline(status: Mapping[str, Any], t: Translator) -> Headline:
    """The headline and notes for ``status`` (see the module docstring for the order)."""
    dests: list[Mapping[str, Any]] = list(status.get("destinations") or [])
    messages: list[Message] = []

    offline = [d for d in dests if d.get("state") == DestinationState.OFFLINE]
    if offline:
        messages.append(_offline_message(dests, offline, t))

    refused = [d for d in dests if int(d.get("dead_letters") or 0) > 0]
    if refused:
        total = sum(int(d["dead_letters"]) for d in refused)
        what = t.count("record", total)
        if len(refused) == 1:
            text = t("dead_one_dest", dest=refused[0].get("name", ""), what=what)
        else:
            text = t("dead_many", what=what)
        messages.append(Message("bad", _capitalise(text)))

    for dest in dests:
        if dest.get("state") == DestinationState.PAUSED:
            waiting = int(dest.get("pending") or 0)
            if waiting:
                text = t("paused", dest=dest.get("name", ""), what=waiting_words([dest], t))
                messages.append(Message("warn", text, t("kept_safe")))
            else:
                messages.append(Message("warn", t("paused_empty", dest=dest.get("name", ""))))

    afterwards: list[Message] = []
    for dest in dests:
        # Refused records already have their own message; "degraded" adds nothing then.
        if dest.get("state") == DestinationState.DEGRADED and not int(dest.get("dead_letters") or 0):
            if int(dest.get("pending") or 0):
                messages.append(Message("warn", t("degraded", dest=dest.get("name", ""))))
            else:
                # Refused earlier since the restart, all fixed now: a note, not the headline.
                afterwards.append(Message("info", t("degraded_earlier", dest=dest.get("name", ""))))

    sending = (DestinationState.ONLINE, DestinationState.DEGRADED)
    on_the_way = [d for d in dests if d.get("state") in sending and int(d.get("pending") or 0)]
    if on_the_way and not messages:
        messages.append(Message("info", t("sending", what=waiting_words(on_the_way, t))))

    for problem in status.get("problems") or []:
        messages.append(Message("warn", f"{t('problem')}: {problem_text(problem, t)}"))

    if not dests:
        messages.insert(0, Message("warn", t("no_destinations")))
    if not messages:
        return Headline(Message("ok", t("all_sent"), t("all_sent_detail")), afterwards)
    return Headline(messages[0], messages[1:] + afterwards)


def problem_text(problem: Any, t: Translator) -> str:
    """A problem's words in the page's language: ``text`` (Swedish), ``text_en`` in English.

    A plain string (an older agent's problem) is shown as it is.
    """
    if not isinstance(problem, Mapping):
        return str(problem)
    if t.lang == "en" and problem.get("text_en"):
        return str(problem["text_en"])
    return str(problem.get("text") or problem.get("code") or "")


def till_rows(status: Mapping[str, Any], t: Translator) -> list[dict[str, Any]]:
    """The tills reconciliation knows (``status["tills"]``), as the page lists them."""
    rows = []
    for till in status.get("tills") or []:
        last_z = till.get("last_z") or None
        z_state = str(last_z.get("state") or "") if last_z else ""
        missing = int(till.get("missing_receipts") or 0)
        rows.append(
            {
                "till_id": str(till.get("till_id") or ""),
                "last_receipt": "–" if till.get("last_receipt_no") is None else str(till["last_receipt_no"]),
                "last_received": t.clock(till.get("last_received_at")),
                "missing": t.number(missing),
                "missing_n": missing,
                "last_z": f"Z {last_z.get('z_no')}" if last_z else t("till_no_z"),
                "z_state": z_state,
                "z_state_label": t(f"z_state_{z_state}") if z_state in Z_STATES else "",
            }
        )
    return rows


def book_rows(books: Sequence[Mapping[str, Any]], t: Translator) -> list[dict[str, Any]]:
    """The SIE files of each ``sie`` destination, newest first, as the Bokföring panel lists them."""
    rows = []
    for book in books:
        for file in book.get("files") or []:
            days = list(file.get("days") or [])
            rows.append(
                {
                    "destination": str(book.get("destination") or ""),
                    "name": str(file.get("name") or ""),
                    "days": ", ".join(days) if len(days) <= 3 else f"{days[0]} – {days[-1]}",
                    "vouchers": t.count("voucher", int(file.get("vouchers") or 0)),
                    "ok": bool(file.get("balanced")) and bool(file.get("checksum_ok")),
                    "verdict": t("book_ok") if file.get("balanced") and file.get("checksum_ok") else t("book_bad"),
                    "size": t.size(file.get("size")),
                }
            )
    return rows


def _offline_message(
    dests: Sequence[Mapping[str, Any]], offline: Sequence[Mapping[str, Any]], t: Translator
) -> Message:
    """ "3 sales waiting – internet down since 14:02" or "... – hogia unreachable since ..."."""
    network = [d for d in dests if d.get("kind") not in LOCAL_KINDS and d.get("state") != DestinationState.PAUSED]
    network_offline = [d for d in offline if d.get("kind") not in LOCAL_KINDS]
    # A wrong address or a refused login is the setup's fault: never "internet down".
    setup_fault = any(error_class(d.get("last_error")) in CONFIG_ERROR_CLASSES for d in network_offline)
    internet_down = len(network) >= 2 and len(network_offline) == len(network) and not setup_fault
    since = _earliest([d.get("offline_since") or d.get("last_success_at") for d in offline])
    waiting = max(int(d.get("pending") or 0) for d in offline)
    names = _join([str(d.get("name", "")) for d in offline], t)
    values: dict[str, str] = {"dest": names}
    if since is not None:
        values["time"] = t.clock(since)
    suffix = "" if since is not None else "_notime"
    if waiting:
        values["what"] = waiting_words(offline, t)
        key = "waiting_internet_down" if internet_down else "waiting_dest_down"
        return Message("bad", _capitalise(t(key + suffix, **values)), t("kept_safe"))
    return Message("bad", t("dest_down" + suffix, **values))


def waiting_words(dests: Sequence[Mapping[str, Any]], t: Translator) -> str:
    """What is waiting, in the shop's words: "3 sales", else "6 stock changes".

    Uses ``pending_by_type`` when every destination gives it (sales first: they
    are what a shop owner counts; the cards give every figure); otherwise
    counts records. Destinations share records, so the most any one of them waits
    for is what is waiting, not the sum.
    """
    if dests and all(isinstance(d.get("pending_by_type"), Mapping) for d in dests):
        sales = max(int(d["pending_by_type"].get("sale") or 0) for d in dests)
        stock = max(int(d["pending_by_type"].get("stock_movement") or 0) for d in dests)
        if sales:
            return t.count("sale", sales)
        if stock:
            return t.count("stock_movement", stock)
    return t.count("record", max((int(d.get("pending") or 0) for d in dests), default=0))


_ERROR_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    # A name that does not resolve: an address typed wrong, or no DNS on this network.
    ("dns", re.compile(r"name or service not known|nodename nor servname|no address associated|getaddrinfo", re.I)),
    ("login", re.compile(r"HTTP 40[137]\b|credentials|unauthori[sz]ed|forbidden|secret file", re.I)),
    ("address", re.compile(r"HTTP 404\b", re.I)),
    ("refused", re.compile(r"HTTP 4\d\d\b|refused (the|a) record|rejected", re.I)),
    (
        "network",
        re.compile(
            r"connect|connection|timed? ?out|timeout|unreachable|temporary failure in name resolution|"
            r"network|HTTP 5\d\d\b|reset by peer|broken pipe|eof",
            re.I,
        ),
    ),
]
CONFIG_ERROR_CLASSES = frozenset({"dns", "login", "address"})
"""Classes that say the setup is wrong, not the internet: never headlined as "internet down"."""


def error_class(last_error: str | None) -> str:
    """``network``, ``dns``, ``address``, ``login``, ``refused``, or ``""`` when the words say nothing known.

    The first match wins, in the order above: "connection refused" is the
    network's, but "HTTP 401 ... refused our credentials" is a login.
    """
    if not last_error:
        return ""
    for name, pattern in _ERROR_PATTERNS:
        if pattern.search(last_error):
            return name
    return ""


def cards(status: Mapping[str, Any], t: Translator) -> list[Card]:
    """One card per destination, in the order the agent lists them."""
    result: list[Card] = []
    for dest in status.get("destinations") or []:
        try:
            state = DestinationState(dest.get("state") or DestinationState.ONLINE)
        except ValueError:  # a state this page does not know: shown as needing a look
            state = DestinationState.DEGRADED
        kind = str(dest.get("kind") or "")
        pending = int(dest.get("pending") or 0)
        next_attempt = ""
        if state in (DestinationState.OFFLINE, DestinationState.DEGRADED) and dest.get("next_attempt_at"):
            next_attempt = t.until(dest.get("next_attempt_at"))
        result.append(
            Card(
                name=str(dest.get("name") or ""),
                kind=kind,
                kind_label=t("kind_hogia_reads_only") if dest.get("reads_only") else _kind_label(kind, t),
                state=state,
                state_label=t(f"state_{state}"),
                pending=t.number(pending),
                pending_n=pending,
                oldest=t.duration(dest.get("oldest_pending_age_s")) if pending else "–",
                dead_letters=int(dest.get("dead_letters") or 0),
                last_success=t.clock(dest.get("last_success_at")),
                last_error=str(dest.get("last_error") or ""),
                error_class=error_class(dest.get("last_error")),
                error_text=_error_text(dest.get("last_error"), t),
                next_attempt=next_attempt,
                paused=state == DestinationState.PAUSED,
                broker=str(dest.get("broker") or ""),
            )
        )
    return result


def _error_text(last_error: str | None, t: Translator) -> str:
    kind = error_class(last_error)
    return t(f"error_{kind}") if kind else ""


def dead_letter_rows(letters: Sequence[DeadLetter], t: Translator) -> list[dict[str, Any]]:
    """Dead letters as the page lists them, with the reason in the receiver's words."""
    rows = []
    for letter in letters:
        rows.append(
            {
                "destination": letter.destination,
                "record_id": letter.record_id,
                "key": letter.key,
                "seq": letter.seq,
                "status": t("dead_status", status=letter.status) if letter.status is not None else "",
                "error": letter.error,
                "when": t.clock(letter.created_at),
                "retrying": letter.state == "retrying",
            }
        )
    return rows


def record_rows(
    records: Sequence[Mapping[str, Any]], t: Translator, reads_only: Collection[Any] = ()
) -> list[dict[str, Any]]:
    """Recent records with their type and per-destination delivery in words.

    ``reads_only``: destinations that look at records without sending them (a
    hogia destination with ``send_records = false``): a record it is done with
    is "read", never "sent", so nobody takes it for booked in Hogia twice.
    """
    rows = []
    for record in records:
        kind = str(record.get("type") or "")
        deliveries = []
        for dest, state in (record.get("deliveries") or {}).items():
            state = state if state in ("delivered", "pending", "dead") else "pending"
            label = t("delivery_read") if state == "delivered" and dest in reads_only else t(f"delivery_{state}")
            deliveries.append({"destination": dest, "state": state, "label": label})
        rows.append(
            {
                "key": str(record.get("key") or ""),
                "type": t(f"type_{kind}") if kind in ("sale", "stock_movement", "z_report") else kind,
                "seq": record.get("seq"),
                "received": t.clock(record.get("received_at")),
                "deliveries": deliveries,
            }
        )
    return rows


def _kind_label(kind: str, t: Translator) -> str:
    try:
        return t(f"kind_{kind}")
    except KeyError:
        return kind


def _earliest(moments: Sequence[Any]) -> datetime | None:
    """The earliest of the readable moments, or None when none is known."""
    readable = [when for when in map(parse_time, moments) if when is not None]
    return min(readable, default=None)


def _join(names: Sequence[str], t: Translator) -> str:
    """``a``, ``a och b``, ``a, b och c``."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} {t('and')} {names[-1]}"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
