"""HTTP ingest (contract §2): how the till hands records over on the LAN.

The body limit is enforced while reading, so a 2 GiB upload costs 1 MiB of
memory before it is refused. The bearer token is compared in constant time.
Every answer is one of the contract's table; a 422 names the field.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.ingest import MAX_BODY_BYTES, IngestAnswer, Ingestor
from agent.outbox.store import OutboxError

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def token_matches(header: str | None, token: str) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>``."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def create_ingest_app(
    ingestor: Ingestor,
    *,
    token: str | None,
    on_refused: Callable[[str], None] | None = None,
    get_record: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
) -> Starlette:
    """The ingest API as a Starlette app.

    Args:
        ingestor: where records go.
        token: the bearer token the till must send, or None (loopback only).
        on_refused: called with a reason for refusals that never reach the
            ingestor (unauthorized, too_large, unsupported_media_type), for metrics.
        get_record: looks a stored record up by key, for ``GET /v1/records/{key}``.
    """

    def refused(reason: str) -> None:
        if on_refused is not None:
            on_refused(reason)

    def authorized(request: Request) -> bool:
        return token is None or token_matches(request.headers.get("authorization"), token)

    def unauthorized() -> JSONResponse:
        refused("unauthorized")
        response = _error(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="kassabro"'
        return response

    async def body_of(request: Request) -> bytes | Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            refused("unsupported_media_type")
            return _error(415, "unsupported_media_type", "send the record as Content-Type: application/json")
        try:
            return await read_limited(request)
        except BodyTooLarge:
            refused("too_large")
            return _error(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes (1 MiB)")

    def answer(result: IngestAnswer) -> JSONResponse:
        return JSONResponse(result.body, status_code=result.status)

    def endpoint(record_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if not authorized(request):
                return unauthorized()
            body = await body_of(request)
            if isinstance(body, Response):
                return body
            if record_type is None:
                return answer(await ingestor.batch(body))
            return answer(await ingestor.one(record_type, body))

        return handle

    async def record(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
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

    return Starlette(
        routes=[
            Route("/v1/sales", endpoint("sale"), methods=["POST"]),
            Route("/v1/stock-movements", endpoint("stock_movement"), methods=["POST"]),
            Route("/v1/batch", endpoint(None), methods=["POST"]),
            Route("/v1/records/{key:path}", record, methods=["GET"]),
        ]
    )
