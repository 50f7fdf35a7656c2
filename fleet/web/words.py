"""The fleet view's words, Swedish first and English second, and how times read in each.

The language is chosen as on the shop's own page (``agent.web.i18n``):
``?lang=sv|en`` (remembered in the same cookie), else the cookie, else the
browser's ``Accept-Language``, else Swedish.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from agent.web.i18n import DEFAULT_LANGUAGE, LANGUAGES

__all__ = ["Words"]

_WORDS: dict[str, dict[str, str]] = {
    "sv": {
        "html_lang": "sv",
        "title": "Kassabro – kedjans butiker",
        "shop_title": "Kassabro – butik {store}",
        "switch_to": "English",
        "switch_lang": "en",
        "summary": "{shops} butiker · {offline} offline · {attention} behöver en person",
        "shop": "Butik",
        "state": "Läge",
        "backlog": "Väntar",
        "dead": "Ej mottagna",
        "missing": "Saknade kvitton",
        "last_sale": "Senaste försäljning",
        "online": "Online",
        "online_since": "Online sedan {time}",
        "offline": "Offline",
        "offline_since": "Offline sedan {time}",
        "silent": "Tyst sedan {time}",
        "never": "aldrig",
        "unknown": "okänt",
        "needs_person": "Behöver en person",
        "all_well": "Allt väl",
        "problem_offline": "Offline sedan {time}",
        "problem_silent": "Ingen status sedan {time}",
        "problem_missing": "{n} kvitton saknas",
        "problem_dead": "{n} poster togs inte emot",
        "problem_dest": "{dest}: {state}",
        "state_online": "skickar",
        "state_offline": "nås inte",
        "state_degraded": "tar emot, men något gick fel",
        "state_paused": "pausad",
        "destinations": "Mottagare",
        "destination": "Mottagare",
        "pending": "väntar",
        "oldest": "äldsta",
        "tills": "Kassor",
        "till": "Kassa",
        "receipts": "Kvitton",
        "range": "Nummer",
        "missing_numbers": "Saknade nummer",
        "z_reports": "Z-rapporter",
        "z_no": "Z-nr",
        "z_held": "Kvitton här / enligt Z",
        "z_total": "Totalt",
        "last_sales": "Senaste försäljningar",
        "receipt": "Kvitto",
        "time": "Tid",
        "total": "Summa",
        "back": "Alla butiker",
        "none": "inga",
        "version": "version",
        "records": "{n} poster mottagna",
        "no_shops": "Inga butiker har hörts av ännu.",
        "not_found": "Ingen butik med det namnet.",
    },
    "en": {
        "html_lang": "en",
        "title": "Kassabro – the chain's shops",
        "shop_title": "Kassabro – shop {store}",
        "switch_to": "Svenska",
        "switch_lang": "sv",
        "summary": "{shops} shops · {offline} offline · {attention} need a person",
        "shop": "Shop",
        "state": "State",
        "backlog": "Waiting",
        "dead": "Dead letters",
        "missing": "Missing receipts",
        "last_sale": "Last sale",
        "online": "Online",
        "online_since": "Online since {time}",
        "offline": "Offline",
        "offline_since": "Offline since {time}",
        "silent": "Silent since {time}",
        "never": "never",
        "unknown": "unknown",
        "needs_person": "Needs a person",
        "all_well": "All well",
        "problem_offline": "Offline since {time}",
        "problem_silent": "No status since {time}",
        "problem_missing": "{n} receipts missing",
        "problem_dead": "{n} records were refused",
        "problem_dest": "{dest}: {state}",
        "state_online": "delivering",
        "state_offline": "unreachable",
        "state_degraded": "delivering, but something failed",
        "state_paused": "paused",
        "destinations": "Destinations",
        "destination": "Destination",
        "pending": "waiting",
        "oldest": "oldest",
        "tills": "Tills",
        "till": "Till",
        "receipts": "Receipts",
        "range": "Numbers",
        "missing_numbers": "Missing numbers",
        "z_reports": "Z-reports",
        "z_no": "Z no.",
        "z_held": "Receipts here / per Z",
        "z_total": "Total",
        "last_sales": "Last sales",
        "receipt": "Receipt",
        "time": "Time",
        "total": "Total",
        "back": "All shops",
        "none": "none",
        "version": "version",
        "records": "{n} records received",
        "no_shops": "No shop has been heard from yet.",
        "not_found": "No shop by that name.",
    },
}


class Words:
    """The words and formats of one language, with times in the chain's time zone.

    Args:
        lang: ``sv`` or ``en``.
        tz: the time zone times are shown in.
        now: the current time, for "today" and "yesterday".
    """

    def __init__(self, lang: str, tz: tzinfo, now: datetime) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._words = _WORDS[self.lang]
        self.tz = tz
        self.now = now

    def __call__(self, key: str, **values: Any) -> str:
        return self._words[key].format(**values)

    def number(self, n: int) -> str:
        text = f"{n:,}"
        return text.replace(",", "\u00a0") if self.lang == "sv" else text

    def time(self, moment: datetime | None) -> str:
        """``14:02`` today, ``28 nov 14:02`` / ``28 Nov 14:02`` another day; "never" for None."""
        if moment is None:
            return self("never")
        local = moment.astimezone(self.tz)
        if local.date() == self.now.astimezone(self.tz).date():
            return local.strftime("%H:%M:%S")
        months = (
            ("jan", "feb", "mar", "apr", "maj", "jun", "jul", "aug", "sep", "okt", "nov", "dec")
            if self.lang == "sv"
            else ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
        )
        return f"{local.day} {months[local.month - 1]} {local:%H:%M}"

    def state_word(self, state: str | None) -> str:
        return self._words.get(f"state_{state}", state or self("unknown"))
