"""The config pieces that several packages build on: ids, secret files, ``[skus]``, a destination's common keys.

They live below ``agent.config`` (the whole file) and below every destination
kind, so a kind's module can subclass ``DestinationBase`` and read its secrets
while ``agent.config`` imports the kinds to validate ``[[destinations]]``: the
layers point one way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.records import DEFAULT_DESTINATION_TYPES, RecordType

log = logging.getLogger("agent.config")
_WARNED: set[str] = set()
"""Secret files already warned about in this process (the config is read more than once)."""

ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
"""A ``store_id`` or a destination's ``name``."""


def read_secret(path: Path | str, key: str | None = None) -> str:
    """The secret in ``path``, surrounding whitespace (a trailing newline) removed.

    Args:
        path: the secret file.
        key: the config key that named the file, for the error message.

    Raises:
        ValueError: naming ``key`` when the file is missing, unreadable or empty.
    """
    prefix = f"{key}: " if key else ""
    try:
        mode = Path(path).stat().st_mode
        if mode & 0o044 and str(path) not in _WARNED:
            # Warned, not refused: an upgrade must not stop a running shop over a mode.
            _WARNED.add(str(path))
            log.warning(
                "%s%s is readable by group or others (mode %04o); chmod 600 it so only the agent reads the secret",
                prefix, path, mode & 0o777,
            )  # fmt: skip
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{prefix}cannot read {path}: {exc.strerror or exc}") from exc
    if not text:
        raise ValueError(f"{prefix}{path} is empty")
    return text


class SkusConfig(BaseModel):
    """``[skus]``: the article numbers order-level costs are booked on (contract §3)."""

    model_config = ConfigDict(extra="forbid")

    shipping: str = Field(default="fraktavg", min_length=1, max_length=64)
    handling: str = Field(default="expavg", min_length=1, max_length=64)
    discount: str = Field(default="rabatt", min_length=1, max_length=64)
    gift_card: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["presentkort"], max_length=100
    )
    """SKUs whose lines sell a gift card: VAT rate 0 at ingest, booked on 2421 (contract §1)."""


class DestinationBase(BaseModel):
    """Keys every destination kind has (contract §3); each kind's config model subclasses this."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ID_PATTERN)
    kind: str
    # Sequence, not list: read-only, so a kind may narrow it (SIE takes sales only).
    types: Sequence[RecordType] = Field(default_factory=lambda: list(DEFAULT_DESTINATION_TYPES), min_length=1)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(300.0, gt=0)
    batch_max: int = Field(500, ge=1, le=10000)

    @model_validator(mode="after")
    def _cap_above_base(self) -> DestinationBase:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be at least backoff_base_s")
        return self
