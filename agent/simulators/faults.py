"""Fault knobs shared by the simulators: down, slow, 429, 5xx, lost answers, refusals.

Every simulator (receiver, hogia, sharespine) mounts the same knobs so tests,
the chaos suite and a curious technician in the demo can break a destination
on purpose and watch the agent cope. They are set over HTTP::

    POST /_faults   {"throttle_next": 3, "retry_after_s": 2}   (merges; answers the full state)
    GET  /_faults                                              (the full state)
    DELETE /_faults                                            (everything back to normal)

Knobs (all optional in a POST, unknown keys are refused with 422 naming them):

- ``down``: ``"off"`` | ``"503"`` (answer 503) | ``"close"`` (drop the connection).
- ``slow_s``: wait this long before answering each request.
- ``throttle_next`` + ``retry_after_s``: the next K requests get 429 with ``Retry-After``.
- ``fail_next`` + ``fail_status``: the next K requests get that 5xx (default 500).
- ``lose_answer_next`` + ``lose_answer_mode``: the next K requests are committed to
  the ledger but the answer is lost: ``"502"`` answers 502, ``"drop"`` closes the
  connection mid-answer. The sender cannot know it succeeded and sends again.
- ``refuse_skus`` / ``refuse_ids``: records holding one of these SKUs, or with
  one of these envelope ids, are refused for good (422 from hogia and
  sharespine; the receiver answers by ``refuse_mode``: ``"422"`` for the whole
  batch or ``"rejected"`` for 200 with ``{"rejected": [{"id", "error"}]}``).

Paths starting with ``/_`` (the ledger, the knobs) are never faulted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class DropConnection(Exception):
    """Raised to make uvicorn close the connection without a complete answer."""


class FaultSettings(BaseModel):
    """The knobs; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    down: Literal["off", "503", "close"] = "off"
    slow_s: float = Field(default=0.0, ge=0, le=600)
    throttle_next: int = Field(default=0, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    fail_next: int = Field(default=0, ge=0)
    fail_status: int = Field(default=500, ge=500, le=599)
    lose_answer_next: int = Field(default=0, ge=0)
    lose_answer_mode: Literal["502", "drop"] = "502"
    refuse_skus: list[str] = Field(default_factory=list)
    refuse_ids: list[str] = Field(default_factory=list)
    refuse_mode: Literal["422", "rejected"] = "422"


class DropResponse(Response):
    """Starts an answer promising a body, then breaks the connection.

    Sending the start first matters: an exception before it would make
    Starlette answer a tidy 500 instead of a broken connection.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        raise DropConnection("connection dropped on purpose by a fault knob")


class Faults:
    """The live fault state of one simulator, plus counters for the ledger."""

    def __init__(self, **settings: Any) -> None:
        self.settings = FaultSettings(**settings)
        self.requests = 0
        self.faulted = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into the knobs; raises ``ValidationError`` naming bad keys."""
        merged = self.settings.model_dump() | changes
        self.settings = FaultSettings.model_validate(merged)

    def reset(self) -> None:
        self.settings = FaultSettings()

    def as_json(self) -> dict[str, Any]:
        return self.settings.model_dump() | {"requests": self.requests, "faulted": self.faulted}

    async def before(self) -> Response | None:
        """Apply the gateway faults to one API request; an answer ends it early."""
        self.requests += 1
        s = self.settings
        if s.down == "503":
            self.faulted += 1
            return JSONResponse({"error": "service unavailable (simulated)"}, status_code=503)
        if s.down == "close":
            self.faulted += 1
            return DropResponse()
        if s.slow_s > 0:
            await asyncio.sleep(s.slow_s)
        if s.throttle_next > 0:
            s.throttle_next -= 1
            self.faulted += 1
            return JSONResponse(
                {"error": "too many requests (simulated)"},
                status_code=429,
                headers={"Retry-After": str(s.retry_after_s)},
            )
        if s.fail_next > 0:
            s.fail_next -= 1
            self.faulted += 1
            return JSONResponse({"error": "internal error (simulated)"}, status_code=s.fail_status)
        return None

    def lost_answer(self) -> Response | None:
        """Call after committing: the answer to send instead of the real one, if lost."""
        s = self.settings
        if s.lose_answer_next <= 0:
            return None
        s.lose_answer_next -= 1
        self.faulted += 1
        if s.lose_answer_mode == "drop":
            return DropResponse()
        return JSONResponse({"error": "bad gateway (simulated, but the request was committed)"}, status_code=502)

    def refusal(self, record_id: str | None, skus: Iterable[str]) -> str | None:
        """Why a record is refused for good, or None when it is welcome."""
        s = self.settings
        if record_id is not None and record_id in s.refuse_ids:
            return f"record {record_id} refused (simulated)"
        for sku in skus:
            if sku in s.refuse_skus:
                return f"sku {sku} refused (simulated)"
        return None


class FaultGate:
    """ASGI middleware applying ``Faults.before`` to every path not under ``/_``."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_"):
            await self.app(scope, receive, send)
            return
        early = await self.faults.before()
        if early is not None:
            await early(scope, receive, send)
            return
        await self.app(scope, receive, send)


def fault_routes(faults: Faults) -> list[Route]:
    """The ``/_faults`` endpoints for one simulator."""

    async def get_faults(request: Request) -> Response:
        return JSONResponse(faults.as_json())

    async def post_faults(request: Request) -> Response:
        try:
            changes = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(changes, dict):
            return JSONResponse({"error": "body must be a JSON object of knobs"}, status_code=422)
        try:
            faults.update(changes)
        except ValidationError as exc:
            details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
            return JSONResponse({"error": "validation", "details": details}, status_code=422)
        return JSONResponse(faults.as_json())

    async def delete_faults(request: Request) -> Response:
        faults.reset()
        return JSONResponse(faults.as_json())

    return [
        Route("/_faults", get_faults, methods=["GET"]),
        Route("/_faults", post_faults, methods=["POST"]),
        Route("/_faults", delete_faults, methods=["DELETE"]),
    ]


def record_skus(envelope: dict[str, Any]) -> list[str]:
    """The SKUs a stored envelope touches (a sale's lines, a movement's sku)."""
    data = envelope.get("data") or {}
    if envelope.get("type") == "sale":
        return [str(line.get("sku")) for line in data.get("lines") or [] if isinstance(line, dict)]
    sku = data.get("sku")
    return [str(sku)] if sku is not None else []


def simulator_app(routes: list[Route], *, faults: Faults, **state: Any) -> Starlette:
    """A simulator's app: its routes, the fault knobs and the gate that applies them.

    ``state`` (the ledger, the authenticator) lands on ``app.state`` so tests
    running the app in-process can look inside.
    """
    app = Starlette(routes=[*routes, *fault_routes(faults)], middleware=[Middleware(FaultGate, faults=faults)])
    app.state.faults = faults
    for name, value in state.items():
        setattr(app.state, name, value)
    return app
