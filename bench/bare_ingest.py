"""The floor for HTTP ingest: a bare Starlette endpoint that parses the sale and inserts it into SQLite.

``bench_request`` runs it under uvicorn (the agent's settings) beside the
agent, so "agent CPU per request" has a same-run yardstick: what any Python
service on this stack pays for one JSON POST and one committed row (WAL,
``synchronous = FULL``, one transaction per request). No validation, no
derived movements, no idempotency: everything the agent adds is the ratio.

``BARE_INGEST_DB`` names the SQLite file.
"""

from __future__ import annotations

import json
import os
import sqlite3

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app() -> Starlette:
    conn = sqlite3.connect(os.environ["BARE_INGEST_DB"], isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, data TEXT)"
    )

    async def sales(request: Request) -> JSONResponse:
        body = await request.body()
        data = json.loads(body)
        key = f"sale:{data['till_id']}:{data['receipt_no']}"
        cur = conn.execute("INSERT INTO records(key, data) VALUES (?, ?)", (key, body.decode()))
        return JSONResponse({"key": key, "seq": cur.lastrowid}, status_code=201)

    return Starlette(routes=[Route("/v1/sales", sales, methods=["POST"])])
