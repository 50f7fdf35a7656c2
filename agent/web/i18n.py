"""Swedish and English words for the status page, and how times read in each.

The page is for a shop owner first, so everything is plain words: "3
försäljningar väntar – internet nere sedan 14:02", not "state=offline
pending=3". Swedish is the default (the shops are Swedish); English is there
for support and for the chain's IT.

The language comes from ``?lang=sv|en`` (remembered in a cookie), else the
cookie, else the browser's ``Accept-Language``, else Swedish.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

LANGUAGES = ("sv", "en")
DEFAULT_LANGUAGE = "sv"
LANG_COOKIE = "kassabro_lang"

_MESSAGES: dict[str, dict[str, str]] = {
    "sv": {
        "html_lang": "sv",
        "title": "Kassabro – {store}",
        "switch_to": "English",
        "switch_lang": "en",
        "store": "Butik",
        "version": "version",
        "uptime": "igång i {duration}",
        "updated": "Uppdaterad {time}",
        "stale": "Tappade kontakten med agenten – sidan visar senast kända läget och försöker igen.",
        # headline and notes
        "all_sent": "Allt är skickat",
        "all_sent_detail": "Inget väntar på att skickas.",
        "no_destinations": "Inga mottagare är inställda",
        "sending": "Skickar {what}",
        "waiting_internet_down": "{what} väntar – internet nere sedan {time}",
        "waiting_internet_down_notime": "{what} väntar – internet nere",
        "waiting_dest_down": "{what} väntar – {dest} nås inte sedan {time}",
        "waiting_dest_down_notime": "{what} väntar – {dest} nås inte",
        "dest_down": "{dest} nås inte sedan {time}",
        "dest_down_notime": "{dest} nås inte",
        "dead_one_dest": "{dest} tog inte emot {what} – se listan nedan",
        "dead_many": "{what} togs inte emot – se listan nedan",
        "paused": "{dest} är pausad – {what} väntar",
        "paused_empty": "{dest} är pausad",
        "degraded": "{dest} tar emot, men något gick fel – se kortet nedan",
        "degraded_earlier": "{dest} har sagt nej till poster sedan start – allt är skickat nu",
        "unavailable": "Agenten svarar inte",
        "unavailable_detail": "Statusen kunde inte läsas just nu. Sidan försöker igen av sig själv.",
        "problem": "Problem",
        "kept_safe": "Inget försvinner: allt som väntar ligger sparat och skickas när mottagaren svarar igen.",
        # counted nouns: one / many
        "sale_1": "1 försäljning",
        "sale_n": "{n} försäljningar",
        "stock_movement_1": "1 lagerändring",
        "stock_movement_n": "{n} lagerändringar",
        "record_1": "1 post",
        "record_n": "{n} poster",
        "and": "och",
        # destination cards
        "destinations": "Mottagare",
        "state_online": "Fungerar",
        "state_offline": "Nås inte",
        "state_degraded": "Delvis fel",
        "state_paused": "Pausad",
        "pending": "Väntar",
        "oldest_pending": "Äldsta väntar sedan",
        "dead_letters": "Ej mottagna",
        "last_success": "Senast skickat",
        "never": "aldrig",
        "last_error": "Senaste fel",
        "details": "Detaljer",
        "error_network": "Når inte servern (nätverket). Posterna väntar här och skickas när den svarar igen.",
        "error_dns": "Namnet på servern går inte att slå upp: kontrollera adressen i konfigurationen, eller nätverket.",
        "error_address": "Servern finns men inte adressen: kontrollera sökvägen i konfigurationen.",
        "error_login": "Inloggningen nekades: kontrollera nyckeln eller lösenordet i konfigurationen.",
        "error_refused": "Servern nekade en post: se nekade poster nedan.",
        "broker": "Ansluten till",
        "next_attempt": "Nästa försök",
        "in_duration": "om {duration}",
        "now": "nu",
        "pause": "Pausa",
        "resume": "Återuppta",
        "kind_hogia": "Hogia Smart",
        "kind_hogia_reads_only": "Hogia Smart: läser artikelregistret, bokför inget (kassan rapporterar själv)",
        "kind_sharespine": "Sharespine",
        "kind_http": "HTTP-mottagare",
        "kind_mqtt": "MQTT",
        "kind_sie": "SIE-filer (bokföring)",
        # ingest
        "ingest": "Från kassan",
        "accepted_total": "Mottagna",
        "rejected_total": "Avvisade",
        "last_received": "Senast mottagen",
        "outbox": "Sparat i kön",
        "outbox_value": "{records} poster, {size}",
        "register": "Artikelregister (Hogia Smart)",
        "register_value": "{articles} artiklar, {webshop} i webbutiken, hämtat för {age} sedan",
        "register_skipped": "{skipped} lagerändringar inte till Sharespine (inte webbutiksartikel)",
        "since_start": "sedan start",
        # chart
        "chart": "Senaste 24 timmarna",
        "chart_label": "Diagram: poster i kö (linje) och skickade poster (staplar) de senaste 24 timmarna",
        "chart_backlog": "I kö",
        "chart_delivered": "Skickade",
        "chart_empty": "Ingen historik ännu – diagrammet fylls på medan agenten är igång.",
        "chart_summary": "{delivered} skickade, som mest {peak} i kö.",
        # dead letters
        "dead_title": "Ej mottagna poster",
        "dead_intro": "Mottagaren sa nej till dessa poster. De är sparade och kan skickas igen när felet är rättat.",
        "dead_none": "Inga – allt som skickats har tagits emot.",
        "dead_reason": "Orsak",
        "dead_status": "svar {status}",
        "dead_when": "Avvisad",
        "dead_retrying": "skickas igen",
        "retry": "Försök igen",
        "retry_all": "Försök igen med alla",
        # the books (SIE files)
        "books": "Bokföring",
        "books_intro": "SIE-filerna till redovisningen, nyaste först. Att ladda ner kräver admin-token (skriv den under Åtgärder).",
        "books_none": "Inga filer ännu – de skrivs varje natt för gårdagen.",
        "book_ok": "balanserar",
        "book_bad": "balanserar inte – kontakta support",
        "download": "Ladda ner",
        "voucher_1": "1 verifikat",
        "voucher_n": "{n} verifikat",
        "err_no_file": "Filen finns inte – inget hämtades.",
        # tills (reconciliation)
        "tills": "Kassor",
        "tills_intro": "Kvittonumren och Z-rapporterna som kommit fram, jämförda med varandra.",
        "till": "Kassa",
        "till_last_receipt": "Senaste kvitto",
        "till_last_received": "Mottaget",
        "till_missing": "Saknade kvitton",
        "till_last_z": "Senaste Z-rapport",
        "till_no_z": "ingen ännu",
        "z_state_ok": "stämmer",
        "z_state_missing_receipts": "kvitton saknas",
        "z_state_mismatch": "stämmer inte",
        "z_state_unverified": "kan inte kontrolleras",
        # recent records
        "recent": "Senaste poster",
        "recent_none": "Inga poster ännu.",
        "record_key": "Post",
        "record_received": "Mottagen",
        "record_deliveries": "Leverans",
        "type_sale": "försäljning",
        "type_stock_movement": "lagerändring",
        "type_z_report": "Z-rapport",
        "delivery_delivered": "skickad",
        "delivery_read": "läst (kassan bokför)",
        "delivery_pending": "väntar",
        "delivery_dead": "ej mottagen",
        # admin
        "admin": "Åtgärder",
        "admin_intro": "Knapparna för att försöka igen och pausa kräver admin-token. Skriv den här först.",
        "admin_token": "Admin-token",
        "admin_disabled": "Sidan är skrivskyddad: ingen admin-token är inställd ([status] admin_token_file).",
        "admin_needs_tls": "Åtgärder visas bara över https:// (eller på Pi:n själv), så att admin-token aldrig skickas okrypterat.",
        "tls_fingerprint": "Certifikatets SHA-256-fingeravtryck:",
        "msg_retried": "Klart: {what} skickas igen.",
        "msg_paused": "Klart: {dest} är pausad.",
        "msg_resumed": "Klart: {dest} skickar igen.",
        "err_bad_token": "Fel admin-token – inget ändrades.",
        "err_too_many": "För många fel admin-token från den här enheten – vänta en stund och försök igen.",
        "err_no_token": "Skriv admin-token först – inget ändrades.",
        "err_disabled": "Åtgärder är avstängda: ingen admin-token är inställd.",
        "err_plain_http": "Åtgärder kräver https:// eller Pi:n själv – inget ändrades.",
        "err_cross_site": "Begäran kom inte från den här sidan – inget ändrades.",
        "err_bad_action": "Okänd åtgärd – inget ändrades.",
        "err_unknown_dest": "Okänd mottagare – inget ändrades.",
        "err_unavailable": "Agenten svarar inte – inget ändrades. Försök igen om en stund.",
        # durations
        "dur_s": "{s} s",
        "dur_m": "{m} min",
        "dur_hm": "{h} h {m} min",
        "dur_dh": "{d} dygn {h} h",
        "just_now": "nyss",
        "months": "jan feb mars april maj juni juli aug sep okt nov dec",
    },
    "en": {
        "html_lang": "en",
        "title": "Kassabro – {store}",
        "switch_to": "Svenska",
        "switch_lang": "sv",
        "store": "Store",
        "version": "version",
        "uptime": "running for {duration}",
        "updated": "Updated {time}",
        "stale": "Lost contact with the agent – the page shows the last known state and keeps trying.",
        "all_sent": "All sent",
        "all_sent_detail": "Nothing is waiting to be sent.",
        "no_destinations": "No destinations are configured",
        "sending": "Sending {what}",
        "waiting_internet_down": "{what} waiting – internet down since {time}",
        "waiting_internet_down_notime": "{what} waiting – internet down",
        "waiting_dest_down": "{what} waiting – {dest} unreachable since {time}",
        "waiting_dest_down_notime": "{what} waiting – {dest} unreachable",
        "dest_down": "{dest} unreachable since {time}",
        "dest_down_notime": "{dest} unreachable",
        "dead_one_dest": "{dest} refused {what} – see the list below",
        "dead_many": "{what} were refused – see the list below",
        "paused": "{dest} is paused – {what} waiting",
        "paused_empty": "{dest} is paused",
        "degraded": "{dest} is receiving, but something went wrong – see its card below",
        "degraded_earlier": "{dest} has refused records since the start – everything is sent now",
        "unavailable": "The agent does not answer",
        "unavailable_detail": "The status could not be read just now. The page keeps trying by itself.",
        "problem": "Problem",
        "kept_safe": "Nothing is lost: everything waiting is stored and is sent when the receiver answers again.",
        "sale_1": "1 sale",
        "sale_n": "{n} sales",
        "stock_movement_1": "1 stock change",
        "stock_movement_n": "{n} stock changes",
        "record_1": "1 record",
        "record_n": "{n} records",
        "and": "and",
        "destinations": "Destinations",
        "state_online": "Working",
        "state_offline": "Unreachable",
        "state_degraded": "Partly failing",
        "state_paused": "Paused",
        "pending": "Waiting",
        "oldest_pending": "Oldest waiting for",
        "dead_letters": "Refused",
        "last_success": "Last sent",
        "never": "never",
        "last_error": "Last error",
        "details": "Details",
        "error_network": "Cannot reach the server (network). Records wait here and go out when it answers again.",
        "error_dns": "The server's name does not resolve: check the address in the config, or the network.",
        "error_address": "The server answers but not at this address: check the path in the config.",
        "error_login": "Login refused: check the key or password in the config.",
        "error_refused": "The server refused a record: see refused records below.",
        "broker": "Connected to",
        "next_attempt": "Next try",
        "in_duration": "in {duration}",
        "now": "now",
        "pause": "Pause",
        "resume": "Resume",
        "kind_hogia": "Hogia Smart",
        "kind_hogia_reads_only": "Hogia Smart: reads the article register, books nothing (the till reports itself)",
        "kind_sharespine": "Sharespine",
        "kind_http": "HTTP receiver",
        "kind_mqtt": "MQTT",
        "kind_sie": "SIE files (bookkeeping)",
        "ingest": "From the till",
        "accepted_total": "Received",
        "rejected_total": "Rejected",
        "last_received": "Last received",
        "outbox": "Stored in the queue",
        "outbox_value": "{records} records, {size}",
        "register": "Article register (Hogia Smart)",
        "register_value": "{articles} articles, {webshop} in the webshop, fetched {age} ago",
        "register_skipped": "{skipped} stock changes not sent to Sharespine (not a webshop article)",
        "since_start": "since start",
        "chart": "Last 24 hours",
        "chart_label": "Chart: records waiting (line) and records sent (bars) over the last 24 hours",
        "chart_backlog": "Waiting",
        "chart_delivered": "Sent",
        "chart_empty": "No history yet – the chart fills in while the agent runs.",
        "chart_summary": "{delivered} sent, at most {peak} waiting.",
        "dead_title": "Refused records",
        "dead_intro": "The receiver said no to these records. They are kept and can be sent again once the cause is fixed.",
        "dead_none": "None – everything sent was accepted.",
        "dead_reason": "Reason",
        "dead_status": "answer {status}",
        "dead_when": "Refused",
        "dead_retrying": "being sent again",
        "retry": "Try again",
        "retry_all": "Try all again",
        "books": "Bookkeeping",
        "books_intro": "The SIE files for the accountant, newest first. Downloading needs the admin token (type it under Actions).",
        "books_none": "No files yet – they are written every night for the day before.",
        "book_ok": "balances",
        "book_bad": "does not balance – contact support",
        "download": "Download",
        "voucher_1": "1 voucher",
        "voucher_n": "{n} vouchers",
        "err_no_file": "No such file – nothing was downloaded.",
        "tills": "Tills",
        "tills_intro": "The receipt numbers and Z-reports that arrived, checked against each other.",
        "till": "Till",
        "till_last_receipt": "Last receipt",
        "till_last_received": "Received",
        "till_missing": "Missing receipts",
        "till_last_z": "Last Z-report",
        "till_no_z": "none yet",
        "z_state_ok": "matches",
        "z_state_missing_receipts": "receipts missing",
        "z_state_mismatch": "does not match",
        "z_state_unverified": "cannot be checked",
        "recent": "Latest records",
        "recent_none": "No records yet.",
        "record_key": "Record",
        "record_received": "Received",
        "record_deliveries": "Delivery",
        "type_sale": "sale",
        "type_stock_movement": "stock change",
        "type_z_report": "Z-report",
        "delivery_delivered": "sent",
        "delivery_read": "read (the till books it)",
        "delivery_pending": "waiting",
        "delivery_dead": "refused",
        "admin": "Actions",
        "admin_intro": "The buttons to try again and to pause need the admin token. Type it here first.",
        "admin_token": "Admin token",
        "admin_disabled": "This page is read-only: no admin token is configured ([status] admin_token_file).",
        "admin_needs_tls": "Actions are shown only over https:// (or on the Pi itself), so the admin token never travels in clear.",
        "tls_fingerprint": "Certificate SHA-256 fingerprint:",
        "msg_retried": "Done: {what} queued to be sent again.",
        "msg_paused": "Done: {dest} is paused.",
        "msg_resumed": "Done: {dest} is sending again.",
        "err_bad_token": "Wrong admin token – nothing was changed.",
        "err_too_many": "Too many wrong admin tokens from this device – wait a moment and try again.",
        "err_no_token": "Type the admin token first – nothing was changed.",
        "err_disabled": "Actions are off: no admin token is configured.",
        "err_plain_http": "Actions need https:// or the Pi itself – nothing was changed.",
        "err_cross_site": "The request did not come from this page – nothing was changed.",
        "err_bad_action": "Unknown action – nothing was changed.",
        "err_unknown_dest": "Unknown destination – nothing was changed.",
        "err_unavailable": "The agent does not answer – nothing was changed. Try again in a moment.",
        "dur_s": "{s} s",
        "dur_m": "{m} min",
        "dur_hm": "{h} h {m} min",
        "dur_dh": "{d} d {h} h",
        "just_now": "just now",
        "months": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
    },
}


def choose_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page's language: ``?lang=``, else the cookie, else Accept-Language, else Swedish."""
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    return _from_accept_language(accept_language or "")


