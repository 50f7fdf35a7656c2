"""Broker clients, and ``Connection``: one supervised broker connection.

aiomqtt 2 does not reconnect on its own, so every part that talks MQTT (the
destination, the ingest source) goes through ``Connection``, which reconnects
by itself with capped, jittered backoff, rather than holding an
``aiomqtt.Client`` directly. What goes wrong is raised as ``agent.mqtt.errors``;
aiomqtt's and paho's errors stay inside this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aiomqtt
import paho.mqtt.client as mqtt

from agent.backoff import RetryPolicy
from agent.mqtt.config import BrokerAccess, MqttDestinationConfig
from agent.mqtt.errors import (
    ConnectionLost,
    NotConnected,
    PauseSession,
    PublishError,
    PublishFailed,
    PublishRefused,
    PublishTimeout,
)
from agent.redact import redact

log = logging.getLogger(__name__)

_TIMED_OUT = "Operation timed out"
"""The text of the ``MqttError`` aiomqtt raises when a PUBACK does not come in time."""


def make_client(
    config: MqttDestinationConfig,
    access: BrokerAccess,
    *,
    identifier: str,
    will: aiomqtt.Will | None = None,
    manual_ack: bool = False,
    broker: tuple[str, int] | None = None,
) -> aiomqtt.Client:
    """A not yet connected client: MQTT 3.1.1, persistent session (clean_session
    false) under a stable ``identifier``, so QoS 1 messages for our
    subscriptions wait at the broker while we are away.

    Args:
        config: the broker's keys.
        access: the TLS context and password read at start.
        identifier: the client id.
        will: the message the broker publishes if we vanish.
        manual_ack: acknowledge incoming messages only through ``ack``.
        broker: ``(host, port)`` to dial; the config's first broker when None.
    """
    host, port = broker or config.brokers[0]
    client = aiomqtt.Client(
        host,
        port,
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
    if manual_ack:
        client._client.manual_ack_set(True)  # private access: see ack
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge ``message`` (PUBACK) on a client made with ``manual_ack``."""
    # aiomqtt 2 has no public manual acknowledgement yet (empicano/aiomqtt#345);
    # paho's is reached through the client it wraps.
    client._client.ack(message.mid, message.qos)


def _publish_error(failure: BaseException, timeout_s: float) -> BaseException:
    """The ``PublishError`` for what aiomqtt or paho raised; anything else unchanged (a bug)."""
    if isinstance(failure, ValueError):  # paho refuses an impossible topic or payload before sending
        return PublishRefused(failure)
    if isinstance(failure, aiomqtt.MqttError):
        if str(failure) == _TIMED_OUT:
            return PublishTimeout(timeout_s)
        return PublishFailed(f"publish failed: {failure}")
    return failure


