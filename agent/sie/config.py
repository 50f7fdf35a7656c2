"""The ``[[destinations]]`` table of kind ``sie``: contract §3 keys plus documented extras.

Validated once at start so a wrong account number or time zone stops the agent
with the key named, instead of producing a file the accountant cannot import.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.configbase import DestinationBase

_ACCOUNT = re.compile(r"^[0-9]{1,10}$")
_ORGNR = re.compile(r"^[0-9]{6}-?[0-9]{4}$")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _account(value: object) -> str:
    """Accept ``1910`` and ``"1910"`` (TOML users write both); always store a string."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not _ACCOUNT.match(text):
        raise ValueError(f'an account number is 1 to 10 digits, e.g. "1910"; got {value!r}')
    return text


class SieAccounts(BaseModel):
    """Which account each part of a day's sales is booked on (BAS defaults).

    Keys are named after what they hold: ``sales_<rate>`` and ``vat_<rate>``
    per VAT rate, one key per payment method (the sale's ``payments[].method``),
    and ``rounding``, ``discount``, ``shipping``, ``handling``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sales_25: str = "3001"
    sales_12: str = "3002"
    sales_6: str = "3003"
    sales_0: str = "3004"
    vat_25: str = "2611"
    vat_12: str = "2621"
    vat_6: str = "2631"
    cash: str = "1910"
    card: str = "1580"
    swish: str = "1934"
    gift_card: str = "2421"
    invoice: str = "1510"
    other: str = "1689"
    rounding: str = "3740"
    discount: str = "3730"
    shipping: str = "3520"
    handling: str = "3540"

    @field_validator("*", mode="before")
    @classmethod
    def _digits(cls, value: object) -> str:
        return _account(value)

    def sales(self, rate: int) -> str:
        return str(getattr(self, f"sales_{rate}"))

    def vat(self, rate: int) -> str:
        return str(getattr(self, f"vat_{rate}"))

    def payment(self, method: str) -> str:
        return str(getattr(self, method))


class SieDestinationConfig(DestinationBase):
    """One SIE destination: where day files go, when, and on which accounts.

    Contract keys: ``name``, ``kind``, ``types``, ``dir``, ``export_at``,
    ``timezone``, ``orgnr``, ``company_name``, ``series``, ``checksum``,
    ``accounts``, ``voucher_per``, ``z_wait_hours``, ``backoff_base_s``,
    ``backoff_cap_s``, ``batch_max``. Extras (documented in
    docs/bookkeeping.md): ``discount_mode``, ``vat_basis``, ``kptyp``,
    ``copy_to``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sie"] = "sie"
    types: list[Literal["sale"]] = Field(default=["sale"], min_length=1)
    dir: Path
    export_at: str = "02:00"
    timezone: str = "Europe/Stockholm"
    orgnr: str
    company_name: str = Field(min_length=1, max_length=200)
    series: str = Field(default="", max_length=20)
    checksum: bool = True
    accounts: SieAccounts = Field(default_factory=SieAccounts)
    discount_mode: Literal["separate", "net"] = "separate"
    voucher_per: Literal["day", "z_report"] = "day"
    z_wait_hours: float = Field(default=24.0, ge=0, le=24 * 31)
    vat_basis: Literal["receipt", "day"] = "receipt"
    copy_to: Path | None = None
    kptyp: str = Field(default="EUBAS97", pattern=r"^[A-Za-z0-9]{1,20}$")
    batch_max: int = Field(default=20000, ge=1, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a destination name is 1 to 64 of A-Z a-z 0-9 . _ -")
        return value

    @field_validator("export_at")
    @classmethod
    def _export_at(cls, value: str) -> str:
        if not _HHMM.match(value):
            raise ValueError(f'export_at is a local time HH:MM, e.g. "02:00"; got {value!r}')
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'unknown time zone {value!r}; use an IANA name such as "Europe/Stockholm"') from None
        return value

    @field_validator("orgnr")
    @classmethod
    def _orgnr(cls, value: str) -> str:
        value = value.strip()
        if not _ORGNR.match(value):
            raise ValueError(f"orgnr is the Swedish organisation number, NNNNNN-NNNN; got {value!r}")
        return value if "-" in value else f"{value[:6]}-{value[6:]}"

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        if any(ch in value for ch in '"{}\\') or any(ord(ch) < 32 for ch in value):
            raise ValueError("series may not hold quotes, braces, backslashes or control characters")
        return value

    @field_validator("company_name")
    @classmethod
    def _company(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("company_name must not be blank")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def export_time(self) -> time:
        hours, minutes = self.export_at.split(":")
        return time(int(hours), int(minutes))
