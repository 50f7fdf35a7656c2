"""The sie destination's keys: contract defaults, and bad values named by key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import build_config
from agent.sie.config import SieDestinationConfig


def test_contract_defaults() -> None:
    cfg = SieDestinationConfig.model_validate(
        {"name": "bok", "kind": "sie", "dir": "/srv/sie", "orgnr": "5566778899", "company_name": "Kiosken AB"}
    )
    assert cfg.types == ["sale"] and cfg.export_at == "02:00" and cfg.timezone == "Europe/Stockholm"
    assert cfg.series == "" and cfg.checksum is True and cfg.discount_mode == "separate"
    assert cfg.orgnr == "556677-8899"
    a = cfg.accounts
    assert (a.sales_25, a.sales_12, a.sales_6, a.sales_0) == ("3001", "3002", "3003", "3004")
    assert (a.vat_25, a.vat_12, a.vat_6) == ("2611", "2621", "2631")
    assert (a.cash, a.card, a.swish, a.gift_card, a.invoice) == ("1910", "1580", "1934", "2421", "1510")
    assert (a.rounding, a.discount, a.shipping, a.handling) == ("3740", "3730", "3520", "3540")
    assert (cfg.voucher_per, cfg.z_wait_hours, cfg.vat_basis, cfg.copy_to) == ("day", 24.0, "receipt", None)


def test_the_agent_config_names_each_bad_key(tmp_path: Path) -> None:
    raw = {
        "store_id": "store-001",
        "data_dir": str(tmp_path),
        "destinations": [
            {
                "name": "bok",
                "kind": "sie",
                "dir": str(tmp_path / "sie"),
                "orgnr": "12-34",
                "company_name": "K",
                "export_at": "25:00",
                "timezone": "Mars/Olympus",
                "types": ["sale", "stock_movement"],
                "accounts": {"cash": "kassa", "card": 1581},
            }
        ],
    }
    with pytest.raises(Exception) as caught:
        build_config(raw)
    keys = {key for key, _ in caught.value.problems}  # type: ignore[attr-defined]
    assert {
        "destinations[0].orgnr",
        "destinations[0].export_at",
        "destinations[0].timezone",
        "destinations[0].accounts.cash",
        "destinations[0].types[1]",
    } <= keys
    assert "destinations[0].accounts.card" not in keys  # 1581 as a TOML integer is fine


def test_unknown_account_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="bank"):
        SieDestinationConfig.model_validate(
            {"name": "bok", "dir": "x", "orgnr": "556677-8899", "company_name": "K", "accounts": {"bank": "1930"}}
        )
