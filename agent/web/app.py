"""The status web app: the page, ``/api/status``, ``/metrics``, ``/healthz`` and actions.

``create_status_app(provider)`` returns a Starlette app; the agent serves it
with uvicorn on ``[status] listen``. Everything it shows comes from the
``StatusProvider`` (``agent.web.provider``); everything it serves is in this
package, so the page works with the internet down.

Routes:

- ``GET /``: the page (Jinja2, autoescaped), Swedish or English.
- ``GET /live``: the page's live part alone; ``static/status.js`` fetches it
  every few seconds and swaps it in (one rendering path, no JSON-to-DOM code).
- ``GET /api/status``, ``GET /metrics``, ``GET /healthz``: contract §4.
- ``POST /actions``: the page's form (admin token in the body).
- ``POST /api/dead-letters/retry`` (JSON ``{"destination": str|null, "ids":
  [str]|null}``, body optional), ``POST /api/destinations/{name}/pause`` and
  ``.../resume``: the same actions for scripts, with ``Authorization: Bearer``.

Why the form is safe against cross-site request forgery: the page holds no
ambient credential (no session cookie, no basic auth), so a forged request
carries nothing that authorises it; the admin token must be in the form body,
and another site does not know it. As a second fence, a form post whose
browser says it came from another site (``Sec-Fetch-Site`` other than
``same-origin``, or an ``Origin`` that is not this host) is refused before the
token is looked at. The token is compared with ``hmac.compare_digest``, never
shown, never logged. Without an admin token configured every action answers
403 and the page shows no buttons.

Every answer carries the security headers in ``SECURITY_HEADERS``; the CSP
allows no inline script and no inline style (the SVG chart uses classes).

Why the status server is cheap and paced: it shares the agent's event loop
and CPU with ingest, and a till must never wait because a dozen phones watch
the page or someone holds F5. So every answer is drawn at most once per
moment and then served as kept bytes: the page's data is read once per
``PAGE_DATA_TTL_S`` (one combined read), the live part is drawn once per read
and language and shared by ``/`` and ``/live``, the chart once per minute
(its data is per minute), ``/api/status``'s JSON once per status body (the
agent keeps one for half a second), ``/metrics`` once per change
(``Metrics.render``). And ``RequestPacer`` answers at most
``PACE_PER_S`` requests a second after a burst of ``PACE_BURST``: a reader
beyond that waits its turn (costing no CPU while it waits) instead of
taking CPU from ingest; a flood beyond ``PACE_QUEUE`` waiting is answered 503.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import agent
from agent.metrics import CONTENT_TYPE
from agent.outbox.types import DeadLetter
from agent.sources.tokens import FailedAuthLimit
from agent.web import view
from agent.web.chart import render_chart, slot_history
from agent.web.i18n import LANG_COOKIE, LANGUAGES, Translator, choose_language
from agent.web.provider import Health, StatusProvider

log = logging.getLogger("agent.web")

HERE = Path(__file__).parent
PROVIDER_TIMEOUT_S = 5.0
"""How long a page or API answer waits for the agent before answering 503."""
REFRESH_S = 5
"""How often the page's script fetches the live part, in seconds (``?refresh=N`` overrides)."""
MAX_FORM_BYTES = 16 * 1024
PAGE_DATA_TTL_S = 1.0
"""How long page loads share one read of the agent's state (see ``_Pages._page_data``)."""
PACE_PER_S = 100.0
"""Requests a second the status server answers at most, after a burst (``RequestPacer``).

Ten times what a shop's readers send: 50 open pages refreshing every 5 s are
10 a second; a Prometheus scrape every 15 s is one in 15 s."""
PACE_BURST = 50
"""Requests answered at once before pacing starts: a reload storm of a dozen browsers."""
PACE_QUEUE = 500
"""Requests that may wait for their turn; beyond this a request is answered 503 at once."""
DEAD_LETTERS_SHOWN = 100
RECENT_SHOWN = 20

