"""The agent's configuration: one TOML file, ``KASSABRO_`` environment overrides.

An invalid config stops the agent before it opens anything, with every
problem named by its key (``ingest.listen``, ``destinations[1].url``), so a
technician fixes the file once rather than once per error. Secrets never live
in the TOML: ``*_file`` keys name files holding the secret alone (surrounding
whitespace ignored), which systemd can hand over with ``LoadCredential=``.

Destination kinds keep their own keys in their own module (the adapter's
``*DestinationConfig``); this module finds them in the one registry of kinds,
``agent.destinations.kinds.KINDS``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent.configbase import ID_PATTERN, SkusConfig, read_secret
from agent.destinations.kinds import KINDS, DestinationConfig
from agent.flow import FlowConfig, flow_problems

DEFAULT_CONFIG_PATH = Path("/etc/kassabro/kassabro.toml")


class ConfigError(Exception):
    """The config cannot be used. ``problems`` is a list of ``(key, message)``."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))

    def __str__(self) -> str:
        lines = [f"  {key}: {message}" for key, message in self.problems]
        return "invalid configuration:\n" + "\n".join(lines)


class Listen(BaseModel):
    """A ``host:port`` to listen on (``[::1]:8780`` for IPv6)."""

    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: Any) -> Listen:
    if isinstance(value, Listen):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string like '127.0.0.1:8780'")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not host:port (e.g. '127.0.0.1:8780' or '[::1]:8780')")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return Listen(host=host, port=port)


ListenField = Annotated[Listen, NoDecode]
"""A ``Listen`` that ``KASSABRO_INGEST__LISTEN=0.0.0.0:8780`` sets as the plain string it is.

Without ``NoDecode`` pydantic-settings takes a model-typed field for JSON and
stops with a traceback on ``0.0.0.0:8780``.
"""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TillConfig(_Section):
    """``[[ingest.tills]]``: one till's own token; it may only send records of its own ``till_id``."""

    id: str = Field(pattern=ID_PATTERN)
    token_file: Path


