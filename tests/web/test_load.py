"""The status server under many readers: kept answers stay right, a burst waits, a flood is told to come back.

Over real HTTP (uvicorn on 127.0.0.1, httpx). How fast it is belongs to
``bench/bench_status.py``; these tests check what a reader sees.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx
import pytest

from agent.web import app as web_app
from agent.web.app import CSP
from tests.web import shop


def live_part(html: str, opening: str, closing: str) -> str:
    """What is inside the element with ``id="live"``: from its opening tag to the closing tag that ends it."""
    start = html.index(">", html.index(opening)) + 1
    return html[start : html.rindex(closing)].strip()


def test_the_page_and_its_live_update_show_the_same_live_part(serve) -> None:
    app = serve(shop.with_dead_letters())
    for lang in ("sv", "en"):
        page = httpx.get(app.url + f"/?lang={lang}").text
        live = httpx.get(app.url + f"/live?lang={lang}").text
        part = live_part(page, '<main id="live"', "</main>")
        assert part == live_part(live, '<div id="live"', "</div>")
        assert 'class="dead-letter"' in part and 'class="card' in part


def test_a_kept_page_follows_a_change_in_the_shop(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_app, "PAGE_DATA_TTL_S", 0.0)  # every load reads the shop again
    state = shop.all_fine()
    app = serve(state)
    first = httpx.get(app.url + "/live?lang=en").text
    assert httpx.get(app.url + "/live?lang=en").text == first  # nothing changed: the same page
    state.update("hogia", state="offline", pending=7, oldest_pending_age_s=300.0, last_error="connection refused")
    changed = httpx.get(app.url + "/live?lang=en").text
    assert changed != first and "connection refused" in changed
    assert "connection refused" in httpx.get(app.url + "/?lang=en").text


def test_the_chart_is_drawn_again_when_the_minute_changes(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_app, "PAGE_DATA_TTL_S", 0.0)
    moments = [shop.NOW]
    state = shop.all_fine()
    state.points = [{"t": (shop.NOW - timedelta(minutes=30)).timestamp(), "pending": 0.0, "delivered": 40.0}]
    app = serve(state, clock=lambda: moments[-1])

    def summary() -> str:
        return re.search(r'<svg class="chart".*?</svg>\s*<p class="muted">([^<]*)</p>', httpx.get(
            app.url + "/live?lang=en").text, re.DOTALL).group(1)  # fmt: skip

    assert summary() == "40 sent, at most 0 waiting."
    state.points = [*state.points, {"t": shop.NOW.timestamp(), "pending": 12.0, "delivered": 2.0}]
    moments.append(shop.NOW + timedelta(minutes=1))
    assert summary() == "42 sent, at most 12 waiting."


def test_metrics_and_status_answers_kept_as_bytes_are_the_current_ones(serve) -> None:
    state = shop.offline()
    app = serve(state)
    assert httpx.get(app.url + "/api/status").json()["destinations"][0]["pending"] == 3
    state.update("hogia", pending=0, oldest_pending_age_s=None)
    assert httpx.get(app.url + "/api/status").json()["destinations"][0]["pending"] == 0
    state.metrics.delivered("hogia", 3)
    assert 'kassabro_delivered_records_total{destination="hogia"} 3.0' in httpx.get(app.url + "/metrics").text
    state.healthy = (False, "the outbox cannot be written: disk I/O error")
    down = httpx.get(app.url + "/healthz")
    assert (down.status_code, down.json()["reason"]) == (503, "the outbox cannot be written: disk I/O error")
    state.healthy = (True, "ok")
    assert httpx.get(app.url + "/healthz").json() == {"ok": True}


def test_a_burst_of_readers_waits_its_turn_and_every_one_is_answered(serve) -> None:
    app = serve(shop.offline(), pace_per_s=40, pace_burst=2)
    paths = ["/", "/live", "/api/status", "/metrics", "/healthz", "/static/status.css"] * 3

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            answers = await asyncio.gather(*(http.get(path) for path in paths))
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * len(paths)


def test_a_flood_beyond_what_may_wait_is_told_to_come_back(serve) -> None:
    app = serve(shop.all_fine(), pace_per_s=0.1, pace_burst=1, pace_queue=0)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            first = await http.get("/api/status")
            return [first, *await asyncio.gather(*(http.get("/api/status") for _ in range(4)))]

    first, *rest = asyncio.run(flood())
    assert first.status_code == 200
    for answer in rest:
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["content-security-policy"] == CSP
        assert answer.json()["error"] == "busy"