def _from_accept_language(header: str) -> str:
    """The best of our languages by the header's q-values (RFC 9110 §12.5.4)."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, part in enumerate(header.split(",")[:20]):
        fields = part.strip().split(";")
        tag = fields[0].strip().lower()
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.split("-")[0]
        # Earlier entries win ties: a slightly lower position counts as lower q.
        score = quality - position * 1e-6
        if primary in LANGUAGES and quality > 0 and score > best_q:
            best, best_q = primary, score
    return best


class Translator:
    """The words and formats of one language.

    Args:
        lang: ``sv`` or ``en``.
        tz: the time zone times are shown in (the shop's local time).
        now: the current time; tests pass their own.
    """

    def __init__(self, lang: str, tz: tzinfo | None = None, now: datetime | None = None) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._messages = _MESSAGES[self.lang]
        self.now = now or datetime.now(UTC)
        self.tz = tz

    def __call__(self, key: str, **values: Any) -> str:
        """The message ``key`` with ``values`` filled in."""
        return self._messages[key].format(**values)

    def count(self, noun: str, n: int) -> str:
        """``3 försäljningar`` / ``1 sale``: a number with its noun."""
        if n == 1:
            return self._messages[f"{noun}_1"]
        return self._messages[f"{noun}_n"].format(n=self.number(n))

    def number(self, n: float) -> str:
        """Thousands grouped the local way: ``12 345`` (sv) / ``12,345`` (en)."""
        text = f"{int(n):,}"
        return text.replace(",", "\u00a0") if self.lang == "sv" else text

    def duration(self, seconds: float | None) -> str:
        """A span in the largest sensible units: ``42 s``, ``12 min``, ``2 h 5 min``."""
        if seconds is None:
            return "–"
        total = max(0, int(seconds))
        if total < 60:
            return self("dur_s", s=total)
        minutes = total // 60
        if minutes < 60:
            return self("dur_m", m=minutes)
        hours, minutes = divmod(minutes, 60)
        if hours < 48:
            return self("dur_hm", h=hours, m=minutes)
        days, hours = divmod(hours, 24)
        return self("dur_dh", d=days, h=hours)

    def clock(self, moment: datetime | str | float | None) -> str:
        """A moment as the shop reads it: ``14:02`` today, else ``25 nov 14:02``."""
        when = parse_time(moment)
        if when is None:
            return self("never")
        local = when.astimezone(self.tz)
        today = self.now.astimezone(self.tz).date()
        hhmm = local.strftime("%H:%M")
        if local.date() == today:
            return hhmm
        month = self._messages["months"].split()[local.month - 1]
        return f"{local.day} {month} {hhmm}"

    def ago(self, moment: datetime | str | float | None) -> float | None:
        """Seconds from ``moment`` to now (None when unknown)."""
        when = parse_time(moment)
        if when is None:
            return None
        return (self.now - when).total_seconds()

    def until(self, moment: datetime | str | float | None) -> str:
        """``om 30 s`` / ``in 30 s`` until ``moment``; ``nu`` when it has passed."""
        when = parse_time(moment)
        if when is None:
            return "–"
        seconds = (when - self.now).total_seconds()
        if seconds < 1:
            return self("now")
        return self("in_duration", duration=self.duration(seconds))

    def size(self, n_bytes: float | None) -> str:
        """``4.0 MB``-style sizes (decimal comma in Swedish)."""
        value = float(n_bytes or 0)
        for unit in ("B", "kB", "MB", "GB"):
            if value < 1000 or unit == "GB":
                text = f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
                return text.replace(".", ",") if self.lang == "sv" else text
            value /= 1000
        raise AssertionError("unreachable")


def parse_time(moment: datetime | str | float | None) -> datetime | None:
    """An aware datetime from ISO 8601 text, epoch seconds or a datetime; None if unreadable.

    Naive values are taken as UTC (the agent writes UTC everywhere).
    """
    if moment is None or moment == "":
        return None
    if isinstance(moment, datetime):
        when = moment
    elif isinstance(moment, (int, float)):
        when = datetime.fromtimestamp(float(moment), tz=UTC)
    else:
        try:
            when = datetime.fromisoformat(str(moment))  # 3.11 reads a trailing Z
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when
