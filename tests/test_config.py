"""The config file (contract §4): defaults, every problem by its key, secrets, environment, path.

A technician edits one TOML file on a Pi over SSH; what they rely on is that
every mistake is named at once by the key they typed, that secrets come from
files, and that the agent refuses to expose ingest without a token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import tlscert
from agent.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    build_config,
    load_config,
    resolve_path,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KASSABRO_ variable of the machine running the tests leaks in."""
    import os

    for name in list(os.environ):
        if name.startswith("KASSABRO_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(raw: dict[str, Any] | Path, **kwargs: Any) -> dict[str, str]:
    """The problems ``ConfigError`` names, as ``{key: message}``."""
    with pytest.raises(ConfigError) as caught:
        if isinstance(raw, Path):
            load_config(raw, **kwargs)
        else:
            build_config(raw, **kwargs)
    found: dict[str, str] = {}
    for key, message in caught.value.problems:
        found.setdefault(key, message)
    return found


def minimal(**extra: Any) -> dict[str, Any]:
    return {"store_id": "store-001", **extra}


def http_destination(**extra: Any) -> dict[str, Any]:
    return {"name": "backend", "kind": "http", "url": "http://127.0.0.1:9/in", **extra}


# ------------------------------------------------------------------ defaults
def test_every_key_has_its_contract_default() -> None:
    config = build_config(minimal())

    assert config.store_id == "store-001"
    assert config.data_dir == Path("/var/lib/kassabro")
    assert config.outbox_path == Path("/var/lib/kassabro/outbox.db")
    assert config.log_level == "INFO"
    assert str(config.ingest.listen) == "127.0.0.1:8780"
    assert config.ingest.listen.is_loopback
    assert config.ingest.token_file is None
    assert config.ingest.spool_dir is None
    assert config.ingest.derive_stock_from_sales is True
    assert config.outbox.retention_days == 14
    assert config.outbox.max_bytes == 2 * 1024**3
    assert config.outbox.prune_interval_s == 3600
    assert str(config.status.listen) == "0.0.0.0:8781"
    assert config.status.admin_token_file is None
    assert (config.skus.shipping, config.skus.handling, config.skus.discount) == ("fraktavg", "expavg", "rabatt")
    assert config.destinations == []
    assert config.ingest_token() is None and config.admin_token() is None


def test_every_key_can_be_set(tmp_path: Path) -> None:
    token = write(tmp_path / "ingest.token", "s3cret\n")
    admin = write(tmp_path / "admin.token", "  admin-token  \n")
    tls = tlscert.renew(tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem", hostname="pi", addresses=[])
    till = write(tmp_path / "kassa-2.token", "t2")
    config = build_config(
        {
            "store_id": "butik_7.a-1",
            "data_dir": str(tmp_path / "data"),
            "log_level": "DEBUG",
            "ingest": {
                "listen": "192.168.1.20:9780",
                "token_file": str(token),
                "spool_dir": str(tmp_path / "spool"),
                "derive_stock_from_sales": False,
                "tills": [{"id": "kassa-2", "token_file": str(till)}],
                "tls_cert_file": str(tls.cert_file),
                "tls_key_file": str(tls.key_file),
                "allow_plain_http": False,
            },
            "outbox": {"retention_days": 30, "max_bytes": 64 * 1024**2, "prune_interval_s": 600},
            "status": {
                "listen": "[::1]:9781",
                "admin_token_file": str(admin),
                "tls_cert_file": str(tls.cert_file),
                "tls_key_file": str(tls.key_file),
            },
            "skus": {"shipping": "FRAKT", "handling": "EXP", "discount": "RAB"},
            "destinations": [http_destination()],
        }
    )

    assert config.outbox_path == tmp_path / "data" / "outbox.db"
    assert config.log_level == "DEBUG"
    assert (config.ingest.listen.host, config.ingest.listen.port) == ("192.168.1.20", 9780)
    assert not config.ingest.listen.is_loopback
    assert config.ingest.spool_dir == tmp_path / "spool"
    assert config.ingest.derive_stock_from_sales is False
    assert (config.outbox.retention_days, config.outbox.max_bytes, config.outbox.prune_interval_s) == (
        30,
        64 * 1024**2,
        600,
    )
    assert str(config.status.listen) == "[::1]:9781" and config.status.listen.is_loopback
    assert (config.skus.shipping, config.skus.handling, config.skus.discount) == ("FRAKT", "EXP", "RAB")
    assert config.ingest_token() == "s3cret"  # the trailing newline is not part of it
    assert config.admin_token() == "admin-token"
    assert config.till_tokens() == {"t2": "kassa-2"}
    assert config.ingest.tls_cert_file == config.status.tls_cert_file == tls.cert_file


@pytest.mark.parametrize("listen", ["localhost:8780", "127.0.0.1:8780", "127.8.9.10:1", "[::1]:8780"])
def test_loopback_listen_needs_no_token(listen: str) -> None:
    config = build_config(minimal(ingest={"listen": listen}))
    assert config.ingest.listen.is_loopback


# ------------------------------------------------------------------ problems by key
def test_several_wrong_keys_are_all_reported_by_key() -> None:
    found = problems_of(
        {
            "store_id": "store 001!",
            "log_level": "TRACE",
            "ingest": {"listen": "nowhere"},
            "outbox": {"retention_days": 0, "max_bytes": 5},
            "destinations": [http_destination(), http_destination(name="relay", url="not a url")],
        }
    )

    assert set(found) == {
        "store_id",
        "log_level",
        "ingest.listen",
        "outbox.retention_days",
        "outbox.max_bytes",
        "destinations[1].url",
    }
    assert "nowhere" in found["ingest.listen"]
    assert "DEBUG" in found["log_level"]


def test_the_error_text_lists_every_problem_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"store_id": "", "ingest": {"listen": "x"}})
    text = str(caught.value)
    assert text.startswith("invalid configuration:")
    assert "\n  store_id: " in text
    assert "\n  ingest.listen: " in text


