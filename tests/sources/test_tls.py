"""TLS on the listeners (contract §2), with the certificate ``kassabro tls renew`` makes.

The till pins the Pi's self-signed certificate, so these tests pin it the
ways a till does: ``curl --pinnedpubkey`` with the public-key pin and a
client comparing the certificate's SHA-256 fingerprint (what .NET's
``HttpClient`` callback compares). A wrong pin must fail in the client,
before a byte of the sale is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent import tlscert
from tests.helpers import make_sale
from tests.sources.conftest import agent_config, running_agent

TOKEN = "lan-token-123"


def renew(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``kassabro tls renew`` as the technician (and install.sh) runs it."""
    command = [sys.executable, "-m", "agent.cli", "tls", "renew", "--cert", str(tmp_path / "tls" / "cert.pem")]
    command += ["--key", str(tmp_path / "tls" / "key.pem"), "--hostname", "kassa-pi", "--address", "127.0.0.1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def printed(output: str, label: str) -> str:
    return next(line.split(": ", 1)[1] for line in output.splitlines() if line.startswith(label))


def tls_keys(tmp_path: Path) -> dict[str, str]:
    return {"tls_cert_file": str(tmp_path / "tls" / "cert.pem"), "tls_key_file": str(tmp_path / "tls" / "key.pem")}


@pytest.mark.slow
def test_renew_makes_a_ten_year_certificate_for_the_pis_names_and_keeps_the_key(tmp_path):
    first = renew(tmp_path)
    assert first.returncode == 0, first.stderr
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "DNS:kassa-pi, DNS:kassa-pi.local, IP Address:127.0.0.1" in text
    openssl_fp = next(line for line in text.splitlines() if "Fingerprint=" in line).split("=", 1)[1]
    assert printed(first.stdout, "SHA-256 fingerprint") == openssl_fp == tlscert.fingerprint(cert)
    not_after = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-checkend", str(9 * 365 * 86400)], capture_output=True
    )
    assert not_after.returncode == 0  # still valid nine years from now

    pin = printed(first.stdout, "public key pin")
    again = renew(tmp_path)
    assert "kept" in again.stdout
    assert printed(again.stdout, "public key pin") == pin  # a till's public-key pin survives a renewal
    fresh = renew(tmp_path, "--new-key")
    assert printed(fresh.stdout, "public key pin") != pin


@pytest.mark.slow
async def test_https_ingest_with_the_pinned_certificate_and_a_wrong_pin_fails_in_the_client(tmp_path):
    made = renew(tmp_path)
    assert made.returncode == 0, made.stderr
    pin = printed(made.stdout, "public key pin")
    fingerprint = printed(made.stdout, "SHA-256 fingerprint")
    config = agent_config(tmp_path, token=TOKEN, ingest=tls_keys(tmp_path), status=tls_keys(tmp_path))
    async with running_agent(config) as run:
        url = f"https://127.0.0.1:{run.agent.ingest_port}/v1/sales"
        sale = tmp_path / "sale.json"
        sale.write_text(json.dumps(make_sale(1)), encoding="utf-8")
        curl = ["curl", "-sS", "--cacert", str(tmp_path / "tls" / "cert.pem"), "-H", f"Authorization: Bearer {TOKEN}"]
        curl += ["-H", "Content-Type: application/json", "--data-binary", f"@{sale}", "-w", "\n%{http_code}"]
        ok = await _run([*curl, "--pinnedpubkey", pin, url])
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines()[-1] == "201"
        assert json.loads(ok.stdout.splitlines()[0])["key"] == "sale:kassa-1:1"
        before = run.dump()

        sale.write_text(json.dumps(make_sale(2)), encoding="utf-8")
        wrong = await _run([*curl, "--pinnedpubkey", "sha256//" + "A" * 43 + "=", url])
        assert wrong.returncode == 90, wrong.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
        assert run.dump() == before  # nothing reached the agent

        # Plain HTTP to the TLS port is not an ingest.
        plain = await _run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url.replace("https", "http")])
        assert plain.stdout != "201"
        assert run.dump() == before

        # The fingerprint pin, as the till's .NET callback compares it, and the page showing it.
        seen = await asyncio.to_thread(_peer_fingerprint, run.agent.ingest_port)  # the server runs in this loop
        assert seen == fingerprint == run.agent.tls_fingerprint
        async with httpx.AsyncClient(verify=_trusting(tmp_path)) as client:
            page = await client.get(f"https://127.0.0.1:{run.agent.status_port}/")
        assert page.status_code == 200
        assert fingerprint in page.text
        assert 'id="admin-form"' not in page.text  # no admin token configured here

    # kassabro status gives the technician both pins to hand to the till.
    toml = tmp_path / "kassabro.toml"
    tls = tls_keys(tmp_path)
    toml.write_text(
        f'store_id = "store-001"\ndata_dir = "{config.data_dir}"\n[ingest]\n'
        f'tls_cert_file = "{tls["tls_cert_file"]}"\ntls_key_file = "{tls["tls_key_file"]}"\n',
        encoding="utf-8",
    )
    status = await _run([sys.executable, "-m", "agent.cli", "status", "--config", str(toml)])
    assert status.returncode == 0, status.stderr
    assert f"TLS certificate SHA-256 fingerprint: {fingerprint}" in status.stdout
    assert f"TLS public key pin (curl --pinnedpubkey): {pin}" in status.stdout
    print(status.stdout)


