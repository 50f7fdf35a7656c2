"""The ``kassabro`` command (contract §4): exit 0 success, 1 failure, 2 usage or config error.

Operator commands (``status``, ``dead-letters``, ``pause``, ``resume``,
``submit``) work on the outbox file itself, so they answer while the agent is
stopped: exactly when a technician needs them most.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent import __version__, firstrun, systemd
from agent.config import Config, ConfigError, load_config
from agent.outbox.schema import SchemaTooNew
from agent.outbox.store import OutboxError
from agent.records import RECORD_TYPES

log = logging.getLogger("agent.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Exit 2: the command line or the config is wrong."""


class Failure(Exception):
    """Exit 1: the command could not do its job (say why in one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 by itself; keep its wording
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kassabro", description="Kassabro: the till's bridge to Hogia Smart, Sharespine and more.")
    parser.add_argument("--version", action="version", version=f"kassabro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="the TOML config (default: $KASSABRO_CONFIG, else /etc/kassabro/kassabro.toml)")
        return p

    with_config(sub.add_parser("run", help="run the agent in the foreground (systemd runs this)"))
    demo = sub.add_parser("demo", help="the agent with simulated Hogia API, Sharespine and a till on loopback")
    demo.add_argument("--dir", default="demo-data", help="where the demo keeps its data (default ./demo-data)")
    demo.add_argument("--rate", type=float, default=0.5, help="till receipts per second (default 0.5)")
    demo.add_argument("--offline", action="store_true", help="start with the shop's internet cut")
    demo.add_argument("--status-port", type=int, default=8781)
    demo.add_argument("--ingest-port", type=int, default=8780)
    demo.add_argument("--control-port", type=int, default=8782, help="the page that cuts the demo's internet")
    demo.add_argument("--for", dest="duration", type=float, default=None, help="stop after this many seconds")
    init = with_config(sub.add_parser("init", help="first run: ask the setup's questions, write the config and tokens"))
    firstrun.add_arguments(init)
    check = with_config(sub.add_parser("check-config", help="validate the config and its secret files"))
    check.add_argument(
        "--unit", type=Path, help="the systemd unit whose sandbox to check against (default: the installed one)"
    )
    status = with_config(sub.add_parser("status", help="the outbox's state, read from the file itself"))
    status.add_argument("--json", action="store_true", help="machine-readable output")

    dl = sub.add_parser("dead-letters", help="records a destination refused for good")
    dl_sub = dl.add_subparsers(dest="action", required=True, parser_class=_Parser)
    dl_list = with_config(dl_sub.add_parser("list", help="list dead letters"))
    dl_list.add_argument("--destination")
    dl_list.add_argument("--json", action="store_true")
    dl_list.add_argument("--limit", type=int, default=100)
    dl_retry = with_config(dl_sub.add_parser("retry", help="send dead letters again"))
    dl_retry.add_argument("--destination")
    dl_retry.add_argument("--all", action="store_true", help="every dead letter (of --destination, if given)")
    dl_retry.add_argument("ids", nargs="*", help="record ids to retry")

    for action in ("pause", "resume"):
        p = with_config(sub.add_parser(action, help=f"{action} delivery to a destination"))
        p.add_argument("destination")

    submit = with_config(sub.add_parser("submit", help="enqueue records from files (same validation as the API)"))
    submit.add_argument("--type", choices=list(RECORD_TYPES), help="each file holds one record of this type")
    submit.add_argument("files", nargs="+", type=Path)

    carry = with_config(
        sub.add_parser(
            "import-outbox",
            help="take over the records of another outbox file (a rolled-back upgrade's, one moved aside), ids kept",
        )
    )
    carry.add_argument("file", type=Path, help="the other outbox file (read-only; never changed)")

    tls = sub.add_parser("tls", help="the listeners' self-signed TLS certificate")
    tls_sub = tls.add_subparsers(dest="action", required=True, parser_class=_Parser)
    renew = with_config(
        tls_sub.add_parser("renew", help="(re)make the self-signed certificate for this machine's names and addresses")
    )
    renew.add_argument("--cert", type=Path, help="the certificate file (default: [ingest] tls_cert_file)")
    renew.add_argument("--key", type=Path, help="the key file (default: [ingest] tls_key_file)")
    renew.add_argument("--new-key", action="store_true", help="make a new key too (tills must pin again)")
    renew.add_argument("--hostname", help="the name in the certificate (default: this machine's)")
    renew.add_argument(
        "--address", action="append", dest="addresses", help="an address in the certificate (default: the current ones)"
    )

    sie = sub.add_parser("sie", help="SIE 4I bookkeeping files")
    sie_sub = sie.add_subparsers(dest="action", required=True, parser_class=_Parser)
    sie_export = with_config(sie_sub.add_parser("export", help="export a business day now"))
    sie_export.add_argument("--date", required=True, help="the business day, YYYY-MM-DD")
    sie_export.add_argument("--till", help="only this till")
    sie_export.add_argument("--destination", help="the sie destination (default: the only one)")
    sie_show = sie_sub.add_parser("show", help="decode a .si file, with its balance and checksum verdict")
    sie_show.add_argument("file", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"kassabro: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, firstrun.InitRefused) as exc:
        print(f"kassabro: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print(f"kassabro: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (OutboxError, SchemaTooNew) as exc:  # e.g. an unknown destination: one line, not a traceback
        print(f"kassabro: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except sqlite3.Error as exc:  # a damaged or locked outbox file
        print(
            f"kassabro: cannot use the outbox: {exc} (the agent moves a damaged outbox aside when it starts)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


# ---------------------------------------------------------------- commands
def _tls_files(config: Config) -> tuple[Path, Path] | None:
    for section in (config.ingest, config.status):
        if section.tls_cert_file is not None and section.tls_key_file is not None:
            return section.tls_cert_file, section.tls_key_file
    return None


def cmd_tls_renew(args: argparse.Namespace) -> int:
    from agent import tlscert

    cert, key = args.cert, args.key
    if cert is None or key is None:
        configured = _tls_files(load_config(args.config, check_secrets=False))
        if configured is None:
            raise UsageError("no [ingest] tls_cert_file/tls_key_file in the config: give --cert and --key")
        cert, key = cert or configured[0], key or configured[1]
    try:
        made = tlscert.renew(cert, key, hostname=args.hostname, addresses=args.addresses, new_key=args.new_key)
    except tlscert.TlsError as exc:
        raise Failure(str(exc)) from None
    print(f"certificate {made.cert_file} for {', '.join(made.names)} (valid {tlscert.VALID_DAYS} days)")
    kept = "kept (the public key pin stays valid; the fingerprint is new)"
    print(f"key {made.key_file}: {'new (tills must pin again)' if made.new_key else kept}")
    print(f"SHA-256 fingerprint: {made.fingerprint}")
    print(f"public key pin (curl --pinnedpubkey): {made.public_key_pin}")
    print("restart the agent to use it: systemctl restart kassabro")
    return EXIT_OK


def _logging(level: str) -> None:
    systemd.setup_logging(level)
    # One line per request is noise for a technician; failures are logged by the loops.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _logging(config.log_level)
    from agent.app import run_agent

    try:
        asyncio.run(run_agent(config))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    _logging("INFO")
    from agent.demo import run_demo

    return run_demo(args)


def cmd_init(args: argparse.Namespace) -> int:
    from agent.config import resolve_path

    return firstrun.run(args, resolve_path(args.config))


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.sandbox import installed_unit, write_problem
    from agent.sie.config import SieDestinationConfig

    config = load_config(args.config)
    box = installed_unit(args.unit)
    problems = []
    for index, dest in enumerate(config.destinations):
        if not isinstance(dest, SieDestinationConfig):
            continue
        for key, path in (("dir", dest.dir), ("copy_to", dest.copy_to)):
            problem = write_problem(path, box) if path is not None else None
            if problem:
                problems.append((f"destinations[{index}].{key}", problem))
    if problems:
        raise ConfigError(problems)
    print(f"{config.path}: ok (store {config.store_id}, {len(config.destinations)} destination(s))")
    for dest in config.destinations:
        print(f"  {dest.name}: {dest.kind}, types {', '.join(dest.types)}")
    return EXIT_OK


def _open_store(config: Config, *, write: bool = False) -> Any:
    from agent.outbox.store import OutboxStore

    path = config.outbox_path
    if not path.exists():
        raise Failure(f"no outbox at {path} yet (the agent has not run with this data_dir)")
    if write:
        return OutboxStore.open(path, store_id=config.store_id, max_bytes=config.outbox.max_bytes, check=False)
    return OutboxStore.open_reader(path, store_id=config.store_id, max_bytes=config.outbox.max_bytes)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _tls_summary(config: Config) -> dict[str, str] | None:
    """The certificate's pins for ``kassabro status``, so a technician can give them to a till."""
    from agent import tlscert

    files = _tls_files(config)
    if files is None:
        return None
    try:
        return {
            "cert_file": str(files[0]),
            "fingerprint": tlscert.fingerprint(files[0]),
            "public_key_pin": tlscert.public_key_pin(files[0]),
        }
    except tlscert.TlsError as exc:
        return {"cert_file": str(files[0]), "error": str(exc)}


