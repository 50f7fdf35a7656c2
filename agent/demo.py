"""``kassabro demo``: the whole flow on one machine, on loopback.

Starts a simulated Hogia API, a simulated Sharespine and a chain backend (the
generic HTTP receiver), writes a config for them into the demo folder, starts
the real agent on it, and lets a simulated till post Swedish receipts. A small
control page (and ``--offline``) cuts the shop's "internet" so you can watch
the backlog grow on the status page and drain when it comes back. The same
page lets the till lose a receipt, close the day with a Z-report, and send
the lost receipt after all: the status page shows "Kassa 1, Z 1: 1 kvitto
saknas (…)" and then clears it by itself (reconciliation).

Everything listens on 127.0.0.1 only. The config stays in the demo folder, so
``kassabro status --config demo-data/kassabro.toml`` works beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.app import Agent
from agent.config import load_config
from agent.simulators import hogia, receiver, sharespine
from agent.simulators._server import serve
from agent.simulators.faults import Faults
from agent.simulators.till import Till, TillStats, run_till

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = """\
# Written by `kassabro demo`; every address is a simulator on loopback.
store_id = "demo-butik"
data_dir = "{data_dir}"

[ingest]
listen = "127.0.0.1:{ingest_port}"

[status]
listen = "127.0.0.1:{status_port}"
admin_token_file = "{admin_token_file}"

# Setup (b) of docs/setups.md: the till hands its records to Kassabro only,
# so Kassabro books the sales in Hogia and sends stock to Sharespine.
[flow]
sales_to_hogia = "kassabro"
webshop_stock = "kassabro"

[[destinations]]
name = "hogia"
kind = "hogia"
base_url = "{hogia_url}"
auth = "none"
read_register = false  # the demo till's articles are not in the simulated register
backoff_cap_s = 10

[[destinations]]
name = "sharespine"
kind = "sharespine"
base_url = "{sharespine_url}"
auth = "none"
types = ["stock_movement"]
backoff_cap_s = 10

