"""Caller authentication for the simulators: API key header, bearer token, OAuth2.

The vendor simulators accept one configured way in, the way a partner API
would, and count refusals so tests can see that a client refreshed its token.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

AuthMode = Literal["none", "api_key", "bearer", "oauth2"]


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class Authenticator:
    """Checks callers of one simulator.

    Args:
        mode: ``none``; ``api_key`` (``api_key_header: <api_key>``); ``bearer``
            (``Authorization: Bearer <api_key>``); ``oauth2`` (client credentials:
            ``POST /oauth/token`` issues tokens that live ``token_ttl_s``).
    """

    mode: AuthMode = "none"
    api_key: str | None = None
    api_key_header: str = "X-Api-Key"
    client_id: str | None = None
    client_secret: str | None = None
    token_ttl_s: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    unauthorized: int = 0

    def check(self, request: Request) -> Response | None:
        """None when the caller may pass, else the 401 to answer."""
        if self.mode == "none":
            return None
        if self.mode == "api_key":
            given = request.headers.get(self.api_key_header, "")
            ok = self.api_key is not None and _same(given, self.api_key)
        else:
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if self.mode == "bearer":
                ok = self.api_key is not None and _same(given, self.api_key)
            else:
                expires = self.tokens.get(given)
                ok = expires is not None and expires > time.monotonic()
        if ok:
            return None
        self.unauthorized += 1
        return JSONResponse(
            {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )

    def revoke_tokens(self) -> None:
        """Forget every issued token, as a server-side rotation would."""
        self.tokens.clear()

    async def token_endpoint(self, request: Request) -> Response:
        """``POST /oauth/token``: OAuth2 client credentials (RFC 6749 §4.4).

        Credentials by HTTP Basic or as form fields ``client_id``/``client_secret``.
        """
        # Parsed by hand: Starlette's form parser needs python-multipart, a dependency
        # we do not otherwise have.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        client_id, client_secret = str(form.get("client_id") or ""), str(form.get("client_secret") or "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        if not (
            self.mode == "oauth2"
            and self.client_id is not None
            and self.client_secret is not None
            and _same(client_id, self.client_id)
            and _same(client_secret, self.client_secret)
        ):
            self.unauthorized += 1
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_ttl_s
        self.tokens_issued += 1
        return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl_s})


async def authorized_json(authn: Authenticator, request: Request) -> tuple[Any, Response | None]:
    """The request's JSON body once its credentials pass; else the answer to send instead."""
    refused = authn.check(request)
    if refused is not None:
        return None, refused
    try:
        return await request.json(), None
    except ValueError:
        return None, JSONResponse({"error": "body must be JSON"}, status_code=400)
