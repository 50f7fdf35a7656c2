"""What the HTTP-based adapters (http, hogia, sharespine) share: the ``HttpAdapter`` base.

One place decides what the three must not drift apart on:

- **The client's lifetime.** ``start`` reads the adapter's secrets and opens
  one connection pool; ``close`` closes it; a ``send`` before ``start`` starts.
- **Timeouts and manners.** ``timeout_s`` (the config model's, for connect,
  read and write each), ``User-Agent: kassabro``, redirects not followed.
- **Credentials as an ``httpx.Auth``** the adapter builds from its config: a
  fixed header (an API key, a bearer token) or OAuth2 client credentials.
- **What an answer means.** Connection errors, timeouts, 408, 425, 429 and 5xx
  are retryable (with the receiver's ``Retry-After``). 401, 403, 404 and 407
  speak of the agent's setup (a token, a URL, a proxy), not of a record: they
  are retryable too, with a hint for the status page, so the destination goes
  offline until the config is fixed and no record becomes a dead letter. Any
  other 4xx is permanent. Anything else unexpected (a redirect, a 1xx) is
  retryable: a setup problem that must not turn records into dead letters.
- **One record per request** (``post_each``): a record the receiver refuses
  is reported in ``SendResult.rejected`` while the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import Field, HttpUrl, field_validator

from agent.canonical import canonical_bytes
from agent.configbase import DestinationBase
from agent.destinations.base import (
    Destination,
    PermanentError,
    RetryableError,
    is_retryable_status,
    parse_retry_after,
)
from agent.outbox.types import Batch, Envelope
from agent.records import RecordType

USER_AGENT = "kassabro"

MISCONFIGURED: dict[int, str] = {
    401: "{receiver} refused our credentials; check the token in the config",
    403: "{receiver} refused our credentials; check the token in the config",
    404: "{receiver} has nothing at this address; check the URL in the config",
    407: "the proxy wants credentials; check the proxy in the config",
}
"""Answers about the agent's setup rather than a record, with the hint the status page shows."""

MAPPING_ERRORS = (KeyError, TypeError, ValueError, ArithmeticError)
"""What turning a stored record into a vendor's body may raise: the record cannot be sent as it is."""


class HttpKeys(DestinationBase):
    """Keys of every HTTP-based kind."""

    timeout_s: float = Field(default=10.0, gt=0, le=600)


class VendorApiKeys(HttpKeys):
    """Keys the vendor APIs (hogia, sharespine) share: where the API is and its key."""

    base_url: HttpUrl
    api_key_file: Path | None = None
    api_key_header: str = "X-Api-Key"

    @field_validator("types")
    @classmethod
    def _no_z_reports(cls, types: Sequence[RecordType]) -> Sequence[RecordType]:
        # No vendor adapter documents a use for Z-reports (contract §3).
        if "z_report" in types:
            kind = cls.model_fields["kind"].default
            raise ValueError(f"a {kind} destination takes no z_report records (no use is documented)")
        return types


def vendor_url(base_url: HttpUrl, path: str) -> str:
    """``path`` (``/api/orders``) under ``base_url``, whether or not that ends in a slash."""
    return str(base_url).rstrip("/") + path


