"""The listeners' self-signed certificate: made, renewed and fingerprinted.

A till on the shop's LAN reaches the Pi by an address or ``<hostname>.local``;
no public CA will sign either, so the Pi signs its own certificate and the
till pins it. Two pins are shown, for the two ways clients pin:

- the certificate's SHA-256 fingerprint (``AB:CD:...``), what .NET's
  ``HttpClient`` callback and a browser's certificate viewer show;
- the public key's ``sha256//<base64>``, what ``curl --pinnedpubkey`` takes.
  ``kassabro tls renew`` keeps the key unless asked, so this pin survives a
  renewal (new addresses, the ten years running out).

The certificate is made by the ``openssl`` command (on every Debian and
Raspberry Pi OS image), so no Python crypto package is needed on the Pi;
the fingerprints are computed here from the PEM alone.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 3650
"""Ten years: a shop's Pi is not visited to renew a certificate."""


class TlsError(Exception):
    """The certificate could not be read or made; the message says which file and why."""


def _der(cert_file: Path) -> bytes:
    try:
        pem = Path(cert_file).read_text(encoding="ascii")
        return ssl.PEM_cert_to_DER_cert(pem)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TlsError(f"cannot read the certificate {cert_file}: {exc}") from None


def fingerprint(cert_file: Path) -> str:
    """The certificate's SHA-256 fingerprint as ``AB:CD:...`` (what .NET and browsers show)."""
    digest = hashlib.sha256(_der(cert_file)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``at``."""
    tag = data[at]
    length = data[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return tag, start, start + length


def public_key_pin(cert_file: Path) -> str:
    """``sha256//<base64>`` of the certificate's SubjectPublicKeyInfo (``curl --pinnedpubkey``)."""
    der = _der(cert_file)
    try:
        _, cert_start, _ = _tlv(der, 0)  # Certificate
        _, at, _ = _tlv(der, cert_start)  # tbsCertificate's content starts here
        tag, _, end = _tlv(der, at)
        if tag == 0xA0:  # [0] version, present in every v3 certificate
            at = end
        for _ in range(5):  # serial, signature, issuer, validity, subject
            _, _, at = _tlv(der, at)
        tag, _, end = _tlv(der, at)
    except IndexError:
        raise TlsError(f"{cert_file}: not a certificate this agent can read") from None
    if tag != 0x30:
        raise TlsError(f"{cert_file}: not a certificate this agent can read")
    spki = der[at:end]
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def current_addresses() -> list[str]:
    """This machine's addresses as ``hostname -I`` lists them, plus loopback."""
    found = ["127.0.0.1", "::1"]
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    for word in out.split():
        try:
            address = ipaddress.ip_address(word.split("%")[0])
        except ValueError:
            continue
        if not address.is_link_local and str(address) not in found:
            found.append(str(address))
    return found


@dataclass(frozen=True)
class Renewed:
    """What ``renew`` made: the files, whether the key is new, and the pins to give the tills."""

    cert_file: Path
    key_file: Path
    new_key: bool
    names: list[str]
    fingerprint: str
    public_key_pin: str


def _openssl(*args: str) -> None:
    try:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise TlsError("the openssl command is missing (apt-get install openssl)") from None
    if done.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def renew(
    cert_file: Path,
    key_file: Path,
    *,
    hostname: str | None = None,
    addresses: Sequence[str] | None = None,
    new_key: bool = False,
) -> Renewed:
    """Write a self-signed certificate for this machine's names, valid ten years.

    The subject alternative names are ``hostname``, ``hostname.local`` (mDNS)
    and ``addresses`` (default: the current ones). The key in ``key_file`` is
    kept when it exists, unless ``new_key``; a new key is an ECDSA P-256 key
    written 0600. Both files are replaced by rename, never half-written.
    """
    host = hostname or socket.gethostname().split(".")[0]
    addrs = list(addresses) if addresses is not None else current_addresses()
    names = [host, f"{host}.local", *addrs]
    san = ",".join([f"DNS:{host}", f"DNS:{host}.local", *(f"IP:{a}" for a in addrs)])
    cert_file, key_file = Path(cert_file), Path(key_file)
    make_key = new_key or not key_file.exists()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=key_file.parent, prefix=".tls-") as scratch:
        key_in = key_file
        if make_key:
            key_in = Path(scratch) / "key.pem"
            old = os.umask(0o077)
            try:
                _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key_in))
            finally:
                os.umask(old)
        cert_tmp = Path(scratch) / "cert.pem"
        _openssl(
            "req", "-x509", "-new", "-key", str(key_in), "-out", str(cert_tmp), "-days", str(VALID_DAYS),
            "-sha256", "-subj", f"/CN={host}", "-addext", f"subjectAltName={san}",
        )  # fmt: skip
        cert_tmp.chmod(0o644)
        if make_key:
            os.replace(key_in, key_file)
        os.replace(cert_tmp, cert_file)
    return Renewed(cert_file, key_file, make_key, names, fingerprint(cert_file), public_key_pin(cert_file))
