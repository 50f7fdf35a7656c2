"""``kassabro init``: the first-run questions that decide the setup, and a config that passes ``check-config``.

A technician on a shop floor should not have to read every key to get the one
decision right that matters most: whether the till reports to Hogia Smart
itself (setup a) or through Kassabro (setup b) (docs/setups.md). ``init``
asks that and the few other things that differ per shop (store id, tills,
destinations, who owns webshop stock, SIE files), writes the config and one
token file per till (0600), validates the result exactly as the agent will,
and prints what is left to do on the Hogia side. It never overwrites a config
without ``--force``: a working shop's file is worth more than a fresh one.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import secrets
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent import tlscert
from agent.config import build_config
from agent.configbase import ID_PATTERN, SkusConfig

SERVICE_USER = "kassabro"
PLACEHOLDER_STORE_ID = "store-001"
"""install.sh's example config says this until a shop's own config replaces it."""


class InitRefused(Exception):
    """``init`` will not write: the reason in one line (exit 2)."""


@dataclass
class Answers:
    """What decides the config; every field has the value a plain setup (a) shop would pick."""

    store_id: str = "store-001"
    tills: list[str] = field(default_factory=lambda: ["kassa-1"])
    sales_to_hogia: str = "till"
    webshop_stock: str = "hogia"
    hogia_url: str | None = None
    hogia_key: str | None = None
    sharespine_url: str | None = None
    sharespine_key: str | None = None
    backend_url: str | None = None
    sie: bool = False
    orgnr: str = ""
    company_name: str = ""
    data_dir: str = "/var/lib/kassabro"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``kassabro init``'s flags (every question has one, for ``--non-interactive``)."""
    parser.add_argument("--non-interactive", action="store_true", help="ask nothing; take the answers from flags")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config")
    parser.add_argument("--store-id", help="this shop's id")
    parser.add_argument("--till", action="append", dest="tills", help="a till's id (repeat for each till)")
    parser.add_argument(
        "--sales-to-hogia",
        choices=["till", "kassabro"],
        help="till: the till reports to Hogia Smart itself (setup a); kassabro: through Kassabro (setup b)",
    )
    parser.add_argument(
        "--webshop-stock",
        choices=["hogia", "kassabro"],
        help="hogia: Sharespine reads stock from the Hogia API; kassabro: Sharespine takes it from Kassabro",
    )
    parser.add_argument("--hogia-url", help="the Hogia API's base URL (a hogia destination)")
    parser.add_argument("--hogia-key-file", type=Path, help="a file holding the Hogia API key")
    parser.add_argument("--sharespine-url", help="Sharespine's base URL (needs --webshop-stock kassabro)")
    parser.add_argument("--sharespine-key-file", type=Path, help="a file holding the Sharespine API key")
    parser.add_argument("--backend-url", help="the chain's backend (an http destination)")
    parser.add_argument("--sie", action=argparse.BooleanOptionalAction, help="write SIE 4I files for the accountant")
    parser.add_argument("--orgnr", help="the company's organisation number (SIE)")
    parser.add_argument("--company-name", help="the company's name (SIE)")
    parser.add_argument("--data-dir", help="where the outbox lives (default /var/lib/kassabro)")