class HeaderAuth(httpx.Auth):
    """One fixed header on every request: an API key (``X-Api-Key: …``) or ``Authorization: Bearer …``."""

    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self.value = value

    @classmethod
    def bearer(cls, token: str) -> HeaderAuth:
        return cls("Authorization", f"Bearer {token}")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self.value
        yield request


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 §4.4) with a cached bearer token.

    The token is fetched before the first request and again shortly before it
    expires; a 401 fetches a new one and sends the request once more (the
    server no longer knows the token: it expired early or was rotated). A
    refused token request is a setup problem: a ``RetryableError``, never a
    dead letter.

    Args:
        token_url: the token endpoint.
        client_id: the client; with ``client_secret`` sent as HTTP Basic.
        scope: a scope to ask for, if the API wants one.
        clock: monotonic seconds (tests pass their own).
    """

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.scope = scope
        self.clock = clock
        pair = f"{client_id}:{client_secret}".encode()
        self._basic = "Basic " + base64.b64encode(pair).decode("ascii")
        self._token: str | None = None
        self._expires_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or self.clock() >= self._expires_at:
            answer = yield self._token_request(request)
            self._take(answer)
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            answer = yield self._token_request(request)
            self._take(answer)
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        """The token request, with the timeout and user agent the client gave ``request``."""
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        return httpx.Request(
            "POST",
            self.token_url,
            data=form,
            headers={"Authorization": self._basic, "User-Agent": request.headers.get("User-Agent", USER_AGENT)},
            extensions={"timeout": request.extensions.get("timeout", {})},
        )

    def _take(self, response: httpx.Response) -> None:
        """Keep the token from the endpoint's answer, or raise why there is none."""
        what = f"POST {self.token_url}"
        status = response.status_code
        if 400 <= status <= 499 and not is_retryable_status(status):
            raise RetryableError(f"{what}: HTTP {status}: token request refused: {response.text[:200]}", status=status)
        raise_for_status(response, what=what, receiver="the token endpoint")
        answer = json_or_empty(response)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RetryableError(f"{what}: the answer has no access_token")
        try:
            expires_in = float(answer.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        # Renew a little early so a token does not expire between check and use.
        margin = min(30.0, expires_in / 10)
        self._token = token
        self._expires_at = self.clock() + max(0.0, expires_in - margin)


ConfigT = TypeVar("ConfigT", bound=HttpKeys)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one client TLS context (system CA bundle, verification on) every HTTP adapter shares.

    Loading the CA bundle is the slow part of opening a pool (a few hundred
    milliseconds here, more on a Pi's core); three adapters paid it three
    times at every start. A context is safe to share between clients.
    """
    return httpx.create_ssl_context()


class HttpAdapter(Destination, Generic[ConfigT]):
    """The base of the http, hogia and sharespine adapters (see the module docstring).

    Args:
        config: the destination's keys; the one place of every key and its default.
        transport: an httpx transport, for tests only.
    """

    receiver: ClassVar[str]
    """Who answers, in messages: "the receiver", "Hogia", "Sharespine"."""

    def __init__(self, config: ConfigT, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.name = config.name
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def auth(self) -> httpx.Auth | None:
        """The credentials from the config's secret files (``ValueError`` naming the key); None sends none."""
        return None

    async def start(self) -> None:
        """Read the secrets and open the connection pool.

        On a worker thread: the CA bundle and httpx's transport modules load
        on the first pool, a CPU-bound second on a Pi that must not hold the
        event loop while tills are already posting.
        """
        if self._client is None:
            self._client = await asyncio.to_thread(self._new_client)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            auth=self.auth(),
            verify=tls_context(),
            timeout=httpx.Timeout(self.config.timeout_s),
            headers={"User-Agent": USER_AGENT},
            transport=self._transport,
            follow_redirects=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def post(self, url: str, content: bytes, *, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST one JSON body; return a 2xx answer, or raise what any other answer means."""
        if self._client is None:
            await self.start()
        assert self._client is not None
        what = f"POST {url}"
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            response = await self._client.post(url, headers=all_headers, content=content)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{what}: connection failed: {exc or type(exc).__name__}") from exc
        raise_for_status(response, what=what, receiver=self.receiver)
        return response

    async def post_each(
        self,
        batch: Batch,
        envelopes: Iterable[Envelope],
        request: Callable[[Envelope], tuple[str, Any] | None],
    ) -> dict[str, str]:
        """POST ``envelopes`` one request each, in order; return the refused ones' reasons by id.

        ``request`` maps an envelope to ``(url, JSON body)``, or None to skip it
        (it counts as delivered). A record that cannot be mapped, or that the
        receiver refuses (a permanent 4xx), is reported while the others go
        on; alone in its batch it raises instead, so its dead letter keeps the
        status. Retryable failures stop the batch: it is sent again whole, and
        the receiver deduplicates what already arrived.
        """
        rejected: dict[str, str] = {}
        for envelope in envelopes:
            try:
                try:
                    planned = request(envelope)
                except MAPPING_ERRORS as exc:
                    raise PermanentError(
                        f"cannot map record {envelope.get('key')} for {self.receiver}: {exc!r}"
                    ) from exc
                if planned is not None:
                    url, body = planned
                    await self.post(url, dumps(body))
            except PermanentError as exc:
                if len(batch.records) == 1:
                    raise
                status = f"HTTP {exc.status}: " if exc.status else ""
                rejected[envelope["id"]] = f"{status}{exc.body or exc}"[:1024]
        return rejected


def dumps(body: Any) -> bytes:
    """Canonical JSON: a resent batch is byte for byte what was sent the first time."""
    return canonical_bytes(body)


def raise_for_status(response: httpx.Response, *, what: str, receiver: str) -> None:
    """Raise the error the delivery loop needs for a non-2xx answer; 2xx passes.

    Args:
        what: the call, for messages ("POST https://…/orders").
        receiver: who answered, for the misconfiguration hint ("Hogia").
    """
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
    if status in MISCONFIGURED:
        hint = MISCONFIGURED[status].format(receiver=receiver)
        raise RetryableError(f"{what}: HTTP {status}: {hint}", status=status)
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
