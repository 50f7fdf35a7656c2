"""The keys of an MQTT broker connection, and what is read from files at start.

``MqttDestinationConfig`` is the ``[[destinations]]`` table of kind ``mqtt``
(contract §3). The ingest source uses the same table (``ingest = true``), so the
model lives here rather than in the destination's module. ``load_access``
reads the TLS files and the password once, before the first connect.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.configbase import DestinationBase, read_secret

_TOPIC_LEVEL = re.compile(r"^[^+#/\x00]+$")


class MqttDestinationConfig(DestinationBase):
    """The keys of a ``[[destinations]]`` table with ``kind = "mqtt"`` (contract §3).

    The contract keys, plus: ``hosts`` (a cluster: ``["host:port", ...]``, tried in
    turn, instead of ``host``/``port``), ``client_id`` (default ``kassabro-{store_id}-{name}``),
    ``keepalive_s`` (30), ``status_interval_s`` (60), ``publish_timeout_s`` (15)
    and ``max_inflight`` (100 QoS 1 publishes awaiting their PUBACK at once).
    """

    kind: Literal["mqtt"] = "mqtt"
    # hosts before host: host's check below needs to know whether hosts was given.
    hosts: list[str] | None = Field(default=None, min_length=1, max_length=32)
    host: str | None = Field(default=None, min_length=1, max_length=253, validate_default=True)
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

    @field_validator("hosts")
    @classmethod
    def _hosts_are_host_port(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            parse_host_port(entry, 1883)
        return value

    @field_validator("host")
    @classmethod
    def _host_or_hosts(cls, value: str | None, info: ValidationInfo) -> str | None:
        """One broker (``host``) or a cluster (``hosts``): exactly one of them (named ``host`` when neither)."""
        if "hosts" not in info.data:
            return value  # hosts was invalid; that problem is reported on its own
        if value is None and info.data["hosts"] is None:
            raise ValueError("host (or hosts, for a cluster) is required")
        if value is not None and info.data["hosts"] is not None:
            raise ValueError("set host (one broker) or hosts (a cluster), not both")
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
        if self.hosts is not None and self.port is not None:
            raise ValueError("port is set with hosts; give each entry of hosts its own port")
        if self.port is None and self.hosts is None:
            self.port = self.default_port
        return self

    @property
    def default_port(self) -> int:
        return 8883 if self.tls else 1883

    @property
    def brokers(self) -> list[tuple[str, int]]:
        """Every broker to try, in order: ``hosts``, or the one ``host``/``port``."""
        if self.hosts is not None:
            return [parse_host_port(entry, self.default_port) for entry in self.hosts]
        assert self.host is not None
        return [(self.host, self.port or self.default_port)]

    def default_client_id(self, store_id: str) -> str:
        """Stable per store and destination, so the broker keeps our session."""
        return self.client_id or f"kassabro-{store_id}-{self.name}"


def parse_host_port(entry: str, default_port: int) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` (the default port) or ``"[v6]:port"`` as ``(host, port)``.

    Raises:
        ValueError: naming the entry that is not one.
    """
    text = entry.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host or len(host) > 253 or any(c in host for c in " /#?@"):
        raise ValueError(f"{entry!r} is not host:port")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be 1..65535")
    return host, int(port_text)


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
    password = None if config.password_file is None else read_secret(config.password_file, "password_file")
    return BrokerAccess(tls_context=context, password=password)