def cmd_status(args: argparse.Namespace) -> int:
    from agent.delivery import state_at_rest
    from agent.reconcile import CHUNK, STATE_NAME, Reconciler, outbox_problem

    config = load_config(args.config, check_secrets=False)
    store = _open_store(config)
    # The agent's reconciliation state, brought up to date from the outbox (never written here).
    reconciler = Reconciler(config.data_dir / STATE_NAME, gift_card_skus=config.skus.gift_card)
    try:
        dests = store.destination_stats()
        box = store.outbox_stats()
        reconciler.load()
        while reconciler.catch_up(store) >= CHUNK:
            pass
    finally:
        store.conn.close()
    for d in dests:
        d["state"] = state_at_rest(d)
    problems = [outbox_problem(text) for text in box["problems"]] + reconciler.problems()
    tills = reconciler.summaries()
    tls = _tls_summary(config)
    if args.json:
        body = {
            "store_id": config.store_id,
            "tls": tls,
            "outbox": box,
            "destinations": dests,
            "problems": problems,
            "tills": tills,
        }
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(
        f"store {config.store_id}: {box['records']} records in the outbox ({box['bytes'] / 1e6:.1f} MB), "
        f"{box['conflicts']} conflicts kept aside"
    )
    if tls is None:
        print("TLS: off (plain HTTP)")
    elif "error" in tls:
        print(f"TLS: {tls['error']}")
    else:
        print(f"TLS certificate SHA-256 fingerprint: {tls['fingerprint']}")
        print(f"TLS public key pin (curl --pinnedpubkey): {tls['public_key_pin']}")
    for problem in problems:
        print(f"  PROBLEM: {problem['text']}")
        if problem["text_en"] != problem["text"]:
            print(f"           {problem['text_en']}")
    if tills:
        print(f"{'till':<16}{'last receipt':>13}{'missing':>9}  last Z")
        for till in tills:
            z = till["last_z"]
            last_z = f"Z {z['z_no']} ({z['state']})" if z else "-"
            last_no = "-" if till["last_receipt_no"] is None else str(till["last_receipt_no"])
            print(f"{till['till_id']:<16}{last_no:>13}{till['missing_receipts']:>9}  {last_z}")
    print(f"{'destination':<16}{'kind':<12}{'state':<10}{'pending':>9}{'oldest':>10}{'dead':>6}  last success")
    for d in dests:
        print(
            f"{d['name']:<16}{d['kind']:<12}{d['state']:<10}{d['pending']:>9}{_age(d['oldest_pending_age_s']):>10}"
            f"{d['dead_letters']:>6}  {d['last_success_at'] or '-'}"
        )
        if d["last_error"]:
            print(f"{'':<16}last error: {d['last_error']}")
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_secrets=False)
    if args.action == "list":
        store = _open_store(config)
        try:
            letters = store.list_dead_letters(args.destination, args.limit)
        finally:
            store.conn.close()
        if args.json:
            print(json.dumps([vars(d) for d in letters], indent=2, ensure_ascii=False))
        elif not letters:
            print("no dead letters")
        for d in letters if not args.json else []:
            print(f"{d.destination:<14}{d.record_id}  {d.key:<36} {d.state:<9} {d.status or '-'}  {d.error[:120]}")
        return EXIT_OK
    if not args.all and not args.ids:
        raise UsageError("name the record ids to retry, or --all")
    store = _open_store(config, write=True)
    try:
        count = store.retry_dead_letters(args.destination, None if args.all else args.ids)
    finally:
        store.close()
    print(f"{count} dead letter(s) queued for retry; the running agent sends them within a minute")
    return EXIT_OK if count or args.all else EXIT_FAILURE