@dataclass
class Session:
    """One live connection: the client, and an event set the moment it is lost."""

    client: aiomqtt.Client
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish_many(self, messages: Iterable[tuple[str, bytes]], *, timeout_s: float, max_inflight: int) -> None:
        """Publish ``(topic, payload)`` pairs with QoS 1, in order; return when every PUBACK is back.

        aiomqtt's publish does not notice a dropped connection (it waits for
        its PUBACK until the timeout), so the publishing races the loss.

        Raises:
            ConnectionLost: the connection dropped first.
            PublishError: a publish was refused, timed out or failed.
        """
        publishing = asyncio.ensure_future(self._publish_window(messages, timeout_s, max_inflight))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({publishing, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not publishing.done():
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
        if publishing.cancelled():
            raise ConnectionLost("connection lost before every PUBACK arrived")
        failure = publishing.exception()
        if failure is None:
            return
        error = _publish_error(failure, timeout_s)
        if error is failure:
            raise failure  # not the client's: a bug, as it is
        raise error from failure

    async def _publish_window(self, messages: Iterable[tuple[str, bytes]], timeout_s: float, max_inflight: int) -> None:
        """Publish with at most ``max_inflight`` awaiting a PUBACK, straight through paho.

        The messages go to paho's ``publish`` one by one, in order, so the
        broker receives them in that order; a new one goes out as soon as a
        PUBACK frees a place in the window. The window is kept here rather
        than in paho's queue: paho does work proportional to its queue for
        every PUBACK, so a deep queue costs quadratic time.

        Not through ``aiomqtt.Client.publish``: per message it makes an event,
        a ``wait_for`` task and a timer, and counts every pending call, which
        cost more than paho's own work and held a batch to the pace of one
        message at a time (docs/benchmarks.md, "MQTT publish"). PUBACKs still
        arrive through aiomqtt's ``on_publish``, which pops the mid from its
        ``_pending_publishes`` and calls ``set()`` on what it finds: here a
        counter. A publish whose PUBACK does not come within ``timeout_s`` of
        the last progress fails the batch (``PublishTimeout``).
        """
        paho = self.client._client  # private access: aiomqtt has no pipelined publish
        pending = self.client._pending_publishes  # private access: where aiomqtt's on_publish reports PUBACKs
        progress = asyncio.Event()
        mids: list[int] = []
        window = _Window(progress)
        try:
            for topic, payload in messages:
                while window.inflight >= max_inflight:
                    await self._progress(progress, timeout_s)
                info = paho.publish(topic, payload, qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise PublishFailed(f"publish failed: {mqtt.error_string(info.rc)}")
                pending[info.mid] = window  # type: ignore[assignment]  # aiomqtt calls .set() on it
                mids.append(info.mid)
                window.inflight += 1
            while window.inflight > 0:
                await self._progress(progress, timeout_s)
        finally:
            for mid in mids:
                entry: object = pending.get(mid)
                if entry is window:  # not acknowledged: aiomqtt must not hold on to it
                    del pending[mid]

    @staticmethod
    async def _progress(progress: asyncio.Event, timeout_s: float) -> None:
        """Wait for the next PUBACK (at most ``timeout_s``)."""
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), timeout_s)
        except TimeoutError:
            raise PublishTimeout(timeout_s) from None


class _Window:
    """The publishes of one ``publish_many`` awaiting their PUBACK.

    aiomqtt's ``on_publish`` calls ``set()`` once per PUBACK whose mid it finds
    in ``_pending_publishes`` (it pops it first), on the event loop's thread.
    """

    __slots__ = ("inflight", "progress")

    def __init__(self, progress: asyncio.Event) -> None:
        self.inflight = 0
        self.progress = progress

    def set(self) -> None:
        self.inflight -= 1
        self.progress.set()


ClientFactory = Callable[[tuple[str, int]], aiomqtt.Client]
OnConnect = Callable[[aiomqtt.Client], Awaitable[None]]
OnMessage = Callable[[aiomqtt.Client, aiomqtt.Message], Awaitable[None]]


class Connection:
    """A broker connection kept up in the background: connect, serve, reconnect.

    A fresh ``aiomqtt.Client`` is made for every attempt (``make_client``), so no
    half-torn state of a dead connection leaks into the next one. After each
    connect ``on_connect`` runs (subscribe, publish status); then every incoming
    message goes to ``on_message`` one at a time, in order. When the link drops
    the loop waits ``policy.delay(attempt)`` and tries again, forever, until
    ``close``. With several ``brokers`` (a cluster's nodes), every failed
    attempt and every lost session moves on to the next one, so a dead node
    costs one backoff, not a wait for its return; ``broker_in_use`` says which
    one the live session is on.

    Args:
        label: names the connection in logs and errors (``mqtt 'central'``).
        make_client: builds a not yet connected ``aiomqtt.Client`` for one broker.
        brokers: ``(host, port)`` of every broker to try, in order.
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
        brokers: list[tuple[str, int]],
        policy: RetryPolicy,
        on_connect: OnConnect | None = None,
        on_message: OnMessage | None = None,
    ) -> None:
        self.label = label
        self._make_client = make_client
        if not brokers:
            raise ValueError("a connection needs at least one broker")
        self._brokers = list(brokers)
        self._index = 0
        self._policy = policy
        self._on_connect = on_connect
        self._on_message = on_message
        self._session: Session | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_error: str | None = None

    @property
    def last_error(self) -> str | None:
        """Why the last attempt or session failed (None while connected), secrets taken out.

        Shown on the page, in ``/api/status`` and ``kassabro status``, and
        logged: an error text may quote a URL with ``user:password@`` or a
        ``?token=``, so every one goes through ``redact`` as it is stored.
        """
        return self._last_error

    @last_error.setter
    def last_error(self, error: str | None) -> None:
        self._last_error = None if error is None else redact(error)

    @property
    def session(self) -> Session | None:
        """The live session, or None while (re)connecting."""
        return self._session

    @property
    def broker_in_use(self) -> str | None:
        """``host:port`` of the broker the live session is on; None while (re)connecting."""
        if self._session is None:
            return None
        host, port = self._brokers[self._index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def running(self) -> bool:
        """True while the connection task lives (connected or retrying); a task that ended never reconnects."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start connecting in the background; never waits for the broker."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.label} connection")

    async def wait_session(self, timeout_s: float) -> Session:
        """The live session, waiting up to ``timeout_s`` for one.

        Raises:
            NotConnected: no connection within the time, or closing; the
                message says why the last attempt failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (session := self._session) is None:
            if self._closing:
                raise NotConnected(f"{self.label}: shutting down")
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason = self.last_error or "connecting"
                raise NotConnected(f"{self.label}: not connected ({reason})")
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
            except (aiomqtt.MqttError, PublishError, TimeoutError) as exc:
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
            broker = self._brokers[self._index]
            try:
                # Inside the try: a client that cannot even be made (a TLS setting it refuses)
                # is a failed attempt like any other, not the end of reconnecting.
                client = self._make_client(broker)
                async with client:
                    attempt = 0
                    session = Session(client)
                    self._set_session(session)
                    self.last_error = None
                    log.info("%s: connected to %s", self.label, self.broker_in_use)
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
            if len(self._brokers) > 1:
                self.last_error = f"{broker[0]}:{broker[1]}: {self.last_error}"
                self._index = (self._index + 1) % len(self._brokers)
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
