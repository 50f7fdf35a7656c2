"""Hogia Smart's article register, kept on the Pi (contract §3, docs/setups.md).

Hogia Smart is master of article number, name, VAT, price, stock level and
"Skicka till Webshop". The ``hogia`` kind reads the register every
``register_refresh_s`` into two tables of the outbox database (migration 2),
so it survives a restart and is used while Hogia is unreachable. With a
register: Sharespine gets stock only for webshop articles (only those exist
there), a sale of an article Hogia does not know is a problem naming it, the
missing cost articles (``fraktavg``, ``expavg``, ``rabatt`` or ``[skus]``) are
a problem saying what to create, and a register older than 24 h is a problem.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

from agent.configbase import SkusConfig
from agent.reconcile import Problem

STALE_AFTER = timedelta(hours=24)
MAX_UNKNOWN = 50
"""Unknown SKUs remembered for the page; more only adds to the count."""


class Article(TypedDict):
    article_number: str
    name: str
    vat_rate: int
    price: str
    stock_level: str
    webshop: bool


@dataclass(frozen=True)
class Snapshot:
    fetched_at: datetime
    articles: dict[str, Article]

    def is_webshop(self, sku: str) -> bool:
        article = self.articles.get(sku)
        return article is not None and article["webshop"]


def parse_articles(body: Any) -> list[Article]:
    """Hogia's answer (``{"articles": [...]}``, the fields docs/destinations.md assumes) as articles.

    Raises:
        ValueError: naming the field when the answer is not a register.
    """
    rows = body.get("articles") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise ValueError("the answer has no 'articles' list")
    articles: list[Article] = []
    for index, row in enumerate(rows):
        try:
            articles.append(
                Article(
                    article_number=str(row["articleNumber"]),
                    name=str(row.get("name") or ""),
                    vat_rate=int(row.get("vatRate", 25)),
                    price=str(row.get("price", "0")),
                    stock_level=str(row.get("stockLevel", "0")),
                    webshop=bool(row.get("sendToWebshop", False)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"articles[{index}]: {exc!r}") from exc
    return articles


class ArticleRegister:
    """The register in the outbox database, and the problems it shows.

    One instance per agent, shared by the ``hogia`` adapter that fills it and
    the ``sharespine`` adapter that reads it. SQLite access is short and rare
    (a replace per refresh, one read at start), on its own connection.
    """

    def __init__(self, db_path: Path, skus: SkusConfig | None = None) -> None:
        self.db_path = db_path
        self.skus = skus or SkusConfig()
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._loaded = False
        self._unknown: dict[str, str] = {}  # sku -> first seen
        self.last_error: str | None = None
        self.skipped_not_webshop = 0
        """Stock movements not sent to Sharespine because the article is not a webshop article."""

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def snapshot(self) -> Snapshot | None:
        """The register as last fetched (read from the database once, then kept)."""
        with self._lock:
            if not self._loaded:
                self._snapshot = self._read()
                self._loaded = True
            return self._snapshot

    def _read(self) -> Snapshot | None:
        conn = self._connect()
        try:
            meta = conn.execute("SELECT fetched_at FROM article_register WHERE id = 1").fetchone()
            if meta is None:
                return None
            rows = conn.execute(
                "SELECT article_number, name, vat_rate, price, stock_level, webshop FROM articles"
            ).fetchall()
        except sqlite3.OperationalError:  # an outbox before migration 2: no register yet
            return None
        finally:
            conn.close()
        articles = {
            r[0]: Article(
                article_number=r[0], name=r[1], vat_rate=r[2], price=r[3], stock_level=r[4], webshop=bool(r[5])
            )
            for r in rows
        }
        return Snapshot(datetime.fromisoformat(meta[0]), articles)

    def save(self, articles: list[Article], fetched_at: datetime) -> None:
        """Replace the stored register in one transaction, so a crash leaves the old one or the new one."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM articles")
            conn.executemany(
                "INSERT OR REPLACE INTO articles VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (a["article_number"], a["name"], a["vat_rate"], a["price"], a["stock_level"], int(a["webshop"]))
                    for a in articles
                ],
            )
            conn.execute(
                "INSERT OR REPLACE INTO article_register (id, fetched_at, count) VALUES (1, ?, ?)",
                (fetched_at.isoformat(), len(articles)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        with self._lock:
            self._snapshot = Snapshot(fetched_at, {a["article_number"]: a for a in articles})
            self._loaded = True
            self.last_error = None

    def note_sale(self, sale: dict[str, Any], now: datetime) -> None:
        """Remember the sale's SKUs the register does not know (a problem until the register has them)."""
        snapshot = self.snapshot()
        if snapshot is None:
            return
        for line in sale.get("lines") or []:
            sku = str(line.get("sku"))
            if sku not in snapshot.articles and sku not in self._unknown and len(self._unknown) < MAX_UNKNOWN:
                self._unknown[sku] = now.isoformat()

    def summary(self, now: datetime | None = None) -> dict[str, Any] | None:
        """``{"fetched_at", "age_s", "articles", "webshop_articles"}`` for the page; None before the first fetch."""
        snapshot = self.snapshot()
        if snapshot is None:
            return None
        now = now or datetime.now(UTC)
        return {
            "fetched_at": snapshot.fetched_at.isoformat(),
            "age_s": round((now - snapshot.fetched_at).total_seconds()),
            "articles": len(snapshot.articles),
            "webshop_articles": sum(1 for a in snapshot.articles.values() if a["webshop"]),
            "last_error": self.last_error,
            "skipped_not_webshop": self.skipped_not_webshop,
        }

    def problems(self, now: datetime | None = None) -> list[Problem]:
        """Unknown SKUs, missing cost articles, a stale register: Swedish first, what to do in Hogia Smart."""
        snapshot = self.snapshot()
        if snapshot is None:
            return []
        now = now or datetime.now(UTC)
        out: list[Problem] = []
        missing = [
            s for s in (self.skus.shipping, self.skus.handling, self.skus.discount) if s not in snapshot.articles
        ]
        if missing:
            names = ", ".join(missing)
            out.append(
                Problem(
                    code="register_cost_articles_missing",
                    text=f"Lägg upp artiklarna {names} i artikelregistret i Hogia Smart: "
                    "frakt, expeditionsavgift och rabatt på order bokförs på dem.",
                    text_en=f"Create the articles {names} in Hogia Smart's article register: "
                    "shipping, handling fees and discounts on orders are booked on them.",
                    since=snapshot.fetched_at.isoformat(),
                )
            )
        unknown = {sku: since for sku, since in self._unknown.items() if sku not in snapshot.articles}
        self._unknown = unknown
        if unknown:
            names = ", ".join(sorted(unknown))
            out.append(
                Problem(
                    code="register_unknown_sku",
                    text=f"Kassan sålde artiklar som inte finns i Hogia Smarts artikelregister: {names}. "
                    "Lägg upp dem i Hogia Smart (eller rätta artikelnumret i kassan).",
                    text_en=f"The till sold articles Hogia Smart's register does not have: {names}. "
                    "Create them in Hogia Smart (or correct the article number at the till).",
                    since=min(unknown.values()),
                )
            )
        if now - snapshot.fetched_at > STALE_AFTER:
            hours = int((now - snapshot.fetched_at).total_seconds() // 3600)
            out.append(
                Problem(
                    code="register_stale",
                    text=f"Artikelregistret från Hogia Smart är {hours} timmar gammalt: Kassabro når inte Hogia API. "
                    "Kontrollera adressen och nyckeln för hogia.",
                    text_en=f"The article register from Hogia Smart is {hours} hours old: Kassabro cannot reach "
                    "the Hogia API. Check the hogia destination's address and key.",
                    since=(snapshot.fetched_at + STALE_AFTER).isoformat(),
                )
            )
        return out