class IngestConfig(_Section):
    listen: ListenField = Field(default_factory=lambda: parse_listen("127.0.0.1:8780"))
    # Before token_file: the check below reads it (pydantic validates fields in order).
    tills: list[TillConfig] = Field(default_factory=list)
    # validate_default: the check below must run when token_file is left out.
    token_file: Path | None = Field(None, validate_default=True)
    spool_dir: Path | None = None
    derive_stock_from_sales: bool = True
    # The occurred_at window, applied while the clock is synchronised (contract §1).
    max_age_days: int = Field(400, ge=1, le=36500)
    max_future_hours: int = Field(24, ge=0, le=8760)
    # A deliberate downgrade (contract §2): plain HTTP on the shop's LAN, warned at every start.
    allow_plain_http: bool = False
    tls_key_file: Path | None = None
    # Last, and validate_default: its check reads listen, allow_plain_http and tls_key_file.
    tls_cert_file: Path | None = Field(None, validate_default=True)

    _listen = field_validator("listen", mode="before")(parse_listen)

    @field_validator("tls_cert_file")
    @classmethod
    def _tls_off_loopback(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _check_tls_pair(value, info.data.get("tls_key_file"))
        listen = info.data.get("listen")
        if value is None and listen is not None and not listen.is_loopback and not info.data.get("allow_plain_http"):
            raise ValueError(
                f"required when ingest.listen ({listen}) is not a loopback address"
                " (or allow_plain_http = true, which sends sales and tokens across the LAN in clear)"
            )
        return value

    @property
    def plain_on_lan(self) -> bool:
        """Plain HTTP on a non-loopback address: allowed only by ``allow_plain_http``, warned at start."""
        return self.tls_cert_file is None and not self.listen.is_loopback

    @field_validator("token_file")
    @classmethod
    def _token_off_loopback(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # A field validator (not a check after the whole file validated), so it
        # is reported as ingest.token_file together with every other problem.
        listen = info.data.get("listen")
        if value is None and not info.data.get("tills") and listen is not None and not listen.is_loopback:
            raise ValueError(
                f"required when ingest.listen ({listen}) is not a loopback address (or one [[ingest.tills]] per till)"
            )
        return value

    @field_validator("tills")
    @classmethod
    def _tills_unique(cls, value: list[TillConfig]) -> list[TillConfig]:
        seen: set[str] = set()
        for till in value:
            if till.id in seen:
                raise ValueError(f"the till id {till.id!r} is named twice")
            seen.add(till.id)
        return value


class OutboxConfig(_Section):
    retention_days: float = Field(14, gt=0)
    max_bytes: int = Field(2 * 1024**3, ge=1024 * 1024)
    prune_interval_s: float = Field(3600, gt=0)


class StatusConfig(_Section):
    listen: ListenField = Field(default_factory=lambda: parse_listen("0.0.0.0:8781"))
    admin_token_file: Path | None = None
    tls_key_file: Path | None = None
    tls_cert_file: Path | None = Field(None, validate_default=True)

    _listen = field_validator("listen", mode="before")(parse_listen)

    @field_validator("tls_cert_file")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _check_tls_pair(value, info.data.get("tls_key_file"))
        return value


def _check_tls_pair(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise ValueError("set tls_cert_file and tls_key_file both, or neither")


class Settings(BaseSettings):
    """The whole config file. Destinations stay raw here; see ``load_config``."""

    model_config = SettingsConfigDict(
        env_prefix="KASSABRO_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    store_id: str = Field(pattern=ID_PATTERN)
    data_dir: Path = Path("/var/lib/kassabro")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    skus: SkusConfig = Field(default_factory=SkusConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    destinations: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


class Config(BaseModel):
    """The validated config, destinations parsed by their kind's model."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path | None
    store_id: str
    data_dir: Path
    log_level: str
    ingest: IngestConfig
    outbox: OutboxConfig
    status: StatusConfig
    skus: SkusConfig
    flow: FlowConfig = Field(default_factory=FlowConfig)
    destinations: list[DestinationConfig]

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.db"

    def ingest_token(self) -> str | None:
        return read_secret(self.ingest.token_file) if self.ingest.token_file else None

    def till_tokens(self) -> dict[str, str]:
        """``[[ingest.tills]]``: each till's token -> its ``till_id``."""
        return {read_secret(till.token_file): till.id for till in self.ingest.tills}

    def admin_token(self) -> str | None:
        return read_secret(self.status.admin_token_file) if self.status.admin_token_file else None


def resolve_path(explicit: str | Path | None) -> Path:
    """``--config``, else ``$KASSABRO_CONFIG``, else /etc/kassabro/kassabro.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("KASSABRO_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def _loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problems(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    return [
        (_loc(tuple(e["loc"]), prefix), e["msg"].removeprefix("Value error, ")) for e in exc.errors(include_url=False)
    ]


def load_config(path: str | Path | None = None, *, check_secrets: bool = True) -> Config:
    """Read, validate and return the config; raise ``ConfigError`` naming every problem.

    Args:
        path: the TOML file (see ``resolve_path``).
        check_secrets: also read every ``*_file`` secret, so a missing token file
            is reported now rather than when the first till connects.
    """
    cfg_path = resolve_path(path)
    try:
        raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([("(file)", f"{cfg_path} does not exist")]) from None
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {cfg_path}: {exc.strerror}")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([("(file)", f"{cfg_path} is not valid TOML: {exc}")]) from None
    return build_config(raw, cfg_path, check_secrets=check_secrets)


def build_config(raw: dict[str, Any], cfg_path: Path | None = None, *, check_secrets: bool = True) -> Config:
    """Validate an already parsed TOML document (see ``load_config``)."""
    problems: list[tuple[str, str]] = []
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        problems.extend(_problems(exc))
        settings = None

    destinations: list[DestinationConfig] = []
    placed: list[tuple[str, DestinationConfig]] = []
    raw_dests = settings.destinations if settings else raw.get("destinations", [])
    if not isinstance(raw_dests, list):
        raw_dests = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw_dests):
        where = f"destinations[{index}]"
        if not isinstance(entry, dict):
            problems.append((where, "must be a table ([[destinations]])"))
            continue
        # Names are compared before validation, so a duplicate is reported even
        # when one of the two tables has other problems.
        name = entry.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append((f"{where}.name", f"{name!r} is already used by destinations[{seen[name]}]"))
            else:
                seen[name] = index
        kind = entry.get("kind")
        if kind not in KINDS:
            problems.append((f"{where}.kind", f"must be one of {', '.join(sorted(KINDS))}, not {kind!r}"))
            continue
        try:
            dest = KINDS[kind].config.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_problems(exc, where))
            continue
        destinations.append(dest)
        placed.append((where, dest))
        if check_secrets:
            problems.extend(_secret_problems(dest, where))

    if settings is not None:
        problems.extend(flow_problems(settings.flow, placed))
    if check_secrets:
        for section_name, section_model in (("ingest", IngestConfig), ("status", StatusConfig)):
            # When another key broke the file, the sections are checked on their
            # own, so a missing token file is reported in the same round.
            section = (
                getattr(settings, section_name) if settings else _section_or_none(section_model, raw.get(section_name))
            )
            if section is not None:
                problems.extend(_secret_problems(section, section_name))
                for index, till in enumerate(getattr(section, "tills", [])):
                    problems.extend(_secret_problems(till, f"{section_name}.tills[{index}]"))
                problems.extend(_tls_problems(section, section_name))
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return Config(
        path=cfg_path,
        store_id=settings.store_id,
        data_dir=settings.data_dir,
        log_level=settings.log_level,
        ingest=settings.ingest,
        outbox=settings.outbox,
        status=settings.status,
        skus=settings.skus,
        flow=settings.flow,
        destinations=destinations,
    )


def _section_or_none(model: type[BaseModel], raw: Any) -> BaseModel | None:
    """``raw`` validated as ``model``, or None when it is invalid (already reported)."""
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError:
        return None


def _tls_problems(section: BaseModel, where: str) -> list[tuple[str, str]]:
    """The section's certificate and key, loaded as the listener will, so a bad pair is named now."""
    cert, key = getattr(section, "tls_cert_file", None), getattr(section, "tls_key_file", None)
    if cert is None or key is None:
        return []
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        return [(f"{where}.tls_cert_file", f"cannot load {cert} with {key}: {exc.strerror or exc}")]
    return []


def _secret_problems(section: BaseModel, where: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for field_name in type(section).model_fields:
        if not field_name.endswith("_file") or field_name in {
            "ca_file",
            "cert_file",
            "key_file",
            "tls_cert_file",
            "tls_key_file",
        }:
            continue
        value = getattr(section, field_name)
        if value is None:
            continue
        try:
            read_secret(value)
        except ValueError as exc:
            problems.append((f"{where}.{field_name}", f"secret file: {exc}"))
    return problems
