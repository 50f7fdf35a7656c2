"""``kassabro-fleet``: the chain's side of Kassabro.

- ``consume``: one worker of the durable JetStream consumer into PostgreSQL (run several);
- ``serve``: the fleet view (every shop's state) and ``/metrics``;
- ``simulate``: N simulated shops publishing like Kassabro agents, for tests and load;
- ``nats-config``: the ``accounts`` block of the cluster's config for a list of shops.

Settings come from flags, else ``KASSABRO_FLEET_*`` environment variables;
secrets from files (``--password-file``), never from the command line.
Exit codes as ``kassabro``: 0 success, 1 failure, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from agent.configbase import read_secret

__all__ = ["main"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"KASSABRO_FLEET_{name}", default)


def _hosts(text: str) -> list[tuple[str, int]]:
    hosts = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"{item!r}: expected host:port")
        hosts.append((host, int(port)))
    return hosts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kassabro-fleet", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def nats_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--nats", default=_env("NATS", "nats://127.0.0.1:4222"), help="NATS URLs, comma-separated")
        p.add_argument("--user", default=_env("USER", "fleet"))
        p.add_argument("--password-file", type=Path, default=_env("PASSWORD_FILE"))
        p.add_argument("--topic-prefix", default=_env("TOPIC_PREFIX", "kassabro"))
        p.add_argument("--stream", default="$MQTT_msgs", help="the MQTT gateway's QoS 1 stream (docs/fleet.md)")
        p.add_argument("--durable", default="fleet-pg")

    consume = commands.add_parser("consume", help="store every record into PostgreSQL (one worker)")
    nats_options(consume)
    consume.add_argument("--dsn", default=_env("DSN"), help="PostgreSQL connection string")
    consume.add_argument("--batch", type=int, default=500)
    consume.add_argument(
        "--ack-wait", type=float, default=30.0, help="seconds before an unacknowledged message is sent again"
    )
    consume.add_argument("--replicas", type=int, default=3, help="replicas of the stream when this worker creates it")
    consume.add_argument("--max-age-days", type=float, default=14.0)

    serve = commands.add_parser("serve", help="the fleet view and /metrics")
    nats_options(serve)
    serve.add_argument("--dsn", default=_env("DSN"), help="PostgreSQL connection string")
    serve.add_argument("--listen", default=_env("LISTEN", "127.0.0.1:8790"))
    serve.add_argument(
        "--stale-after",
        type=float,
        default=180.0,
        help="seconds without a status before an online shop counts as silent",
    )

    simulate = commands.add_parser("simulate", help="N simulated shops publishing over MQTT")
    simulate.add_argument("--mqtt", type=_hosts, required=True, help="MQTT gateways host:port, comma-separated")
    simulate.add_argument("--passwords", type=Path, required=True, help='JSON file {"store_id": "password", ...}')
    simulate.add_argument("--receipts", type=int, default=100, help="receipts per shop")
    simulate.add_argument(
        "--pace", type=float, default=0.0, help="mean seconds between a shop's receipts (0: flat out)"
    )
    simulate.add_argument("--z-every", type=int, default=0)
    simulate.add_argument("--topic-prefix", default="kassabro")
    simulate.add_argument("--keepalive", type=int, default=30)

    config = commands.add_parser("nats-config", help="print the accounts block for a list of shops")
    config.add_argument("--passwords", type=Path, required=True, help='JSON file {"store_id": "password", ...}')
    config.add_argument("--fleet-password-file", type=Path, required=True)
    config.add_argument("--system-password-file", type=Path, required=True)
    config.add_argument("--topic-prefix", default="kassabro")
    return parser


def _password(args: argparse.Namespace) -> str | None:
    return None if args.password_file is None else read_secret(args.password_file)


def _consume(args: argparse.Namespace) -> int:
    from fleet.consume import WorkerSettings, run_worker
    from fleet.stream import StreamSettings

    if not args.dsn:
        print("kassabro-fleet consume: --dsn (or KASSABRO_FLEET_DSN) is required", file=sys.stderr)
        return 2
    stream = StreamSettings(
        topic_prefix=args.topic_prefix,
        stream=args.stream,
        durable=args.durable,
        replicas=args.replicas,
        ack_wait_s=args.ack_wait,
        max_age=timedelta(days=args.max_age_days),
    )
    settings = WorkerSettings(
        nats_urls=args.nats.split(","),
        dsn=args.dsn,
        user=args.user,
        password=_password(args),
        stream=stream,
        batch=args.batch,
    )
    return run_worker(settings)


def _simulate(args: argparse.Namespace) -> int:
    from fleet.simulate import Chain, ShopPlan

    passwords: dict[str, str] = json.loads(args.passwords.read_text(encoding="utf-8"))
    plans = [ShopPlan(store, password, args.receipts, z_every=args.z_every) for store, password in passwords.items()]

    async def run() -> None:
        chain = Chain(plans, args.mqtt, topic_prefix=args.topic_prefix, pace_s=args.pace, keepalive_s=args.keepalive)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, chain.stop_event.set)
        await chain.start()
        while not chain.stop_event.is_set() and not chain.done():
            await asyncio.sleep(1)
        print(json.dumps({"shops": len(chain.shops), "records": chain.produced, "acknowledged": len(chain.acked_ids)}))
        await chain.stop()

    asyncio.run(run())
    return 0


def _nats_config(args: argparse.Namespace) -> int:
    from fleet.natsconf import accounts_block

    passwords: dict[str, str] = json.loads(args.passwords.read_text(encoding="utf-8"))
    try:
        block = accounts_block(
            passwords,
            fleet_password=read_secret(args.fleet_password_file),
            system_password=read_secret(args.system_password_file),
            topic_prefix=args.topic_prefix,
        )
    except ValueError as exc:
        print(f"kassabro-fleet nats-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(block)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from fleet.web.app import serve

    if not args.dsn:
        print("kassabro-fleet serve: --dsn (or KASSABRO_FLEET_DSN) is required", file=sys.stderr)
        return 2
    return serve(args, password=_password(args))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)
    handlers = {"consume": _consume, "simulate": _simulate, "nats-config": _nats_config, "serve": _serve}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