def test_a_missing_store_id_is_named() -> None:
    assert "store_id" in problems_of({"data_dir": "/tmp"})


@pytest.mark.parametrize("store_id", ["", "a" * 65, "butik 1", "butik/1", "åre"])
def test_store_id_follows_its_pattern(store_id: str) -> None:
    assert "store_id" in problems_of(minimal(store_id=store_id))


@pytest.mark.parametrize(
    ("listen", "why"),
    [("8780", "host:port"), ("127.0.0.1", "host:port"), ("127.0.0.1:99999", "out of range"), ("::1:8780", "host:port")],
)
def test_a_bad_listen_is_named_with_the_reason(listen: str, why: str) -> None:
    found = problems_of(minimal(ingest={"listen": listen}, status={"listen": listen}))
    assert why in found["ingest.listen"]
    assert why in found["status.listen"]


def test_unknown_keys_are_refused_by_name() -> None:
    found = problems_of(
        minimal(
            colour="blue",
            ingest={"lisen": "127.0.0.1:1"},
            outbox={"retention": 3},
            status={"admin_token": "inline-secret"},
            skus={"fee": "x"},
            destinations=[http_destination(tiemout_s=3)],
        )
    )
    assert {
        "colour",
        "ingest.lisen",
        "outbox.retention",
        "status.admin_token",
        "skus.fee",
        "destinations[0].tiemout_s",
    } <= set(found)


def test_duplicate_destination_names_are_refused() -> None:
    found = problems_of(minimal(destinations=[http_destination(), http_destination(url="http://127.0.0.1:8/x")]))
    assert "destinations[1].name" in found
    assert "destinations[0]" in found["destinations[1].name"]


def test_an_unknown_destination_kind_is_named() -> None:
    found = problems_of(minimal(destinations=[http_destination(), {"name": "ftp", "kind": "ftp"}]))
    assert "destinations[1].kind" in found
    assert "http" in found["destinations[1].kind"] and "'ftp'" in found["destinations[1].kind"]


def test_a_destination_that_is_not_a_table_is_named() -> None:
    assert "destinations[0]" in problems_of(minimal(destinations=["backend"]))


def test_a_non_loopback_ingest_needs_a_token_file() -> None:
    found = problems_of(minimal(ingest={"listen": "0.0.0.0:8780"}))
    assert set(found) == {"ingest.token_file", "ingest.tls_cert_file"}  # both, in one round
    assert "0.0.0.0:8780" in found["ingest.token_file"]


def test_a_non_loopback_ingest_with_a_token_file_is_fine(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "t0ken")
    config = build_config(
        minimal(ingest={"listen": "0.0.0.0:8780", "token_file": str(token), "allow_plain_http": True})
    )
    assert config.ingest_token() == "t0ken"