[[destinations]]
name = "chain-backend"
kind = "http"
url = "{backend_url}/ingest"
backoff_cap_s = 10
"""


class Internet:
    """The shop's internet in the demo: every simulator's faults at once."""

    def __init__(self) -> None:
        self.faults = {"hogia": Faults(), "sharespine": Faults(), "chain-backend": Faults()}
        self.cut_since: float | None = None

    def cut(self) -> None:
        for f in self.faults.values():
            f.update({"down": "close"})
        self.cut_since = time.time()
        log.warning("demo: the shop's internet is cut")

    def restore(self) -> None:
        for f in self.faults.values():
            f.update({"down": "off"})
        self.cut_since = None
        log.warning("demo: the shop's internet is back")


def control_app(internet: Internet, status_url: str, stats: TillStats, till: Till | None = None) -> Starlette:
    """A tiny page with the demo's buttons; plain HTML forms, no script."""

    async def page(request: Request) -> Response:
        state = "nere (cut)" if internet.cut_since else "uppe (up)"
        held = len(till.held) if till is not None else 0
        body = f"""<!doctype html><html lang="sv"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Kassabro demo</title></head>
<body style="font-family:sans-serif;max-width:36em;margin:2em auto;padding:0 1em">
<h1>Kassabro demo</h1>
<p>Internet: <strong>{html.escape(state)}</strong>. Kassan har skickat {stats.acknowledged} poster
(the till has handed over {stats.acknowledged} records).</p>
<form method="post" action="/cut"><button>Klipp internet / Cut the internet</button></form>
<p></p>
<form method="post" action="/restore"><button>Återställ internet / Restore the internet</button></form>
<h2>Kassan / The till</h2>
<p>Kvar hos kassan, ej skickade: {held} (kept back by the till, not sent: {held}).</p>
<form method="post" action="/miss"><button>Tappa nästa kvitto / Lose the next receipt</button></form>
<p></p>
<form method="post" action="/z"><button>Stäng dagen: skicka Z-rapport / Close the day: send a Z-report</button></form>
<p></p>
<form method="post" action="/release"><button>Skicka det tappade / Send the lost receipt</button></form>
<p><a href="{html.escape(status_url)}">Statussidan / The status page</a></p>
</body></html>"""
        return HTMLResponse(body, headers={"Content-Security-Policy": "default-src 'self'; form-action 'self'"})

    async def cut(request: Request) -> Response:
        internet.cut()
        return RedirectResponse("/", status_code=303)

    async def restore(request: Request) -> Response:
        internet.restore()
        return RedirectResponse("/", status_code=303)

    def till_action(act: Callable[[Till], object]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if till is not None:
                act(till)
            return RedirectResponse("/", status_code=303)

        return handle

    return Starlette(
        routes=[
            Route("/", page),
            Route("/cut", cut, methods=["POST"]),
            Route("/restore", restore, methods=["POST"]),
            Route("/miss", till_action(lambda t: t.miss_next()), methods=["POST"]),
            Route("/z", till_action(lambda t: t.z_report()), methods=["POST"]),
            Route("/release", till_action(lambda t: t.release()), methods=["POST"]),
        ]
    )


def write_config(folder: Path, urls: dict[str, str], ingest_port: int, status_port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "admin-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(16) + "\n", encoding="utf-8")
        token_file.chmod(0o600)
    path = folder / "kassabro.toml"
    path.write_text(
        CONFIG_TEMPLATE.format(
            data_dir=folder / "data",
            ingest_port=ingest_port,
            status_port=status_port,
            admin_token_file=token_file,
            hogia_url=urls["hogia"],
            sharespine_url=urls["sharespine"],
            backend_url=urls["chain-backend"],
        ),
        encoding="utf-8",
    )
    return path


async def demo(args: argparse.Namespace) -> None:
    folder = Path(args.dir).resolve()
    internet = Internet()
    stats = TillStats()
    async with AsyncExitStack() as stack:
        urls = {
            "hogia": await stack.enter_async_context(serve(hogia.create_app(faults=internet.faults["hogia"]))),
            "sharespine": await stack.enter_async_context(
                serve(sharespine.create_app(faults=internet.faults["sharespine"]))
            ),
            "chain-backend": await stack.enter_async_context(
                serve(receiver.create_app(faults=internet.faults["chain-backend"]))
            ),
        }
        config = load_config(write_config(folder, urls, args.ingest_port, args.status_port))
        agent = Agent(config)
        await agent.start()
        stack.push_async_callback(agent.stop)
        status_url = f"http://127.0.0.1:{agent.status_port}/"
        till = Till(
            seed=int(time.time()),
            first_receipt_no=int(time.time() * 100) % 10**9 + 1,
            first_z_no=int(time.time()) % 10**6 + 1,
            gift_card_rate=0.03,
        )
        control_url = await stack.enter_async_context(
            serve(control_app(internet, status_url, stats, till), port=args.control_port)
        )
        if args.offline:
            internet.cut()
        till_task = asyncio.create_task(
            run_till(
                f"http://127.0.0.1:{agent.ingest_port}",
                args.rate,
                duration_s=args.duration or 10**9,
                till=till,
                stats=stats,
            )
        )
        stack.push_async_callback(_cancel, till_task)
        admin = config.admin_token()
        print(
            f"\nKassabro demo is running.\n"
            f"  Status page:      {status_url}\n"
            f"  Cut the internet: {control_url}/\n"
            f"  Admin token:      {admin}   (for retry and pause on the status page)\n"
            f"  Config and data:  {folder}\n"
            f"Press Ctrl+C to stop.\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        waiters: list[Any] = [asyncio.create_task(stop.wait())]
        if args.duration:
            waiters.append(asyncio.create_task(asyncio.sleep(args.duration)))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        print(f"stopping; the till handed over {stats.acknowledged} records", flush=True)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def run_demo(args: argparse.Namespace) -> int:
    try:
        asyncio.run(demo(args))
    except OSError as exc:
        print(f"kassabro demo: {exc} (is another demo or agent using the ports? try --status-port / --ingest-port)")
        return 1
    return 0
