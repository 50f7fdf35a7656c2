"""What the page says for each state, in Swedish and English (no browser needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agent.web import view
from agent.web.i18n import Translator, choose_language
from tests.web import shop
from tests.web.conftest import STOCKHOLM
from tests.web.shop import NOW, destination, iso


def words(status: dict, lang: str = "sv") -> list[str]:
    head = view.headline(status, Translator(lang, STOCKHOLM, NOW))
    return [head.main.text, *(n.text for n in head.notes)]


def status_of(*dests: dict, **extra) -> dict:
    return {"destinations": list(dests), **extra}


def test_all_sent() -> None:
    assert words(status_of(destination("hogia", "hogia"))) == ["Allt är skickat"]
    assert words(status_of(destination("hogia", "hogia")), "en") == ["All sent"]


def test_one_destination_down_names_it_not_the_internet() -> None:
    status = status_of(
        destination(
            "hogia", "hogia", state="offline", pending=1, last_success_at=iso(NOW - timedelta(minutes=3, seconds=10))
        ),
        destination("sharespine", "sharespine"),
    )
    assert words(status) == ["1 post väntar – hogia nås inte sedan 14:16"]
    assert words(status, "en") == ["1 record waiting – hogia unreachable since 14:16"]


def test_local_sie_failing_is_not_the_internet() -> None:
    status = status_of(
        destination("hogia", "hogia", state="offline", pending=2, offline_since=iso(NOW - timedelta(hours=25))),
        destination("bokforing", "sie", state="offline", pending=2, offline_since=iso(NOW - timedelta(hours=1))),
    )
    assert words(status, "en") == ["2 records waiting – hogia and bokforing unreachable since 25 Nov 13:20"]


def test_paused_degraded_sending_and_problems() -> None:
    status = status_of(
        destination("hogia", "hogia", state="paused", pending=4, pending_by_type={"sale": 0, "stock_movement": 4}),
        destination("webhook", "http", state="degraded", pending=1, last_error="timeout"),
        destination("sharespine", "sharespine", pending=2),
        problems=["the outbox was corrupt and was moved aside to outbox.db.corrupt-1"],
    )
    assert words(status, "en") == [
        "hogia is paused – 4 stock changes waiting",
        "webhook is receiving, but something went wrong – see its card below",
        "Problem: the outbox was corrupt and was moved aside to outbox.db.corrupt-1",
    ]
    earlier = status_of(destination("webhook", "http", state="degraded"))
    assert words(earlier, "en") == ["All sent", "webhook has refused records since the start – everything is sent now"]
    sending = status_of(
        destination("sharespine", "sharespine", pending=2, pending_by_type={"sale": 2, "stock_movement": 0})
    )
    assert words(sending) == ["Skickar 2 försäljningar"]


def test_no_destinations_is_said_plainly() -> None:
    assert words(status_of(), "en") == ["No destinations are configured"]


def test_cards_say_times_in_words() -> None:
    state = shop.offline()
    status = {"destinations": state.destinations}
    card = view.cards(status, Translator("sv", STOCKHOLM, NOW))[0]
    assert (card.state_label, card.pending, card.oldest, card.last_success, card.next_attempt) == (
        "Nås inte",
        "3",
        "18 min",
        "14:01",
        "om 1 min",
    )
    assert (
        view.cards({"destinations": [destination("x", "sie", state="weird")]}, Translator("en", STOCKHOLM, NOW))[
            0
        ].state
        == "degraded"
    )


@pytest.mark.parametrize(
    ("seconds", "sv", "en"),
    [
        (5, "5 s", "5 s"),
        (125, "2 min", "2 min"),
        (3 * 3600 + 300, "3 h 5 min", "3 h 5 min"),
        (3 * 86400 + 7200, "3 dygn 2 h", "3 d 2 h"),
    ],
)
def test_durations(seconds: float, sv: str, en: str) -> None:
    assert Translator("sv").duration(seconds) == sv
    assert Translator("en").duration(seconds) == en


@pytest.mark.parametrize(
    ("query", "cookie", "header", "expected"),
    [
        (None, None, None, "sv"),
        (None, None, "en-US,en;q=0.9", "en"),
        (None, None, "de-DE,de;q=0.9,en;q=0.5,sv;q=0.4", "en"),
        (None, None, "fr, sv;q=0.1, en;q=0", "sv"),
        (None, "en", "sv-SE", "en"),
        ("sv", "en", "en", "sv"),
        ("xx", None, "en", "en"),
    ],
)
def test_language_choice(query, cookie, header, expected) -> None:
    assert choose_language(query, cookie, header) == expected


def test_numbers_and_sizes_read_the_local_way() -> None:
    assert Translator("sv").number(12345) == "12\u00a0345"
    assert Translator("en").number(12345) == "12,345"
    assert Translator("sv").size(3_450_000) == "3,5 MB"
    assert Translator("en").size(512) == "512 B"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("POST https://h/api: ConnectError: All connection attempts failed", "network"),
        ("Could not connect (connection refused)", "network"),
        ("POST https://h/api: HTTP 503: Service Unavailable", "network"),
        ("[Errno -3] Temporary failure in name resolution", "network"),
        ("[Errno -2] Name or service not known", "dns"),
        ("POST https://h/api: HTTP 401: Hogia refused our credentials; check the token in the config", "login"),
        ("POST https://h/api: HTTP 404: no such path", "address"),
        ("HTTP 422: article 7310865000000 does not exist", "refused"),
        ("something nobody foresaw", ""),
    ],
)
def test_every_last_error_has_a_class(raw: str, kind: str) -> None:
    assert view.error_class(raw) == kind


def test_a_configuration_error_is_never_internet_down() -> None:
    down = {"state": "offline", "pending": 2, "offline_since": iso(NOW - timedelta(minutes=5))}
    network = status_of(
        destination("hogia", "hogia", **down, last_error="ConnectError: All connection attempts failed"),
        destination("sharespine", "sharespine", **down, last_error="ConnectError: timed out"),
    )
    assert "internet nere" in words(network)[0]
    for wrong in ("[Errno -2] Name or service not known", "HTTP 401: refused our credentials", "HTTP 404: nothing"):
        status = status_of(
            destination("hogia", "hogia", **down, last_error=wrong),
            destination("sharespine", "sharespine", **down, last_error="ConnectError: timed out"),
        )
        assert "internet" not in words(status)[0] and "internet" not in words(status, "en")[0].lower()