def test_a_non_loopback_ingest_needs_tls_unless_plain_http_is_allowed(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "t0ken")
    found = problems_of(minimal(ingest={"listen": "0.0.0.0:8780", "token_file": str(token)}))
    assert set(found) == {"ingest.tls_cert_file"}
    assert "0.0.0.0:8780" in found["ingest.tls_cert_file"] and "allow_plain_http" in found["ingest.tls_cert_file"]

    half = problems_of(minimal(status={"tls_cert_file": str(tmp_path / "cert.pem")}))
    assert "both" in half["status.tls_cert_file"]

    # A key that is not the certificate's is named before anything listens.
    one = tlscert.renew(tmp_path / "a" / "cert.pem", tmp_path / "a" / "key.pem", hostname="pi", addresses=[])
    other = tlscert.renew(tmp_path / "b" / "cert.pem", tmp_path / "b" / "key.pem", hostname="pi", addresses=[])
    ingest = {"listen": "0.0.0.0:8780", "token_file": str(token)}
    mismatched = problems_of(
        minimal(ingest={**ingest, "tls_cert_file": str(one.cert_file), "tls_key_file": str(other.key_file)})
    )
    assert "cannot load" in mismatched["ingest.tls_cert_file"]
    fine = build_config(
        minimal(ingest={**ingest, "tls_cert_file": str(one.cert_file), "tls_key_file": str(one.key_file)})
    )
    assert fine.ingest.plain_on_lan is False


