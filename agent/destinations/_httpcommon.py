"""What the HTTP-based adapters (http, hogia, sharespine) share.

One place turns an HTTP outcome into the error tree of ``agent.destinations.base``
so the three adapters cannot drift apart on what "retryable" means:
connection errors, timeouts, 408, 425, 429 and 5xx are retryable (with the
receiver's ``Retry-After``); any other 4xx is permanent; anything else
unexpected (a redirect, a 1xx) is retryable, because it is a setup problem
that must not turn records into dead letters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from agent.canonical import canonical_bytes
from agent.destinations.base import (
    PermanentError,
    RetryableError,
    is_retryable_status,
    parse_retry_after,
)

USER_AGENT = "kassabro"
CENT = Decimal("0.01")
QTY = Decimal("0.001")
AUTH_STATUSES = frozenset({401, 403})
"""Answers about our credentials; adapters refresh a token once before giving up."""


class PooledAdapter:
    """The connection pool every HTTP adapter keeps: opened by ``start``, closed by ``close``.

    Subclasses set ``timeout_s`` and ``_transport`` and call ``_open_pool()``
    at the end of their ``start`` (after reading their secrets).
    """

    timeout_s: float
    _transport: httpx.AsyncBaseTransport | None
    _client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._open_pool()

    def _open_pool(self) -> None:
        self._client = make_client(self.timeout_s, self._transport)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _pool(self) -> httpx.AsyncClient:
        """The open client, starting the adapter first if nobody did."""
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client


def make_client(timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An httpx client with our timeout and user agent; ``transport`` for tests."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        headers={"User-Agent": USER_AGENT},
        transport=transport,
        follow_redirects=False,
    )


def dumps(body: Any) -> bytes:
    """Canonical JSON: a resent batch is byte for byte what was sent the first time."""
    return canonical_bytes(body)


async def send_request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    data: dict[str, str] | None = None,
) -> httpx.Response:
    """Send one request; transport failures become ``RetryableError``.

    Args:
        what: a few words naming the call, for messages ("POST orders").
    """
    all_headers = dict(headers or {})
    if content is not None:
        all_headers.setdefault("Content-Type", "application/json")
    try:
        return await client.request(method, url, headers=all_headers, content=content, data=data)
    except httpx.TimeoutException as exc:
        raise RetryableError(f"{what}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise RetryableError(f"{what}: connection failed: {exc or type(exc).__name__}") from exc


def raise_for_status(response: httpx.Response, *, what: str) -> None:
    """Raise the error the delivery loop needs for a non-2xx answer; 2xx passes."""
    status = response.status_code
    if 200 <= status <= 299:
        return
    text = response.text[:1024]
    if is_retryable_status(status):
        raise RetryableError(
            f"{what}: HTTP {status}: {text[:200]}".rstrip(": "),
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            status=status,
        )
    if 400 <= status <= 499:
        raise PermanentError(f"{what}: HTTP {status}: {text[:200]}", status=status, body=text)
    raise RetryableError(f"{what}: unexpected HTTP {status}", status=status)


def json_or_empty(response: httpx.Response) -> Any:
    """The answer's JSON, or {} when it has none (a bare 204, say)."""
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}
