"""``kassabro-fleet serve``: the fleet view, one page per shop, and ``/metrics``.

Starlette and jinja2 as the shop's own page (``agent.web``). The overview lists
every shop with its state from the retained status and the records (online or
offline since when, backlog per destination, dead letters, missing receipts,
last sale), those that need a person first. It reloads itself every
``refresh_s`` seconds. ``/metrics`` gives the chain's Prometheus the shops
offline, the records behind (what the shops' agents have not yet delivered)
and the consumer's lag (what JetStream holds that PostgreSQL does not yet).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import uvicorn
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import agent
from agent.web.i18n import LANG_COOKIE, LANGUAGES, choose_language
from fleet.consume import connect_nats
from fleet.stream import StreamSettings, consumer_lag
from fleet.web.queries import shop_detail, shops
from fleet.web.words import Words

__all__ = ["FleetView", "create_app", "serve"]

log = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parents[1]


def _chain_tz() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Europe/Stockholm")
    except Exception:  # no tz database on this machine: UTC rather than nothing
        return UTC


class FleetView:
    """Where the view reads from: PostgreSQL, and NATS for the consumer's lag (optional).

    Args:
        dsn: the fleet database.
        nats_urls: the cluster, for the consumer's lag; empty leaves the lag out.
        user, password: the NATS user.
        stream: the stream and durable consumer to measure.
        stale_after: an online shop without a status for this long counts as silent.
    """

    def __init__(
        self,
        dsn: str,
        *,
        nats_urls: list[str] | None = None,
        user: str | None = None,
        password: str | None = None,
        stream: StreamSettings | None = None,
        stale_after: timedelta = timedelta(minutes=3),
    ) -> None:
        self.dsn = dsn
        self.nats_urls = nats_urls or []
        self.user = user
        self.password = password
        self.stream = stream or StreamSettings()
        self.stale_after = stale_after
        self._nats: NatsClient | None = None

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5)

    async def lag(self) -> tuple[int, int] | None:
        """The consumer's (not yet delivered, not yet acknowledged), or None when NATS cannot say."""
        if not self.nats_urls:
            return None
        try:
            if self._nats is None or self._nats.is_closed:
                self._nats = await connect_nats(self.nats_urls, self.user, self.password, "kassabro-fleet serve")
            return await consumer_lag(self._nats.jetstream(timeout=3), self.stream)
        except Exception as exc:
            log.info("consumer lag unknown: %s", exc)
            return None

    async def close(self) -> None:
        if self._nats is not None:
            with contextlib.suppress(Exception):
                await self._nats.close()


def create_app(
    view: FleetView,
    *,
    tz: tzinfo | None = None,
    now: Callable[[], datetime] | None = None,
    refresh_s: int = 5,
) -> Starlette:
    """The ASGI app. ``now`` is for tests; ``refresh_s`` is how often the pages reload themselves."""
    zone = tz or _chain_tz()
    clock = now or (lambda: datetime.now(UTC))
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_PACKAGE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )

    def language(request: Request) -> str:
        return choose_language(
            request.query_params.get("lang"), request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )

    def page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        lang = language(request)
        words = Words(lang, zone, clock())
        body = templates.get_template(template).render(
            t=words, lang=lang, refresh_s=refresh_s, version=agent.__version__, **context
        )
        response = HTMLResponse(body, status_code=status_code)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 24 * 3600, httponly=True, samesite="lax")
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self'; img-src 'self'"
        return response

    async def overview(request: Request) -> Response:
        async with await view.connect() as conn:
            rows = await shops(conn, clock(), view.stale_after)
        offline = sum(1 for s in rows if s.offline)
        attention = sum(1 for s in rows if s.needs_person)
        return page(request, "fleet.html", shops=rows, offline=offline, attention=attention)

    async def one_shop(request: Request) -> Response:
        store_id = request.path_params["store_id"]
        async with await view.connect() as conn:
            detail = await shop_detail(conn, store_id, clock(), view.stale_after)
        if detail is None:
            return page(request, "shop.html", status_code=404, detail=None, store_id=store_id)
        return page(request, "shop.html", detail=detail, store_id=store_id)

    registry = CollectorRegistry()
    gauges = {
        "shops": Gauge("kassabro_fleet_shops", "Shops known to the fleet", registry=registry),
        "offline": Gauge("kassabro_fleet_shops_offline", "Shops offline or silent", registry=registry),
        "attention": Gauge("kassabro_fleet_shops_needing_person", "Shops that need a person", registry=registry),
        "behind": Gauge(
            "kassabro_fleet_records_behind", "Records the shops' agents hold not yet delivered", registry=registry
        ),
        "dead": Gauge("kassabro_fleet_dead_letters", "Dead letters over all shops", registry=registry),
        "missing": Gauge(
            "kassabro_fleet_missing_receipts", "Receipt numbers missing over all tills", registry=registry
        ),
        "lag": Gauge(
            "kassabro_fleet_consumer_lag",
            "Messages in the stream not yet acknowledged by the consumer",
            registry=registry,
        ),
        "pending": Gauge(
            "kassabro_fleet_consumer_pending", "Messages not yet delivered to a worker", registry=registry
        ),
        "ack_pending": Gauge(
            "kassabro_fleet_consumer_ack_pending", "Messages delivered, not yet acknowledged", registry=registry
        ),
    }

    async def metrics(request: Request) -> Response:
        async with await view.connect() as conn:
            rows = await shops(conn, clock(), view.stale_after)
        gauges["shops"].set(len(rows))
        gauges["offline"].set(sum(1 for s in rows if s.offline))
        gauges["attention"].set(sum(1 for s in rows if s.needs_person))
        gauges["behind"].set(sum(s.backlog for s in rows))
        gauges["dead"].set(sum(s.dead_letters for s in rows))
        gauges["missing"].set(sum(s.missing_receipts for s in rows))
        lag = await view.lag()
        for name, value in zip(("pending", "ack_pending"), lag or (float("nan"), float("nan")), strict=True):
            gauges[name].set(value)
        gauges["lag"].set(sum(lag) if lag is not None else float("nan"))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        try:
            async with await view.connect() as conn:
                await conn.execute(b"SELECT 1")
        except psycopg.Error as exc:
            return PlainTextResponse(f"database: {exc}", status_code=503)
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await view.close()

    return Starlette(
        routes=[
            Route("/", overview),
            Route("/shops/{store_id}", one_shop),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Mount("/static", StaticFiles(directory=_PACKAGE / "static"), name="static"),
        ],
        lifespan=lifespan,
    )


def serve(args: argparse.Namespace, *, password: str | None) -> int:
    """Run the view in the foreground on ``args.listen`` until SIGINT or SIGTERM."""
    host, _, port = args.listen.rpartition(":")
    view = FleetView(
        args.dsn,
        nats_urls=args.nats.split(",") if args.nats else [],
        user=args.user,
        password=password,
        stream=StreamSettings(topic_prefix=args.topic_prefix, stream=args.stream, durable=args.durable),
        stale_after=timedelta(seconds=args.stale_after),
    )
    uvicorn.run(create_app(view), host=host or "127.0.0.1", port=int(port), log_level="warning")
    return 0