def _key_from_file(path: Path | None, flag: str) -> str:
    if path is None:
        raise InitRefused(f"{flag} is required with --non-interactive")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InitRefused(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if not key:
        raise InitRefused(f"{flag}: {path} is empty")
    return key


def answers_from_flags(args: argparse.Namespace) -> Answers:
    """The answers of ``--non-interactive``: flags over the defaults."""
    answers = Answers()
    answers.store_id = args.store_id or answers.store_id
    answers.tills = args.tills or answers.tills
    answers.sales_to_hogia = args.sales_to_hogia or answers.sales_to_hogia
    answers.webshop_stock = args.webshop_stock or answers.webshop_stock
    answers.data_dir = args.data_dir or answers.data_dir
    if args.hogia_url:
        answers.hogia_url = args.hogia_url
        answers.hogia_key = _key_from_file(args.hogia_key_file, "--hogia-key-file")
    if args.sharespine_url:
        answers.sharespine_url = args.sharespine_url
        answers.sharespine_key = _key_from_file(args.sharespine_key_file, "--sharespine-key-file")
    answers.backend_url = args.backend_url
    answers.sie = bool(args.sie)
    answers.orgnr = args.orgnr or ""
    answers.company_name = args.company_name or ""
    return answers


class Asker:
    """Questions on a terminal, Swedish first; Enter takes the value in brackets."""

    def __init__(self, out: TextIO, read: Callable[[], str], secret: Callable[[str], str]) -> None:
        self.out, self.read, self.secret = out, read, secret

    def text(self, question: str, default: str = "") -> str:
        self.out.write(f"{question} [{default}]: " if default else f"{question}: ")
        self.out.flush()
        return self.read().strip() or default

    def choice(self, question: str, options: dict[str, str], default: str) -> str:
        """``options``: what the technician may type -> the value it stands for."""
        while True:
            answer = self.text(f"{question} ({'/'.join(options)})", default).lower()
            if answer in options:
                return options[answer]
            self.out.write(f"  Svara {' eller '.join(options)} / Answer {' or '.join(options)}.\n")

    def yes(self, question: str, default: bool) -> bool:
        return self.choice(question, {"j": "y", "n": "n", "y": "y"}, "j" if default else "n") == "y"


def ask(asker: Asker, answers: Answers) -> Answers:
    """The interactive questions, each defaulting to what the flags (or setup a) say."""
    out = asker.out
    out.write("Kassabro: första start / first run. Se docs/setups.md.\n\n")
    while True:
        answers.store_id = asker.text("Butikens id / Store id", answers.store_id)
        if _valid_id(answers.store_id):
            break
        out.write("  Bokstäver, siffror, . _ - / Letters, digits, . _ -\n")
    while True:
        tills = asker.text("Kassor, kommaseparerade / Tills, comma separated", ",".join(answers.tills))
        answers.tills = [t.strip() for t in tills.split(",") if t.strip()]
        if answers.tills and all(_valid_id(t) for t in answers.tills):
            break
        out.write("  Minst en kassa; bokstäver, siffror, . _ - / At least one till; letters, digits, . _ -\n")
    reports_itself = asker.yes(
        "Rapporterar kassan själv till Hogia Smart (uppsättning a)? / "
        "Does the till report to Hogia Smart itself (setup a)?",
        answers.sales_to_hogia == "till",
    )
    answers.sales_to_hogia = "till" if reports_itself else "kassabro"
    hogia_url = asker.text("Hogia API:s adress, tom = ingen / Hogia API address, empty: none", answers.hogia_url or "")
    answers.hogia_url = hogia_url or None
    if answers.hogia_url:
        answers.hogia_key = asker.secret("Hogia API-nyckel (visas inte) / Hogia API key (not shown): ").strip() or None
    answers.webshop_stock = asker.choice(
        "Vem ger webbutiken lagersaldo: Hogia (Sharespine läser Hogia API) eller Kassabro? / "
        "Who gives the webshop its stock: Hogia or Kassabro?",
        {"hogia": "hogia", "kassabro": "kassabro"},
        answers.webshop_stock,
    )
    if answers.webshop_stock == "kassabro":
        url = asker.text("Sharespines adress / Sharespine address", answers.sharespine_url or "")
        answers.sharespine_url = url or None
        if answers.sharespine_url:
            key = asker.secret("Sharespine API-nyckel (visas inte) / Sharespine API key (not shown): ")
            answers.sharespine_key = key.strip() or None
    backend = asker.text("Kedjans backend, tom = ingen / The chain's backend, empty: none", answers.backend_url or "")
    answers.backend_url = backend or None
    answers.sie = asker.yes("SIE-filer till bokföringen? / SIE files for the accountant?", answers.sie)
    if answers.sie:
        answers.orgnr = asker.text("Organisationsnummer / Organisation number", answers.orgnr)
        answers.company_name = asker.text("Företagets namn / Company name", answers.company_name)
    return answers


def _valid_id(value: str) -> bool:
    import re

    return re.fullmatch(ID_PATTERN, value) is not None


def _q(value: str) -> str:
    """A TOML basic string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(answers: Answers, etc: Path) -> str:
    """The config file for ``answers``, its secrets in files under ``etc``."""
    setup = "a" if answers.sales_to_hogia == "till" else "b"
    lines = [
        f"# Written by `kassabro init`: setup ({setup}) of docs/setups.md.",
        "# Every key and its default: /opt/kassabro's example config and docs/configuration.md.",
        f"store_id = {_q(answers.store_id)}",
        f"data_dir = {_q(answers.data_dir)}",
        "",
        "[flow]",
        f"sales_to_hogia = {_q(answers.sales_to_hogia)}",
        f"webshop_stock = {_q(answers.webshop_stock)}",
        "",
        "[ingest]",
        'listen = "0.0.0.0:8780"',
        f"tls_cert_file = {_q(str(etc / 'tls' / 'cert.pem'))}",
        f"tls_key_file = {_q(str(etc / 'tls' / 'key.pem'))}",
    ]
    for till in answers.tills:
        lines += [
            "",
            "[[ingest.tills]]",
            f"id = {_q(till)}",
            f"token_file = {_q(str(etc / 'tills' / (till + '.token')))}",
        ]
    lines += ["", "[status]", f"admin_token_file = {_q(str(etc / 'admin.token'))}"]
    if answers.hogia_url:
        lines += [
            "",
            "[[destinations]]",
            'name = "hogia"',
            'kind = "hogia"',
            f"base_url = {_q(answers.hogia_url)}",
            f"api_key_file = {_q(str(etc / 'hogia.token'))}",
        ]
        if answers.sales_to_hogia == "till":
            lines.append("send_records = false  # the till books its sales in Hogia Smart itself")
    if answers.sharespine_url:
        lines += [
            "",
            "[[destinations]]",
            'name = "sharespine"',
            'kind = "sharespine"',
            f"base_url = {_q(answers.sharespine_url)}",
            f"api_key_file = {_q(str(etc / 'sharespine.token'))}",
            'types = ["stock_movement"]',
        ]
    if answers.backend_url:
        lines += ["", "[[destinations]]", 'name = "backend"', 'kind = "http"', f"url = {_q(answers.backend_url)}"]
    if answers.sie:
        lines += [
            "",
            "[[destinations]]",
            'name = "bokforing"',
            'kind = "sie"',
            f"dir = {_q(str(Path(answers.data_dir) / 'sie'))}",
            f"orgnr = {_q(answers.orgnr)}",
            f"company_name = {_q(answers.company_name)}",
        ]
    return "\n".join(lines) + "\n"


def _check(answers: Answers) -> None:
    if answers.sharespine_url and answers.webshop_stock == "hogia":
        raise InitRefused(
            "a sharespine destination sends stock, but Sharespine already reads it from the Hogia API "
            "(webshop_stock = hogia); leave it out or choose --webshop-stock kassabro (docs/setups.md)"
        )
    if answers.hogia_url and not answers.hogia_key:
        raise InitRefused("the hogia destination needs its API key")
    if answers.sharespine_url and not answers.sharespine_key:
        raise InitRefused("the sharespine destination needs its API key")
    if answers.sie and not (answers.orgnr and answers.company_name):
        raise InitRefused("SIE files need --orgnr and --company-name")


def _refuse_to_overwrite(config_path: Path, force: bool) -> None:
    """Raise unless ``config_path`` is absent, ``force`` is given, or it is install.sh's untouched placeholder.

    The placeholder (the example config with ``store_id = "store-001"`` and no
    destination) is what install.sh leaves for init to replace; any other file
    is a shop's config and stays unless the technician says ``--force``.
    """
    if force or not config_path.exists():
        return
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = {}
    if raw.get("store_id") == PLACEHOLDER_STORE_ID and not raw.get("destinations"):
        return
    raise InitRefused(f"{config_path} exists; kassabro init does not overwrite it (use --force to replace it)")


def _write_secret(path: Path, secret: str, *, keep: bool) -> bool:
    """Write ``secret`` to ``path`` (0600, the service user's when run as root); False when kept as it was."""
    if keep and path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode on open; this one must not
    if os.geteuid() == 0:
        try:
            shutil.chown(path, SERVICE_USER, SERVICE_USER)
        except (LookupError, OSError):
            pass  # no service user yet: install.sh creates it and owns /etc/kassabro's files
    return True


def write(answers: Answers, config_path: Path, *, force: bool, out: TextIO) -> None:
    """Write the config and its secrets, check it as the agent will, print the next steps."""
    _check(answers)
    _refuse_to_overwrite(config_path, force)
    etc = config_path.parent.resolve()
    text = render(answers, etc)
    tomllib.loads(text)  # what init writes is TOML whatever the answers
    written: list[Path] = []
    for till in answers.tills:
        path = etc / "tills" / f"{till}.token"
        if _write_secret(path, secrets.token_urlsafe(32), keep=True):
            written.append(path)
    for name, secret in (
        ("admin.token", secrets.token_urlsafe(32)),
        ("hogia.token", answers.hogia_key),
        ("sharespine.token", answers.sharespine_key),
    ):
        if secret is not None and _write_secret(etc / name, secret, keep=name == "admin.token"):
            written.append(etc / name)
    if not (etc / "tls" / "cert.pem").exists():  # install.sh made it already; a hand-run init makes its own
        made = tlscert.renew(etc / "tls" / "cert.pem", etc / "tls" / "key.pem")
        written += [made.cert_file, made.key_file]
        if os.geteuid() == 0:
            with contextlib.suppress(LookupError, OSError):
                shutil.chown(made.key_file, SERVICE_USER, SERVICE_USER)
    build_config(tomllib.loads(text), config_path)  # raises ConfigError naming the key, before the file exists
    tmp = config_path.with_name(config_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o640)
    if os.geteuid() == 0:
        try:
            shutil.chown(tmp, group=SERVICE_USER)  # root:kassabro 0640, as install.sh leaves it
        except (LookupError, OSError):
            pass
    os.replace(tmp, config_path)
    _next_steps(answers, config_path, written, out)


def _next_steps(answers: Answers, config_path: Path, written: list[Path], out: TextIO) -> None:
    skus = SkusConfig()
    setup = "a" if answers.sales_to_hogia == "till" else "b"
    out.write(f"\nSkrev / Wrote {config_path} (uppsättning / setup ({setup}), docs/setups.md)\n")
    for path in written:
        out.write(f"  {path} (0600)\n")
    out.write("\nNästa steg / Next steps:\n")
    step = 1
    for till in answers.tills:
        token = config_path.parent.resolve() / "tills" / f"{till}.token"
        out.write(
            f"{step}. Kassan {till}: skicka till https://<pi>:8780 med 'Authorization: Bearer' + innehållet i {token}\n"
            f"   Till {till}: post to https://<pi>:8780 with 'Authorization: Bearer' + the contents of {token}\n"
        )
        step += 1
    out.write(
        f"{step}. I Hogia Smart: lägg upp artiklarna {skus.shipping}, {skus.handling} och {skus.discount} "
        "i artikelregistret (frakt, expeditionsavgift, rabatt).\n"
        f"   In Hogia Smart: create the articles {skus.shipping}, {skus.handling} and {skus.discount} "
        "in the article register.\n"
    )
    step += 1
    if setup == "a":
        out.write(
            f"{step}. Låt kassans egen synk till Hogia Smart vara på; Kassabro bokar inget i Hogia.\n"
            "   Keep the till's own sync to Hogia Smart on; Kassabro books nothing in Hogia.\n"
        )
    else:
        out.write(
            f"{step}. Stäng av kassans egen synk till Hogia Smart, annars räknas varje köp två gånger.\n"
            "   Switch off the till's own sync to Hogia Smart, or every sale counts twice.\n"
        )
    step += 1
    if answers.webshop_stock == "kassabro":
        out.write(
            f"{step}. I Sharespine: läs inte lagersaldo från Hogia API för butikens artiklar.\n"
            "   In Sharespine: do not read stock levels from the Hogia API for this shop's articles.\n"
        )
        step += 1
    out.write(
        f"{step}. sudo kassabro check-config --config {config_path} && sudo systemctl restart kassabro\n"
        "   Statussidan / the status page: http://<pi>:8781/\n"
    )


def run(args: argparse.Namespace, config_path: Path) -> int:
    """``kassabro init``: ask (unless ``--non-interactive``), write, print the next steps."""
    _refuse_to_overwrite(config_path, args.force)
    answers = answers_from_flags(args) if args.non_interactive else _interactive(args)
    write(answers, config_path, force=args.force, out=sys.stdout)
    return 0


def _interactive(args: argparse.Namespace) -> Answers:
    # Flags given with an interactive run become the defaults in brackets.
    answers = Answers(
        store_id=args.store_id or Answers.store_id,
        tills=args.tills or ["kassa-1"],
        sales_to_hogia=args.sales_to_hogia or "till",
        webshop_stock=args.webshop_stock or "hogia",
        hogia_url=args.hogia_url,
        sharespine_url=args.sharespine_url,
        backend_url=args.backend_url,
        sie=bool(args.sie),
        orgnr=args.orgnr or "",
        company_name=args.company_name or "",
        data_dir=args.data_dir or Answers.data_dir,
    )

    def read() -> str:
        line = sys.stdin.readline()
        if not line:
            raise InitRefused("no answer (end of input); nothing was written")
        return line

    return ask(Asker(sys.stdout, read, getpass.getpass), answers)
