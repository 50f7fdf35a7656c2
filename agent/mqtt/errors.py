"""The errors of ``agent.mqtt``: what a broker connection can tell its user.

``BrokerError`` is the base of everything ``Connection`` raises; the MQTT
destination translates these once, in its ``send``, into the delivery errors
(``PublishRefused`` is permanent, the rest pass with time). aiomqtt's and
paho's own errors never leave this package.

- ``NotConnected``: no live session within the time asked for.
- ``PublishError``: a publish did not complete:
  - ``ConnectionLost``: the connection dropped before every PUBACK was back;
  - ``PublishTimeout``: a PUBACK did not come within the timeout;
  - ``PublishRefused``: the client refused a message outright (an impossible
    topic, a payload over MQTT's 256 MiB); sending it again cannot help;
  - ``PublishFailed``: any other failure of the client.

``PauseSession`` is not an error of the connection but a signal to it: a
message handler raises it to end the session without acknowledging.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of the errors ``agent.mqtt`` raises; the message says what happened, in words."""


class NotConnected(BrokerError):
    """No connection within the time, or the connection is shutting down.

    The message names the connection and why the last attempt failed.
    """


class PublishError(BrokerError):
    """A publish did not complete."""


class ConnectionLost(PublishError):
    """The connection dropped before every PUBACK arrived."""


class PublishTimeout(PublishError):
    """A PUBACK did not come within the timeout.

    Args:
        timeout_s: the timeout that ran out.
    """

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no PUBACK within {timeout_s:g}s")
        self.timeout_s = timeout_s


class PublishRefused(PublishError):
    """The client refused a message outright; the same message would be refused again.

    Args:
        reason: what the client said.
    """

    def __init__(self, reason: object) -> None:
        super().__init__(f"refused by the client: {reason}")
        self.reason = str(reason)


class PublishFailed(PublishError):
    """The client failed to publish for another reason (a transient MQTT error)."""


class PauseSession(Exception):
    """Raised by a message handler to end the session without acknowledging the
    message in hand; the connection comes back after a growing backoff and the
    broker redelivers what was not acknowledged (persistent session)."""
