"""HTTP ingest (contract §2): how the till hands records over on the LAN.

The body limit is enforced while reading, so a 2 GiB upload costs 1 MiB of
memory before it is refused. The bearer token is compared in constant time.
Every answer is one of the contract's table; a 422 names the field.

The three POST endpoints are served by ``IngestApp``, a plain ASGI callable,
not by Starlette's router: on a Raspberry Pi a sale's CPU is the budget, and
Starlette's middleware stack, ``Request`` and ``JSONResponse`` cost more per
request than the JSON parse and the validation together
(docs/benchmarks.md, "Agent CPU per HTTP ingest request"). Every other path
(``GET /v1/records/...``, 404s, 405s) goes to the Starlette app as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent.ingest import MAX_BODY_BYTES, Ingestor
from agent.openapi import openapi_document
from agent.outbox.store import OutboxError
from agent.sources.tokens import FailedAuthLimit, TokenCheck

log = logging.getLogger(__name__)


POST_PATHS: dict[str, str | None] = {
    "/v1/sales": "sale",
    "/v1/stock-movements": "stock_movement",
    "/v1/z-reports": "z_report",
    "/v1/batch": None,
}
"""The ingest endpoints and their record type (None: a batch)."""

_JSON_HEADER = (b"content-type", b"application/json")
_CHALLENGE = (b"www-authenticate", b'Bearer realm="kassabro"')


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
"""Built once: ``json.dumps`` with these options builds a new encoder for every answer."""


def _json_bytes(body: Any) -> bytes:
    """The answer's bytes, exactly as Starlette's ``JSONResponse`` renders them."""
    return _ENCODER.encode(body).encode("utf-8")


class IngestApp:
    """ASGI: ``POST`` to the ingest endpoints handled here, everything else by ``fallback``.

    The same checks in the same order as before: the token, the media type,
    the body limit (declared and while reading), then the ingestor's answer,
    told which till a per-till token belongs to (403 for another till's record).
    """

    def __init__(
        self,
        ingestor: Ingestor,
        fallback: Starlette,
        *,
        tokens: TokenCheck,
        on_refused: Callable[[str], None] | None = None,
        on_auth_failed: Callable[[str], None] | None = None,
        limit: FailedAuthLimit | None = None,
    ):
        self.ingestor = ingestor
        self.fallback = fallback
        self.tokens = tokens
        self.on_refused = on_refused
        self.on_auth_failed = on_auth_failed
        self.limit = limit or FailedAuthLimit()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in POST_PATHS:
            await self.fallback(scope, receive, send)
            return
        status, body, extra = await self._handle(scope, receive)
        headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    def auth_failed(self, client: str) -> None:
        """A missing or wrong token from ``client``: counted (metrics) and drawn from its limit."""
        self._refused("unauthorized")
        self.limit.failed(client)
        if self.on_auth_failed is not None:
            self.on_auth_failed(client)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        authorization = content_type = declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
        client = _client_of(scope)
        if self.tokens.required and self.limit.blocked(client):
            self._refused("rate_limited")
            retry = str(self.limit.retry_after_s(client)).encode()
            message = "too many wrong tokens from this address; wait and retry"
            return 429, _json_bytes(_error_body("too_many_attempts", message)), [(b"retry-after", retry)]
        caller = self.tokens.caller(authorization)
        if caller is None:
            self.auth_failed(client)
            return 401, _json_bytes(_error_body("unauthorized", "missing or wrong bearer token")), [_CHALLENGE]
        media = (content_type or b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            self._refused("unsupported_media_type")
            message = "send the record as Content-Type: application/json"
            return 415, _json_bytes(_error_body("unsupported_media_type", message)), []
        body = await _read_body(receive, declared)
        if body is None:
            self._refused("too_large")
            message = f"the body is over {MAX_BODY_BYTES} bytes (1 MiB)"
            return 413, _json_bytes(_error_body("too_large", message)), []
        record_type = POST_PATHS[scope["path"]]
        if record_type is None:
            result = await self.ingestor.batch(body, till_id=caller.till_id)
        else:
            result = await self.ingestor.one(record_type, body, till_id=caller.till_id)
        return result.status, _json_bytes(result.body), []


def _client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def _error_body(error: str, message: str) -> dict[str, Any]:
    return {"error": error, "message": message}


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse(_error_body(error, message), status_code=status)


async def _read_body(receive: Receive, declared: bytes | None, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The request body, or None as soon as it is over ``limit`` (declared or while reading)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_ingest_app(
    ingestor: Ingestor,
    *,
    token: str | None,
    tills: dict[str, str] | None = None,
    on_refused: Callable[[str], None] | None = None,
    on_auth_failed: Callable[[str], None] | None = None,
    get_record: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
) -> IngestApp:
    """The ingest API: ``IngestApp`` for the POSTs, a Starlette app for the rest.

    Args:
        ingestor: where records go.
        token: the shared bearer token (any till), or None.
        tills: each till's own token -> its ``till_id`` (``[[ingest.tills]]``).
            With neither, no token is asked for (loopback only).
        on_refused: called with a reason for refusals that never reach the
            ingestor (unauthorized, rate_limited, too_large, unsupported_media_type), for metrics.
        on_auth_failed: called with the client's address for every missing or wrong token.
        get_record: looks a stored record up by key, for ``GET /v1/records/{key}``.
    """

    tokens = TokenCheck(token, tills)
    app: IngestApp

    def unauthorized(request: Request) -> JSONResponse:
        app.auth_failed(_client_of(request.scope))
        response = _error(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="kassabro"'
        return response

    async def never(request: Request) -> Response:
        raise AssertionError("IngestApp answers every POST to the ingest paths")

    async def record(request: Request) -> Response:
        client = _client_of(request.scope)
        if tokens.required and app.limit.blocked(client):
            return _error(429, "too_many_attempts", "too many wrong tokens from this address; wait and retry")
        if tokens.caller(request.headers.get("authorization")) is None:
            return unauthorized(request)
        key = request.path_params["key"]
        if get_record is None:
            return _error(404, "not_found", f"no record has the key {key}")
        try:
            found = await get_record(key)
        except OutboxError as exc:
            return _error(503, "unavailable", str(exc))
        if found is None:
            return _error(404, "not_found", f"no record has the key {key}")
        return JSONResponse(found)

    async def openapi(request: Request) -> Response:
        # No token: the document holds no data, and a till's tools read it before they have one.
        return JSONResponse(openapi_document())

    starlette = Starlette(
        routes=[
            # The POSTs never reach these routes (IngestApp answers them); they stay so a
            # GET or HEAD on an ingest path is a 405 naming POST, as before.
            Route("/v1/sales", never, methods=["POST"]),
            Route("/v1/stock-movements", never, methods=["POST"]),
            Route("/v1/z-reports", never, methods=["POST"]),
            Route("/v1/batch", never, methods=["POST"]),
            Route("/v1/records/{key:path}", record, methods=["GET"]),
            Route("/v1/openapi.json", openapi, methods=["GET"]),
        ]
    )
    app = IngestApp(ingestor, starlette, tokens=tokens, on_refused=on_refused, on_auth_failed=on_auth_failed)
    return app