# ------------------------------------------------------------------ secret files
def test_missing_and_empty_secret_files_are_named(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty", " \n\t\n")
    found = problems_of(
        minimal(
            ingest={"token_file": str(tmp_path / "missing")},
            status={"admin_token_file": str(empty)},
            destinations=[http_destination(token_file=str(tmp_path / "also-missing"))],
        )
    )

    assert set(found) == {"ingest.token_file", "status.admin_token_file", "destinations[0].token_file"}
    assert "missing" in found["ingest.token_file"]
    assert "empty" in found["status.admin_token_file"]
    assert "also-missing" in found["destinations[0].token_file"]


def test_secret_files_are_not_read_when_told_not_to(tmp_path: Path) -> None:
    config = build_config(minimal(ingest={"token_file": str(tmp_path / "missing")}), check_secrets=False)
    assert config.ingest.token_file == tmp_path / "missing"


def test_a_secret_keeps_inner_whitespace_and_loses_the_surrounding(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "\n  two words\t\r\n\n")
    config = build_config(minimal(ingest={"token_file": str(token)}))
    assert config.ingest_token() == "two words"


# ------------------------------------------------------------------ destinations by kind
def test_http_destination_keys_and_defaults(tmp_path: Path) -> None:
    token = write(tmp_path / "token", "abc\n")
    config = build_config(minimal(destinations=[http_destination(token_file=str(token))]))
    [dest] = config.destinations

    assert (dest.name, dest.kind, str(dest.url)) == ("backend", "http", "http://127.0.0.1:9/in")
    assert dest.types == ["sale", "stock_movement"]
    assert (dest.backoff_base_s, dest.backoff_cap_s) == (1.0, 300.0)
    assert dest.batch_max >= 1
    assert dest.timeout_s == 10.0
    assert dest.token_file == token


def test_http_destination_every_key_set() -> None:
    [dest] = build_config(
        minimal(
            destinations=[
                http_destination(
                    types=["stock_movement"], backoff_base_s=0.5, backoff_cap_s=60, batch_max=7, timeout_s=3
                )
            ]
        )
    ).destinations
    assert (dest.types, dest.backoff_base_s, dest.backoff_cap_s, dest.batch_max, dest.timeout_s) == (
        ["stock_movement"],
        0.5,
        60,
        7,
        3,
    )


def test_http_destination_problems_are_named() -> None:
    found = problems_of(
        minimal(
            destinations=[
                {"kind": "http", "types": ["sale", "refund"], "timeout_s": 0, "batch_max": 0, "backoff_base_s": -1}
            ]
        )
    )
    assert {
        "destinations[0].name",
        "destinations[0].url",
        "destinations[0].types[1]",
        "destinations[0].timeout_s",
        "destinations[0].batch_max",
        "destinations[0].backoff_base_s",
    } <= set(found)


def test_http_destination_with_no_types_is_refused() -> None:
    assert "destinations[0].types" in problems_of(minimal(destinations=[http_destination(types=[])]))


def test_hogia_destination_needs_its_auth_keys(tmp_path: Path) -> None:
    key = write(tmp_path / "hogia.key", "k\n")
    found = problems_of(minimal(destinations=[{"name": "hogia", "kind": "hogia", "base_url": "http://127.0.0.1:9"}]))
    assert "api_key_file" in found["destinations[0]"]

    [dest] = build_config(
        minimal(
            flow={"sales_to_hogia": "kassabro"},
            destinations=[
                {"name": "hogia", "kind": "hogia", "base_url": "http://127.0.0.1:9", "api_key_file": str(key)}
            ],
        )
    ).destinations
    assert (dest.kind, dest.auth) == ("hogia", "api_key")

    found = problems_of(
        minimal(
            destinations=[
                {
                    "name": "hogia",
                    "kind": "hogia",
                    "base_url": "http://127.0.0.1:9",
                    "api_key_file": str(tmp_path / "nope"),
                }
            ]
        )
    )
    assert "destinations[0].api_key_file" in found


def test_sharespine_destination_keys() -> None:
    [dest] = build_config(
        minimal(
            flow={"webshop_stock": "kassabro"},
            destinations=[{"name": "ss", "kind": "sharespine", "base_url": "http://127.0.0.1:9", "auth": "none"}],
        )
    ).destinations
    assert dest.kind == "sharespine"
    found = problems_of(minimal(destinations=[{"name": "ss", "kind": "sharespine", "base_url": "ftp:nothing"}]))
    assert "destinations[0].base_url" in found


def test_mqtt_destination_defaults_and_problems() -> None:
    [plain, tls] = build_config(
        minimal(
            destinations=[
                {"name": "broker", "kind": "mqtt", "host": "127.0.0.1"},
                {"name": "secure", "kind": "mqtt", "host": "127.0.0.1", "tls": True},
            ]
        )
    ).destinations
    assert (plain.port, plain.topic_prefix, plain.tls, plain.ingest) == (1883, "kassabro", False, False)
    assert tls.port == 8883

    found = problems_of(minimal(destinations=[{"name": "broker", "kind": "mqtt", "port": 0, "topic_prefix": "a/#"}]))
    assert {"destinations[0].host", "destinations[0].port", "destinations[0].topic_prefix"} <= set(found)


def test_sie_destination_defaults_and_problems(tmp_path: Path) -> None:
    [dest] = build_config(
        minimal(
            destinations=[
                {"name": "bok", "kind": "sie", "dir": str(tmp_path), "orgnr": "5560000000", "company_name": "Butik AB"}
            ]
        )
    ).destinations
    assert (dest.export_at, dest.timezone, dest.series, dest.checksum, dest.types) == (
        "02:00",
        "Europe/Stockholm",
        "",
        True,
        ["sale"],
    )
    assert dest.accounts.cash == "1910" and dest.accounts.sales(25) == "3001"

    found = problems_of(
        minimal(
            destinations=[
                {
                    "name": "bok",
                    "kind": "sie",
                    "dir": str(tmp_path),
                    "orgnr": "55",
                    "company_name": "B",
                    "export_at": "25:00",
                }
            ]
        )
    )
    assert {"destinations[0].orgnr", "destinations[0].export_at"} <= set(found)


# ------------------------------------------------------------------ the file and the environment
def test_a_config_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kassabro.toml",
        f"""
store_id = "store-001"
data_dir = "{tmp_path / "data"}"

[ingest]
listen = "127.0.0.1:18780"

[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:9/in"
""",
    )
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.path == path
    assert config.ingest.listen.port == 18780
    assert [d.name for d in config.destinations] == ["backend"]