async def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30, check=False)


def _trusting(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))


def _peer_fingerprint(port: int) -> str:
    """What a pinning client sees: the SHA-256 of the certificate the server presented."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin, not a CA, is the trust here
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


async def test_allow_plain_http_on_the_lan_is_warned_at_every_start(tmp_path, caplog):
    config = agent_config(tmp_path, listen="0.0.0.0:0", token=TOKEN, ingest={"allow_plain_http": True})
    caplog.set_level(logging.WARNING, logger="agent.app")
    for _ in range(2):
        async with running_agent(config):
            pass
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "plain HTTP" in r.getMessage()]
    assert len(warnings) == 2
    assert "allow_plain_http" in warnings[0].getMessage()


def test_a_lan_listen_without_tls_is_refused_at_start(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")
    config = tmp_path / "kassabro.toml"
    config.write_text(
        f'store_id = "s"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[ingest]\nlisten = "0.0.0.0:8780"\ntoken_file = "{token}"\n[status]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "ingest.tls_cert_file" in result.stderr and "allow_plain_http" in result.stderr
    assert not (tmp_path / "data").exists()


async def test_admin_actions_only_over_tls_or_from_the_pi_itself(tmp_path):
    admin = tmp_path / "admin.token"
    admin.write_text("admin-secret", encoding="utf-8")
    config = agent_config(tmp_path, status={"admin_token_file": str(admin)})
    async with running_agent(config, paused=False) as run:
        app = run.agent.status_server.server.config.app
        bearer = {"Authorization": "Bearer admin-secret"}
        lan = httpx.ASGITransport(app=app, client=("192.0.2.10", 50000))
        async with httpx.AsyncClient(transport=lan, base_url="http://kassa-pi:8781") as client:
            page = await client.get("/")
            assert 'id="admin-form"' not in page.text
            assert "https://" in page.text  # it says why there is no form
            refused = await client.post("/api/destinations/backend/pause", headers=bearer)
            assert refused.status_code == 403
            assert refused.json()["error"] == "tls_required"
        assert (await run.agent.status())["destinations"][0]["state"] != "paused"
        async with httpx.AsyncClient(transport=lan, base_url="https://kassa-pi:8781") as client:
            assert 'id="admin-form"' in (await client.get("/")).text
            done = await client.post("/api/destinations/backend/pause", headers=bearer)
            assert done.status_code == 200, done.text
        local = f"http://127.0.0.1:{run.agent.status_port}"
        async with httpx.AsyncClient(base_url=local) as client:
            assert 'id="admin-form"' in (await client.get("/")).text
            assert (await client.post("/api/destinations/backend/resume", headers=bearer)).status_code == 200


@pytest.fixture(autouse=True)
def _openssl_and_curl() -> None:
    assert shutil.which("openssl") and shutil.which("curl"), "openssl and curl are test packages (Makefile)"