def cmd_pause(args: argparse.Namespace, paused: bool = True) -> int:
    from agent.outbox.store import UnknownDestination

    config = load_config(args.config, check_secrets=False)
    store = _open_store(config, write=True)
    try:
        store.set_paused(args.destination, paused)
    except UnknownDestination as exc:
        print(f"kassabro: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
    print(f"{args.destination} {'paused' if paused else 'resumed'}")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    config = load_config(args.config, check_secrets=False)
    return asyncio.run(_submit(config, args.files, args.type))


async def _submit(config: Config, files: list[Path], record_type: str | None) -> int:
    from agent.ingest import Ingestor
    from agent.outbox.service import Outbox

    outbox = Outbox(config.outbox_path, store_id=config.store_id, max_bytes=config.outbox.max_bytes)
    await outbox.start()
    ingestor = Ingestor(
        outbox,
        derive_stock_from_sales=config.ingest.derive_stock_from_sales,
        gift_card_skus=config.skus.gift_card,
        max_age_days=config.ingest.max_age_days,
        max_future_hours=config.ingest.max_future_hours,
    )
    failures = 0
    try:
        for path in files:
            try:
                body = path.read_bytes()
            except OSError as exc:
                print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
                failures += 1
                continue
            answer = await (ingestor.one(record_type, body) if record_type else ingestor.batch(body))
            verdict = {201: "stored", 200: "already stored"}.get(answer.status, f"refused ({answer.status})")
            stream = sys.stdout if answer.ok else sys.stderr
            print(f"{path}: {verdict}", file=stream)
            print(json.dumps(answer.body, ensure_ascii=False), file=stream)
            failures += 0 if answer.ok else 1
    finally:
        await outbox.close()
    return EXIT_OK if failures == 0 else EXIT_FAILURE


def cmd_import_outbox(args: argparse.Namespace) -> int:
    """Carry records over from another outbox file (docs/deployment.md, "Rollback")."""
    from agent.outbox.carry import carry_over
    from agent.outbox.store import OutboxStore

    config = load_config(args.config, check_secrets=False)
    source: Path = args.file
    if source.exists() and config.outbox_path.exists() and source.samefile(config.outbox_path):
        raise UsageError(f"{source} is this agent's own outbox; name the other file")
    store = OutboxStore.open(config.outbox_path, store_id=config.store_id, max_bytes=config.outbox.max_bytes)
    try:
        report = carry_over(source, store)
    finally:
        store.close()
    print(f"{source}: {report.summary()}")
    for key, why in report.left[:20]:
        print(f"  not taken: {key}: {' '.join(why.split())[:200]}", file=sys.stderr)
    return EXIT_OK if not report.left else EXIT_FAILURE


def cmd_sie(args: argparse.Namespace) -> int:
    from agent.sie import cli as sie_cli

    if args.action == "show":
        return sie_cli.show(args.file)
    config = load_config(args.config)
    return sie_cli.export(config, args.date, till=args.till, destination=args.destination)


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "init": cmd_init,
    "check-config": cmd_check_config,
    "status": cmd_status,
    "dead-letters": cmd_dead_letters,
    "pause": lambda a: cmd_pause(a, True),
    "resume": lambda a: cmd_pause(a, False),
    "submit": cmd_submit,
    "import-outbox": cmd_import_outbox,
    "sie": cmd_sie,
    "tls": cmd_tls_renew,
}


if __name__ == "__main__":
    raise SystemExit(main())