_BOOK_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\.si")
"""A file of the books as the runs name them: no path, no hidden file."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)

T = TypeVar("T")


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every answer, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestPacer:
    """ASGI middleware: at most ``rate`` requests a second after a burst of ``burst``; the rest wait.

    A generic cell rate algorithm: each request is given the next free slot
    on a grid of ``1 / rate`` seconds, ``burst`` slots may be taken at once,
    and a request whose slot is in the future sleeps until then. Sleeping
    costs the event loop nothing, so a client asking as fast as it is
    answered is slowed down to ``rate`` instead of taking ingest's CPU.
    More than ``queue`` waiting requests means a flood: answered 503 with
    ``Retry-After`` at once rather than kept in memory.
    """

    def __init__(self, app: ASGIApp, *, rate: float, burst: int, queue: int) -> None:
        self.app = app
        self.interval = 1.0 / rate
        self.tolerance = max(0, burst - 1) * self.interval
        self.queue = queue
        self.waiting = 0
        self._next = 0.0  # the theoretical arrival time of the next request (monotonic seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        due = max(self._next, now)
        wait = due - self.tolerance - now
        if wait > 0:
            if self.waiting >= self.queue:
                await _busy(send)
                return
            self._next = due + self.interval
            self.waiting += 1
            try:
                await asyncio.sleep(wait)
            finally:
                self.waiting -= 1
        else:
            self._next = due + self.interval
        await self.app(scope, receive, send)


async def _busy(send: Send) -> None:
    body = b'{"error":"busy","reason":"too many status requests at once; try again in a second"}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ActionRefused(Exception):
    """An action that must not run; ``status`` and ``message_key`` say why."""

    def __init__(self, status: int, message_key: str, log_reason: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(log_reason)
        self.status = status
        self.message_key = message_key
        self.log_reason = log_reason
        self.retry_after_s = retry_after_s


def create_status_app(
    provider: StatusProvider,
    *,
    tz: tzinfo | None = None,
    now: Callable[[], datetime] | None = None,
    pace_per_s: float = PACE_PER_S,
    pace_burst: int = PACE_BURST,
    pace_queue: int = PACE_QUEUE,
    auth_limit: FailedAuthLimit | None = None,
) -> Starlette:
    """The status web app over ``provider``.

    Args:
        provider: the running agent (see ``agent.web.provider.StatusProvider``).
        tz: the time zone the page shows times in; None means the machine's
            local time (a shop's Pi runs in the shop's time zone).
        now: the current time; tests pass their own.
        pace_per_s: requests a second answered at most after ``pace_burst``
            (see ``RequestPacer``).
        pace_burst: requests answered at once before pacing starts.
        pace_queue: requests that may wait for their turn; more are answered 503.
        auth_limit: wrong admin tokens allowed per address (``FailedAuthLimit``'s defaults unless given).
    """
    pages = _Pages(provider, tz=tz, now=now or (lambda: datetime.now(UTC)), auth_limit=auth_limit)
    routes = [
        Route("/", pages.page, methods=["GET", "HEAD"]),
        Route("/live", pages.live, methods=["GET", "HEAD"]),
        Route("/api/status", pages.api_status, methods=["GET", "HEAD"]),
        Route("/metrics", pages.metrics, methods=["GET", "HEAD"]),
        Route("/healthz", pages.healthz, methods=["GET", "HEAD"]),
        Route("/actions", pages.form_action, methods=["POST"]),
        Route("/api/dead-letters/retry", pages.api_retry, methods=["POST"]),
        Route("/api/destinations/{name}/pause", pages.api_pause, methods=["POST"]),
        Route("/api/destinations/{name}/resume", pages.api_resume, methods=["POST"]),
        Route("/books/download", pages.form_download, methods=["POST"]),
        Route("/api/books/{name}/{file}", pages.api_download, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ClientDisconnect: _client_gone})
    app.add_middleware(RequestPacer, rate=pace_per_s, burst=pace_burst, queue=pace_queue)
    app.add_middleware(SecurityHeaders)  # added last: outside the pacer, so its 503 has the headers too
    return app


class _Pages:
    """The handlers, sharing the provider, the templates and the clock."""

    def __init__(
        self,
        provider: StatusProvider,
        *,
        tz: tzinfo | None,
        now: Callable[[], datetime],
        auth_limit: FailedAuthLimit | None = None,
    ) -> None:
        self.provider = provider
        self.tz = tz
        self.now = now
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["action_value"] = _action_value
        self._data_lock = asyncio.Lock()
        self._data: tuple[float, list[Any]] | None = None
        self._html: dict[tuple[str, str, int, bool], tuple[float, bytes]] = {}
        self._live: dict[str, tuple[float, dict[str, Any], Markup]] = {}
        self._charts: dict[str, tuple[int, tuple[Markup | None, str]]] = {}
        self._status_json: tuple[dict[str, Any], bytes] | None = None
        self._observed: dict[str, Any] | None = None
        self._health_json: dict[Health, bytes] = {}
        self._flash_key = secrets.token_bytes(32)
        self._auth_limit = auth_limit or FailedAuthLimit()
        """Wrong admin tokens per address, as for the till's tokens: guessing stays a few tries a second."""
        """Signs the "done" line's redirect: only an outcome this server produced is shown (a link cannot make one up)."""

    # -- the page -------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        lang = self._language(request)
        flash = None
        status_code = 200
        if request.query_params.get("msg"):
            flash = await self._flash(request, lang)
        response = await self._render(request, "page.html", lang, flash=flash, status_code=status_code)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
        return response

    async def live(self, request: Request) -> Response:
        return await self._render(request, "live_fragment.html", self._language(request))

    async def _render(
        self,
        request: Request,
        template: str,
        lang: str,
        *,
        flash: view.Message | None = None,
        status_code: int = 200,
        refresh_s: int | None = None,
    ) -> Response:
        t = Translator(lang, self.tz, self.now())
        refresh_s = refresh_s or _refresh_s(request.query_params.get("refresh"))
        # Page loads within PAGE_DATA_TTL_S of each other show the same data;
        # without a flash line they are the same HTML, so it is drawn once.
        secure = _secure(request)
        cache_key = (template, lang, refresh_s, secure)
        try:
            stamp, data = await self._page_data()
        except Exception as exc:
            log.warning("status page: the agent did not answer: %s", _describe(exc))
            context = self._unavailable_context(t)
            live = self._draw_live(t, context)
            if status_code == 200:
                status_code = 503
        else:
            cached = self._html.get(cache_key)
            if flash is None and cached is not None and cached[0] == stamp:
                return _html(cached[1], status_code)
            kept = self._live.get(lang)
            if kept is not None and kept[0] == stamp:
                _, context, live = kept
            else:
                context = self._context(t, *data, chart=await self._chart(t))
                live = self._draw_live(t, context)
                self._live[lang] = (stamp, context, live)
        html = (
            self.env.get_template(template)
            .render(
                t=t,
                lang=lang,
                flash=flash,
                refresh_s=refresh_s,
                default_refresh_s=REFRESH_S,
                live=live,
                **{
                    **context,
                    # The token is never typed into a form a LAN client reached over plain HTTP.
                    "actions_enabled": context["actions_enabled"] and secure,
                    "admin_needs_tls": context["actions_enabled"] and not secure,
                },
            )
            .encode()
        )
        if flash is None and status_code == 200:
            self._html[cache_key] = (stamp, html)
        return _html(html, status_code)

    def _draw_live(self, t: Translator, context: dict[str, Any]) -> Markup:
        """The live part (``live.html``): drawn once per read and language, shared by ``/`` and ``/live``."""
        return Markup(self.env.get_template("live.html").render(t=t, **context))

    async def _chart(self, t: Translator) -> tuple[Markup | None, str]:
        """The chart and its one-line summary, drawn once a minute per language (its data is per minute)."""
        minute = int(t.now.timestamp() // 60)
        kept = self._charts.get(t.lang)
        if kept is not None and kept[0] == minute:
            return kept[1]
        chart_data = slot_history(await self._call(self.provider.history()), t.now.timestamp())
        drawn = (
            render_chart(chart_data, t),
            t("chart_summary", delivered=t.number(chart_data.delivered_total), peak=t.number(chart_data.peak_pending)),
        )
        self._charts[t.lang] = (minute, drawn)
        return drawn

    def _base_context(self, t: Translator) -> dict[str, Any]:
        return {
            "store_id": self.provider.store_id,
            "version": agent.__version__,
            "actions_enabled": bool(self.provider.admin_token),
            "tls_fingerprint": getattr(self.provider, "tls_fingerprint", None),
            "updated": t.now.astimezone(self.tz).strftime("%H:%M:%S"),
        }

    def _unavailable_context(self, t: Translator) -> dict[str, Any]:
        """What the page says when the agent did not answer."""
        return {
            **self._base_context(t),
            "unavailable": True,
            "head": view.Headline(view.Message("bad", t("unavailable"), t("unavailable_detail"))),
            "cards": [],
            "chart": None,
            "chart_summary": "",
            "ingest": {"accepted": "–", "rejected": "–", "last_received": "–", "outbox": "–"},
            "dead": [],
            "dead_total": "–",
            "records": [],
            "tills": [],
            "books": [],
            "has_books": False,
            "uptime": "",
        }

    def _context(
        self,
        t: Translator,
        status: dict[str, Any],
        letters: list[DeadLetter],
        records: list[dict[str, Any]],
        books: list[dict[str, Any]] | None = None,
        *,
        chart: tuple[Markup | None, str],
    ) -> dict[str, Any]:
        """Everything the templates need, in words of ``t``'s language."""
        ingest = status.get("ingest") or {}
        outbox = status.get("outbox") or {}
        return {
            **self._base_context(t),
            "store_id": status.get("store_id") or self.provider.store_id,
            "version": status.get("version") or agent.__version__,
            "unavailable": False,
            "head": view.headline(status, t),
            "cards": view.cards(status, t),
            "chart": chart[0],
            "chart_summary": chart[1],
            "ingest": {
                "accepted": t.number(ingest.get("accepted_total") or 0),
                "rejected": t.number(ingest.get("rejected_total") or 0),
                "last_received": t.clock(ingest.get("last_received_at")),
                "outbox": t(
                    "outbox_value",
                    records=t.number(outbox.get("records") or 0),
                    size=t.size(outbox.get("bytes")),
                ),
            },
            "dead": view.dead_letter_rows(letters, t),
            "dead_total": t.number(sum(int(d.get("dead_letters") or 0) for d in status.get("destinations") or [])),
            "records": view.record_rows(
                records, t, reads_only={d.get("name") for d in status.get("destinations") or [] if d.get("reads_only")}
            ),
            "tills": view.till_rows(status, t),
            "register": _register_row(status.get("register"), t),
            "books": view.book_rows(books or [], t),
            "has_books": bool(books),
            "uptime": t.duration(status.get("uptime_s")) if status.get("uptime_s") is not None else "",
        }

    async def _page_data(self) -> tuple[float, list[Any]]:
        """The provider's answers for the page, shared by every page load for a moment.

        Each read goes through the outbox's one owner thread, the same thread
        that commits the till's records; many browsers (or a reload storm)
        must not slow ingest down. Concurrent loads wait for one read; an
        action clears the copy so its result shows at once.

        Returns:
            ``(stamp, [status, dead letters, recent records])``; the stamp
            tells cached HTML drawn from this data apart from older. (The
            chart's history is read once a minute, in ``_chart``.)
        """
        async with self._data_lock:
            if self._data is not None and time.monotonic() - self._data[0] < PAGE_DATA_TTL_S:
                return self._data
            books = getattr(self.provider, "books", None)  # the SIE files, when the provider keeps books
            data = await self._call(
                _gather(
                    self.provider.status(),
                    self.provider.dead_letters(DEAD_LETTERS_SHOWN),
                    self.provider.recent_records(RECENT_SHOWN),
                    books() if books is not None else _nothing(),
                )
            )
            self._observe(data[0])
            self._data = (time.monotonic(), data)
            return self._data

    def _observe(self, status: dict[str, Any]) -> None:
        """Hand a status body to the metrics' gauges, once per body (the agent keeps one for a moment)."""
        if status is not self._observed:
            self.provider.metrics.observe_status(status)
            self._observed = status

    async def _flash(self, request: Request, lang: str) -> view.Message | None:
        """The "done" line after an action's redirect; only known messages, known names."""
        t = Translator(lang, self.tz, self.now())
        msg = request.query_params.get("msg")
        offered = request.query_params.get("sig", "")
        if not hmac.compare_digest(
            offered.encode("utf-8", "replace"), self._flash_signature(request.query_params).encode()
        ):
            return None  # a link someone wrote, or from before a restart: no made-up "done" line
        if msg == "retried":
            try:
                n = int(request.query_params.get("n", "0"))
            except ValueError:
                return None
            return view.Message("ok", t("msg_retried", what=t.count("record", max(0, n))))
        if msg in ("paused", "resumed"):
            dest = request.query_params.get("dest", "")
            try:
                status = await self._call(self.provider.status())
            except Exception:
                return None
            names = {str(d.get("name")) for d in status.get("destinations") or []}
            if dest in names:
                return view.Message("ok", t(f"msg_{msg}", dest=dest))
        return None

    def _flash_signature(self, query: Any) -> str:
        """HMAC of the message's fields (``msg``, ``n``, ``dest``) with this run's key."""
        fields = "\n".join(f"{name}={query.get(name, '')}" for name in ("msg", "n", "dest"))
        return hmac.new(self._flash_key, fields.encode("utf-8", "backslashreplace"), "sha256").hexdigest()[:32]

    def _language(self, request: Request) -> str:
        return choose_language(
            request.query_params.get("lang"),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("accept-language"),
        )

    # -- machine endpoints ----------------------------------------------------

    async def api_status(self, request: Request) -> Response:
        try:
            status = await self._call(self.provider.status())
        except Exception as exc:
            log.warning("/api/status: the agent did not answer: %s", _describe(exc))
            return _json({"error": "unavailable", "reason": _describe(exc)}, 503)
        self._observe(status)
        # The same body (the agent keeps one for half a second) is encoded once.
        kept = self._status_json
        if kept is None or kept[0] is not status:
            kept = self._status_json = (status, _encode_json(status))
        return _json_bytes(kept[1], 200)

    async def metrics(self, request: Request) -> Response:
        # Refresh the gauges' snapshot first, so a scrape sees the outbox as it is now.
        try:
            self._observe(await self._call(self.provider.status()))
        except Exception as exc:
            log.warning("/metrics: serving the last known outbox state: %s", _describe(exc))
        return Response(self.provider.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        try:
            health = await self._call(self.provider.health())
        except Exception as exc:
            health = Health(False, f"the health check did not answer: {_describe(exc)}")
        body = self._health_json.get(health)
        if body is None:
            if len(self._health_json) > 16:  # reasons may carry details; keep only a few
                self._health_json.clear()
            body = _encode_json({"ok": True} if health.ok else {"ok": False, "reason": health.reason})
            self._health_json[health] = body
        return _json_bytes(body, 200 if health.ok else 503)

    # -- actions --------------------------------------------------------------

    async def form_action(self, request: Request) -> Response:
        """The page's form: same-origin check, admin token from the body, then act."""
        client = _client(request)
        form, lang = await self._read_form(request)
        action = _field(form, "action")
        refresh_s = _refresh_s(_field(form, "refresh"))
        try:
            self._check_form(request, form)
            do, destination, ids = _parse_action(action)
            result = await self._perform(do, destination, ids, via="form", client=client)
        except ActionRefused as refused:
            log.warning("action refused: %s (action=%r client=%s via=form)", refused.log_reason, action, client)
            t = Translator(lang, self.tz, self.now())
            flash = view.Message("bad", t(refused.message_key))
            return await self._render(
                request, "page.html", lang, flash=flash, status_code=refused.status, refresh_s=refresh_s
            )
        query: dict[str, str] = {"lang": lang}
        if refresh_s != REFRESH_S:
            query["refresh"] = str(refresh_s)
        if do == "retry":
            query.update(msg="retried", n=str(result))
        else:
            query.update(msg="paused" if do == "pause" else "resumed", dest=destination or "")
        query["sig"] = self._flash_signature(query)
        return RedirectResponse(f"./?{urlencode(query)}#summary", status_code=303)

    async def _read_form(self, request: Request) -> tuple[dict[str, list[str]] | None, str]:
        """The page's posted form (None when larger than ``MAX_FORM_BYTES``) and the language to answer in."""
        body = await _read_limited(request, MAX_FORM_BYTES)
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if body is not None else None
        lang = _field(form, "lang")
        return form, lang if lang in LANGUAGES else self._language(request)

    def _check_form(self, request: Request, form: dict[str, list[str]] | None) -> None:
        """What every form post must pass before it acts: its size, same origin, the channel, the admin token.

        Raises:
            ActionRefused: the first check that fails.
        """
        if form is None:
            raise ActionRefused(413, "err_bad_action", "form too large")
        _check_same_origin(request)
        _check_channel(request)
        self._check_token(_field(form, "token"), _client(request))

    async def form_download(self, request: Request) -> Response:
        """A SIE file from the page's Bokföring panel: same-origin check and the admin token, as for actions."""
        form, lang = await self._read_form(request)
        destination, _, name = _field(form, "file").partition("/")
        try:
            self._check_form(request, form)
            return await self._book_file(destination, name, request)
        except ActionRefused as refused:
            log.warning(
                "download refused: %s (file=%s/%s client=%s)", refused.log_reason, destination, name, _client(request)
            )
            t = Translator(lang, self.tz, self.now())
            return await self._render(
                request,
                "page.html",
                lang,
                flash=view.Message("bad", t(refused.message_key)),
                status_code=refused.status,
            )

    async def api_download(self, request: Request) -> Response:
        """``GET /api/books/{destination}/{file}`` with ``Authorization: Bearer`` and the admin token."""
        try:
            self._check_bearer(request)
            return await self._book_file(request.path_params["name"], request.path_params["file"], request)
        except ActionRefused as refused:
            return self._api_refused(request, refused, "download")

    async def _book_file(self, destination: str, name: str, request: Request) -> Response:
        """The file's bytes as an attachment, or ``ActionRefused`` (404 for anything not a file of the books)."""
        fetch = getattr(self.provider, "book_file", None)
        if fetch is None or not _BOOK_FILE.fullmatch(name):
            raise ActionRefused(404, "err_no_file", f"no such file {name!r}")
        try:
            content = await self._call(fetch(destination, name))
        except (KeyError, FileNotFoundError) as exc:
            raise ActionRefused(404, "err_no_file", f"no such file {destination}/{name}") from exc
        log.info("download of %s/%s (client=%s)", destination, name, _client(request))
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

    async def api_retry(self, request: Request) -> Response:
        destination: str | None = None
        ids: list[str] | None = None
        try:
            self._check_bearer(request)
            body = await _read_limited(request, MAX_FORM_BYTES)
            if body is None:
                raise ActionRefused(413, "err_bad_action", "body too large")
            if body.strip():
                _, destination, ids = _parse_retry_json(body)
            count = await self._perform("retry", destination, ids, via="api", client=_client(request))
        except ActionRefused as refused:
            return self._api_refused(request, refused, "retry")
        return _json({"retried": count}, 200)

    async def api_pause(self, request: Request) -> Response:
        return await self._api_pause(request, True)

    async def api_resume(self, request: Request) -> Response:
        return await self._api_pause(request, False)

    async def _api_pause(self, request: Request, paused: bool) -> Response:
        name = request.path_params["name"]
        do = "pause" if paused else "resume"
        try:
            self._check_bearer(request)
            await self._perform(do, name, None, via="api", client=_client(request))
        except ActionRefused as refused:
            return self._api_refused(request, refused, do)
        return _json({"destination": name, "paused": paused}, 200)

    def _api_refused(self, request: Request, refused: ActionRefused, action: str) -> Response:
        log.warning("action refused: %s (action=%s client=%s via=api)", refused.log_reason, action, _client(request))
        error = {
            401: "unauthorized",
            403: "tls_required" if refused.message_key == "err_plain_http" else "actions_disabled",
            404: "not_found" if refused.message_key == "err_no_file" else "unknown_destination",
            413: "too_large",
            422: "validation",
            429: "too_many_attempts",
            503: "unavailable",
        }.get(refused.status, "refused")
        headers = {"WWW-Authenticate": 'Bearer realm="kassabro"'} if refused.status == 401 else None
        if refused.retry_after_s is not None:
            headers = {"Retry-After": str(refused.retry_after_s)}
        return _json({"error": error, "reason": refused.log_reason}, refused.status, headers)

    def _check_bearer(self, request: Request) -> None:
        _check_channel(request)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() != "bearer":
            raise ActionRefused(401, "err_bad_token", "Authorization is not a Bearer token")
        self._check_token(token.strip(), _client(request))

    def _check_token(self, offered: str, client: str) -> None:
        """Refuse unless an admin token is configured and ``offered`` equals it.

        An address that sent wrong tokens ``burst`` times in a row is answered
        429 until its bucket refills (``FailedAuthLimit``), before the token is
        read; a right token never drains it, and other addresses are not slowed.
        """
        expected = self.provider.admin_token
        if not expected:
            raise ActionRefused(403, "err_disabled", "no admin token is configured")
        if self._auth_limit.blocked(client):
            raise ActionRefused(
                429,
                "err_too_many",
                "too many wrong admin tokens from this address",
                retry_after_s=self._auth_limit.retry_after_s(client),
            )
        if not offered:
            self._auth_limit.failed(client)
            raise ActionRefused(401, "err_no_token", "no admin token given")
        if not hmac.compare_digest(offered.encode("utf-8"), expected.encode("utf-8")):
            self._auth_limit.failed(client)
            raise ActionRefused(401, "err_bad_token", "wrong admin token")

    async def _perform(self, do: str, destination: str | None, ids: list[str] | None, *, via: str, client: str) -> int:
        """Run one authorised action and log it; returns the retried count (0 for pause)."""
        try:
            if do == "retry":
                result = await self._call(self.provider.retry_dead_letters(destination, ids))
            else:
                if not destination:
                    raise ActionRefused(422, "err_bad_action", f"{do} needs a destination")
                await self._call(self.provider.set_paused(destination, do == "pause"))
                result = 0
        except KeyError as exc:
            raise ActionRefused(404, "err_unknown_dest", f"unknown destination {exc}") from exc
        except ActionRefused:
            raise
        except Exception as exc:
            raise ActionRefused(503, "err_unavailable", f"the agent failed: {_describe(exc)}") from exc
        self._data = None
        log.info(
            "action %s: destination=%s ids=%s result=%s (via=%s client=%s)",
            do,
            destination or "all",
            ",".join(ids) if ids else "all",
            result,
            via,
            client,
        )
        return result

    async def _call(self, awaitable: Awaitable[T]) -> T:
        return await asyncio.wait_for(awaitable, PROVIDER_TIMEOUT_S)


async def _nothing() -> list[Any]:
    return []


async def _gather(*awaitables: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*awaitables))


def _action_value(do: str, destination: str | None = None, record_id: str | None = None) -> str:
    """A form button's ``action`` value: the action and its arguments, URL-encoded."""
    fields = {"do": do}
    if destination is not None:
        fields["destination"] = destination
    if record_id is not None:
        fields["id"] = record_id
    return urlencode(fields)


class Action(NamedTuple):
    """What a button or the retry API asks for: ``retry``, ``pause`` or ``resume``, and of what."""

    do: str
    destination: str | None
    ids: list[str] | None


def _parse_action(value: str) -> Action:
    """The ``Action`` a button's value names; refuses anything unknown."""
    fields = parse_qs(value, keep_blank_values=False)
    do = fields.get("do", [""])[0]
    if do not in ("retry", "pause", "resume"):
        raise ActionRefused(422, "err_bad_action", f"unknown action {value!r}")
    destination = fields.get("destination", [None])[0]
    record_id = fields.get("id", [None])[0]
    if do != "retry" and not destination:
        raise ActionRefused(422, "err_bad_action", f"{do} needs a destination")
    return Action(do, destination, [record_id] if record_id else None)


def _parse_retry_json(body: bytes) -> Action:
    """The retry the API's JSON body asks for: ``destination`` and ``ids``, each checked by name."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ActionRefused(422, "err_bad_action", f"body: not JSON ({exc})") from exc
    except RecursionError:  # [[[[... 15,000 deep: a 422, not a 500 with a traceback
        raise ActionRefused(422, "err_bad_action", "body: the JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise ActionRefused(422, "err_bad_action", "body: must be a JSON object")
    unknown = sorted(set(data) - {"destination", "ids"})
    if unknown:
        raise ActionRefused(422, "err_bad_action", f"{unknown[0]}: unknown field")
    destination = data.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise ActionRefused(422, "err_bad_action", "destination: must be a string or null")
    ids = data.get("ids")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        raise ActionRefused(422, "err_bad_action", "ids: must be a list of strings or null")
    return Action("retry", destination, ids)


def _check_same_origin(request: Request) -> None:
    """Refuse a form post a browser marks as coming from another site.

    ``Sec-Fetch-Site`` is trusted first: with ``Referrer-Policy: no-referrer``
    a browser sends ``Origin: null`` even for our own form, so ``Origin`` alone
    cannot tell. Clients that send neither (curl) pass on to the token check.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site != "same-origin":
            raise ActionRefused(403, "err_cross_site", f"Sec-Fetch-Site is {fetch_site!r}")
        return
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            raise ActionRefused(403, "err_cross_site", f"Origin {origin!r} is not {own!r}")


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that closed mid-body: nobody to answer, nothing done; one line, never a traceback.

    A browser tab closed during a post, or a scanner hanging up on purpose, is
    not an error of the agent's; a traceback for each would flood the log.
    """
    log.info("%s %s: the client closed the connection before sending its body", request.method, request.url.path)
    return Response(status_code=400)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _field(form: dict[str, list[str]] | None, name: str) -> str:
    """A posted form's first value of ``name``; "" when absent (or the form was refused unread)."""
    return (form or {}).get(name, [""])[0]


def _refresh_s(value: str | None) -> int:
    """Seconds between live updates: ``?refresh=N`` (1..300, e.g. for a wall screen), else ``REFRESH_S``."""
    try:
        return min(300, max(1, int(value))) if value else REFRESH_S
    except ValueError:
        return REFRESH_S


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def _secure(request: Request) -> bool:
    """Over TLS, or from the Pi itself: the only ways the admin token may travel (contract §2)."""
    if request.url.scheme == "https":
        return True
    try:
        return ipaddress.ip_address(_client(request)).is_loopback
    except ValueError:
        return False


def _check_channel(request: Request) -> None:
    if not _secure(request):
        raise ActionRefused(403, "err_plain_http", "admin actions need HTTPS or the Pi itself (loopback)")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {PROVIDER_TIMEOUT_S:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    answer = JSONResponse(body, status_code=status, headers=headers)
    answer.headers["Cache-Control"] = "no-store"
    return answer


def _encode_json(body: Any) -> bytes:
    """JSON exactly as ``JSONResponse`` writes it, for answers kept as bytes.

    ``Response.body`` is typed ``bytes | memoryview``; a kept memoryview would
    compare and hash unlike bytes, so the copy is made here once.
    """
    return bytes(JSONResponse(body).body)


def _json_bytes(body: bytes, status: int) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers={"Cache-Control": "no-store"})


def _html(body: bytes, status: int) -> Response:
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _register_row(register: dict[str, Any] | None, t: Translator) -> dict[str, str] | None:
    """The article register's age and size for the page (agent.register); None without one."""
    if not register:
        return None
    skipped = int(register.get("skipped_not_webshop") or 0)
    return {
        "value": t(
            "register_value",
            articles=t.number(register.get("articles") or 0),
            webshop=t.number(register.get("webshop_articles") or 0),
            age=t.duration(register.get("age_s")),
        ),
        "skipped": t("register_skipped", skipped=t.number(skipped)) if skipped else "",
    }