def test_invalid_toml_is_reported_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", 'store_id = "store-001\n[ingest\n')
    found = problems_of(path)
    [message] = found.values()
    assert str(path) in message and "TOML" in message


def test_a_config_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('store_id = "butik"\n# Åre\n'.encode("latin-1"))
    [message] = problems_of(path).values()
    assert str(path) in message


def test_a_missing_config_file_is_reported_with_its_name(tmp_path: Path) -> None:
    [message] = problems_of(tmp_path / "nope.toml").values()
    assert "nope.toml" in message and "does not exist" in message


def test_problems_in_a_file_are_named_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kassabro.toml",
        """
store_id = "store-001"
[ingest]
listen = "everywhere"
[[destinations]]
name = "a"
kind = "http"
url = "http://127.0.0.1:9/in"
[[destinations]]
name = "b"
kind = "http"
url = "nope"
""",
    )
    assert {"ingest.listen", "destinations[1].url"} <= set(problems_of(path))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = write(tmp_path / "token", "t")
    path = write(
        tmp_path / "kassabro.toml",
        f"""
store_id = "from-file"
[ingest]
listen = "127.0.0.1:8780"
token_file = "{token}"
allow_plain_http = true
[outbox]
retention_days = 14
""",
    )
    monkeypatch.setenv("KASSABRO_STORE_ID", "from-env")
    monkeypatch.setenv("KASSABRO_INGEST__LISTEN", "0.0.0.0:9780")
    monkeypatch.setenv("KASSABRO_OUTBOX__RETENTION_DAYS", "3")
    monkeypatch.setenv("KASSABRO_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("KASSABRO_LOG_LEVEL", "WARNING")

    config = load_config(path)

    assert config.store_id == "from-env"
    assert str(config.ingest.listen) == "0.0.0.0:9780"
    assert config.ingest.token_file == token  # the rest of [ingest] still comes from the file
    assert config.outbox.retention_days == 3
    assert config.data_dir == tmp_path / "env-data"
    assert config.log_level == "WARNING"


def test_a_bad_environment_value_is_named_by_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "kassabro.toml", 'store_id = "store-001"\n')
    monkeypatch.setenv("KASSABRO_INGEST__LISTEN", "anywhere")
    monkeypatch.setenv("KASSABRO_STATUS__LISTEN", "127.0.0.1:1")
    monkeypatch.setenv("KASSABRO_OUTBOX__MAX_BYTES", "lots")

    found = problems_of(path)

    assert set(found) == {"ingest.listen", "outbox.max_bytes"}


def test_an_environment_listen_off_loopback_still_needs_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "kassabro.toml", 'store_id = "store-001"\n')
    monkeypatch.setenv("KASSABRO_INGEST__LISTEN", "0.0.0.0:8780")
    assert set(problems_of(path)) == {"ingest.token_file", "ingest.tls_cert_file"}


def test_resolve_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_path(None) == DEFAULT_CONFIG_PATH == Path("/etc/kassabro/kassabro.toml")
    monkeypatch.setenv("KASSABRO_CONFIG", str(tmp_path / "env.toml"))
    assert resolve_path(None) == tmp_path / "env.toml"
    assert resolve_path(tmp_path / "flag.toml") == tmp_path / "flag.toml"
    assert resolve_path(str(tmp_path / "flag.toml")) == tmp_path / "flag.toml"


def test_load_config_uses_kassabro_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "env.toml", 'store_id = "via-env"\n')
    monkeypatch.setenv("KASSABRO_CONFIG", str(path))
    config = load_config()
    assert (config.store_id, config.path) == ("via-env", path)


def test_problems_are_all_found_even_when_the_top_level_is_broken(tmp_path: Path) -> None:
    """One round of fixing: a broken store_id does not hide the other checks."""
    found = problems_of(
        {
            "store_id": "not valid!",
            "ingest": {"listen": "0.0.0.0:8780"},
            "status": {"admin_token_file": str(tmp_path / "missing-admin")},
            "destinations": [http_destination(url="nope"), http_destination()],
        }
    )
    assert {
        "store_id",
        "ingest.token_file",
        "status.admin_token_file",
        "destinations[0].url",
        "destinations[1].name",
    } <= set(found)
    assert not any(message.startswith("Value error") for message in found.values())


def test_the_configuration_docs_cover_every_key() -> None:
    """docs/configuration.md names every key the code accepts (a new key needs its line)."""
    from pydantic import BaseModel

    from agent.config import (
        IngestConfig,
        OutboxConfig,
        Settings,
        SkusConfig,
        StatusConfig,
    )
    from agent.destinations.kinds import KINDS
    from agent.flow import FlowConfig
    from agent.sie.config import SieAccounts

    docs = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    sections: list[tuple[str, type[BaseModel]]] = [
        ("ingest", IngestConfig),
        ("outbox", OutboxConfig),
        ("status", StatusConfig),
        ("skus", SkusConfig),
        ("flow", FlowConfig),
        ("accounts", SieAccounts),
    ]
    sections += [(f"kind {kind}", entry.config) for kind, entry in KINDS.items()]
    missing = [
        f"(top level).{key}" for key in Settings.model_fields if f"`{key}`" not in docs and f"[{key}]" not in docs
    ]
    for where, model in sections:
        missing += [f"{where}.{key}" for key in model.model_fields if f"`{key}`" not in docs]
    assert missing == []
    for kind in KINDS:
        assert f"### kind `{kind}`" in docs
