"""What the MQTT destination and the MQTT ingest source share.

The ``[[destinations]]`` keys of kind ``mqtt``, topic names, the TLS context,
client construction, and ``Connection``: one supervised broker connection that
reconnects by itself with capped, jittered backoff. aiomqtt 2 does not
reconnect on its own, so every part that talks MQTT goes through
``Connection`` rather than holding an ``aiomqtt.Client`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiomqtt
from pydantic import Field, field_validator, model_validator

from agent.config import DestinationBase, read_secret
from agent.destinations.base import RetryableError, RetryPolicy

log = logging.getLogger(__name__)

"""The record types that have a topic of their own (contract §1)."""

_TOPIC_LEVEL = re.compile(r"^[^+#/\x00]+$")


class MqttDestinationConfig(DestinationBase):
    """The keys of a ``[[destinations]]`` table with ``kind = "mqtt"`` (contract §3).

    The contract keys, plus: ``client_id`` (default ``kassabro-{store_id}-{name}``),
    ``keepalive_s`` (30), ``status_interval_s`` (60), ``publish_timeout_s`` (15)
    and ``max_inflight`` (100 QoS 1 publishes awaiting their PUBACK at once).
    """

    kind: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    topic_prefix: str = "kassabro"
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    ingest: bool = False
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    status_interval_s: float = Field(default=60.0, gt=0)
    publish_timeout_s: float = Field(default=15.0, gt=0, le=600)
    max_inflight: int = Field(default=100, ge=1, le=65535)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        levels = value.split("/")
        if not value or value.startswith("$") or not all(_TOPIC_LEVEL.match(level) for level in levels):
            raise ValueError(
                "topic_prefix must be topic levels separated by '/', none empty, without '+', '#' or a leading '$'"
            )
        return value

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttDestinationConfig:  # the secret itself is read by agent.config
        if not self.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is set but tls is false; set tls = true")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file is set without username")
        if self.port is None:
            self.port = 8883 if self.tls else 1883
        return self

    def default_client_id(self, store_id: str) -> str:
        """Stable per store and destination, so the broker keeps our session."""
        return self.client_id or f"kassabro-{store_id}-{self.name}"


@dataclass(frozen=True)
class Topics:
    """The topic names of one store under one prefix (docs/mqtt.md lists them)."""

    prefix: str
    store_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.store_id}"

    def record(self, record_type: str) -> str:
        """Where records of ``record_type`` are published: ``{prefix}/{store}/{type}``."""
        return f"{self.base}/{record_type}"

    @property
    def status(self) -> str:
        """The retained presence and backlog JSON."""
        return f"{self.base}/status"

    def ingest(self, record_type: str) -> str:
        """Where a till publishes one record of ``record_type`` for the agent to take in."""
        return f"{self.base}/ingest/{record_type}"

    @property
    def rejected(self) -> str:
        """Where the agent answers an ingest message it did not store."""
        return f"{self.base}/ingest/rejected"


def make_tls_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context with verification on: the broker's certificate must chain to
    ``ca_file`` (the system's CAs when None) and name the host we dialled.

    Args:
        ca_file: PEM bundle of the CA(s) that signed the broker's certificate.
        cert_file: the client certificate (PEM), for brokers that require one.
        key_file: its private key (PEM); None when ``cert_file`` holds the key too.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


@dataclass(frozen=True)
class BrokerAccess:
    """What a client needs beyond the config: the TLS context and the password,
    read once from their files at start."""

    tls_context: ssl.SSLContext | None
    password: str | None


def load_access(config: MqttDestinationConfig) -> BrokerAccess:
    """Read the TLS files and the password file (blocking; run it in a thread).

    Raises:
        ValueError: naming the key whose file cannot be used.
    """
    context = None
    if config.tls:
        try:
            context = make_tls_context(config.ca_file, config.cert_file, config.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file/cert_file/key_file: cannot load: {exc}") from exc
    password = None
    if config.password_file is not None:
        password = read_secret(config.password_file, "password_file")
    return BrokerAccess(tls_context=context, password=password)


def make_client(
    config: MqttDestinationConfig,
    access: BrokerAccess,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
) -> aiomqtt.Client:
    """A not yet connected client: MQTT 3.1.1, persistent session (clean_session
    false) under a stable ``identifier``, so QoS 1 messages for our
    subscriptions wait at the broker while we are away."""
    client = aiomqtt.Client(
        config.host,
        config.port or 1883,
        username=config.username,
        password=access.password,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        will=will,
        clean_session=False,
        keepalive=config.keepalive_s,
        timeout=config.publish_timeout_s,
        max_inflight_messages=config.max_inflight,
        tls_context=access.tls_context,
    )
    # aiomqtt logs a warning for every call while more than 10 are pending;
    # keeping up to max_inflight publishes in flight is what we want.
    client.pending_calls_threshold = config.max_inflight + 10
    return client


class PauseSession(Exception):
    """Raised by a message handler to end the session without acknowledging the
    message in hand; the connection comes back after a growing backoff and the
    broker redelivers what was not acknowledged (persistent session)."""


@dataclass
class Session:
    """One live connection: the client, and an event set the moment it is lost."""

    client: aiomqtt.Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)


ClientFactory = Callable[[], aiomqtt.Client]
OnConnect = Callable[[aiomqtt.Client], Awaitable[None]]
OnMessage = Callable[[aiomqtt.Client, aiomqtt.Message], Awaitable[None]]


class Connection:
    """A broker connection kept up in the background: connect, serve, reconnect.

    A fresh ``aiomqtt.Client`` is made for every attempt (``make_client``), so no
    half-torn state of a dead connection leaks into the next one. After each
    connect ``on_connect`` runs (subscribe, publish status); then every incoming
    message goes to ``on_message`` one at a time, in order. When the link drops
    the loop waits ``policy.delay(attempt)`` and tries again, forever, until
    ``close``.

    Args:
        label: names the connection in logs and errors (``mqtt 'central'``).
        make_client: builds a not yet connected ``aiomqtt.Client``.
        policy: the backoff between attempts.
        on_connect: runs after every successful connect; an error ends the session.
        on_message: runs for every incoming message; ``PauseSession`` ends the
            session and backs off before reconnecting.
    """

    def __init__(
        self,
        *,
        label: str,
        make_client: ClientFactory,
        policy: RetryPolicy,
        on_connect: OnConnect | None = None,
        on_message: OnMessage | None = None,
    ) -> None:
        self.label = label
        self._make_client = make_client
        self._policy = policy
        self._on_connect = on_connect
        self._on_message = on_message
        self._session: Session | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_error: str | None = None

    @property
    def session(self) -> Session | None:
        """The live session, or None while (re)connecting."""
        return self._session

    def start(self) -> None:
        """Start connecting in the background; never waits for the broker."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.label} connection")

    async def wait_session(self, timeout_s: float) -> Session:
        """The live session, waiting up to ``timeout_s`` for one.

        Raises:
            RetryableError: no connection within the time; the message says why
                the last attempt failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (session := self._session) is None:
            if self._closing:
                raise RetryableError(f"{self.label}: shutting down")
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = self.last_error or "connecting"
                raise RetryableError(f"{self.label}: not connected ({reason})")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return session

    async def close(self, before_disconnect: OnConnect | None = None, timeout_s: float = 5.0) -> None:
        """Stop reconnecting; run ``before_disconnect`` on a live session (best
        effort, bounded by ``timeout_s``), then disconnect cleanly."""
        self._closing = True
        self._changed.set()
        session = self._session
        if session is not None and before_disconnect is not None:
            try:
                await asyncio.wait_for(before_disconnect(session.client), timeout_s)
            except (aiomqtt.MqttError, TimeoutError) as exc:
                log.info("%s: could not finish before disconnecting: %s", self.label, exc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        attempt = 0
        paused = 0
        while not self._closing:
            client = self._make_client()
            try:
                async with client:
                    attempt = 0
                    session = Session(client)
                    self._set_session(session)
                    self.last_error = None
                    log.info("%s: connected", self.label)
                    try:
                        await self._serve(client)
                    finally:
                        session.lost.set()
                        self._set_session(None)
            except PauseSession as exc:
                paused += 1
                self.last_error = str(exc) or "paused"
                delay = self._policy.delay(paused)
                log.warning("%s: pausing %.1fs: %s", self.label, delay, self.last_error)
                await asyncio.sleep(delay)
                continue
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc) or type(exc).__name__
            except OSError as exc:  # a TLS or socket error paho raised outside connect()
                self.last_error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug in a handler must not end the reconnect loop
                log.exception("%s: session failed", self.label)
                self.last_error = f"{type(exc).__name__}: {exc}"
            paused = 0
            attempt += 1
            delay = self._policy.delay(attempt)
            log.warning("%s: %s; reconnecting in %.1fs", self.label, self.last_error, delay)
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run ``on_connect``, then hand messages over until the link drops
        (the messages iterator raises ``MqttError`` on disconnect, which is
        also how a connection without subscriptions notices it is gone)."""
        if self._on_connect is not None:
            await self._on_connect(client)
        async for message in client.messages:
            if self._on_message is not None:
                await self._on_message(client, message)

    def _set_session(self, session: Session | None) -> None:
        self._session = session
        self._changed.set()
