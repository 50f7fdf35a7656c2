"""The Windows share (contract §2, install.sh --share) with a real smbd and smbclient.

smbd runs on a free loopback port with the share snippet install.sh installs
(deploy/raspberrypi/samba-kassabro.conf), pointed at a spool the in-process
agent watches. smbclient writes as a Windows till does: a temporary name, then
a rename to ``*.json``. The test user is the one running the tests (smbd maps
an SMB user to a Unix account; install.sh creates ``kassabro-till`` on a Pi).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, make_sale, stored_keys, wait_for_port
from tests.sources.conftest import agent_config, running_agent

SNIPPET = Path(__file__).resolve().parents[2] / "deploy/raspberrypi/samba-kassabro.conf"
PASSWORD = "till-password-123"

pytestmark = pytest.mark.slow


@dataclass
class Share:
    port: int
    user: str
    spool: Path
    log: Path

    def client(self, *commands: str, share: str = "kassabro", auth: list[str] | None = None,
               protocol: str = "SMB3") -> subprocess.CompletedProcess[str]:  # fmt: skip
        """smbclient as the till uses it; ``auth`` replaces the user and password (``["-N"]``: a guest)."""
        login = auth if auth is not None else ["-U", f"{self.user}%{PASSWORD}"]
        command = ["smbclient", f"//127.0.0.1/{share}", "-p", str(self.port), *login, "-m", protocol]
        command += ["--option=client min protocol=" + ("SMB2_02" if protocol == "SMB2" else "SMB3")]
        return subprocess.run([*command, "-c", "; ".join(commands)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Share]:
    state = tmp_path / "samba"
    for sub in ("private", "lock", "state", "cache", "pid", "log"):
        (state / sub).mkdir(parents=True)
    spool = tmp_path / "spool"
    user = getpass.getuser()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()
    snippet = SNIPPET.read_text(encoding="utf-8")
    snippet = snippet.replace("@SPOOL@", str(spool)).replace("@USER@", user).replace("@GROUP@", group)
    (state / "share.conf").write_text(snippet, encoding="utf-8")
    port = free_port()
    conf = state / "smb.conf"
    conf.write_text(
        "[global]\n"
        f"   smb ports = {port}\n   interfaces = 127.0.0.1\n   bind interfaces only = yes\n"
        "   server role = standalone server\n"
        + "".join(f"   {key} directory = {state / key}\n" for key in ("lock", "state", "cache", "pid"))
        + f"   private dir = {state / 'private'}\n   ncalrpc dir = {state / 'lock'}/ncalrpc\n"
        f"   passdb backend = tdbsam:{state / 'private'}/passdb.tdb\n   log file = {state / 'log'}/smbd.log\n"
        f"   include = {state / 'share.conf'}\n",
        encoding="utf-8",
    )
    subprocess.run(
        ["smbpasswd", "-c", str(conf), "-a", "-s", user], input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    for sub in ("incoming", "done", "rejected"):
        (spool / sub).mkdir(parents=True)
    log = state / "log" / "stdout.log"
    with open(log, "wb") as out:
        smbd = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "-s", str(conf), "--debug-stdout", "-d1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        assert wait_for_port(port, timeout=20), log.read_text(errors="replace")
        yield Share(port, user, spool, log)
    finally:
        os.killpg(smbd.pid, signal.SIGKILL)  # smbd and the children it forked per connection
        smbd.wait(timeout=10)
        # smbd starts samba-dcerpcd (share listing) in a session of its own: find it by our config.
        subprocess.run(["pkill", "-KILL", "-f", f"--configfile={conf}"], check=False)


async def test_a_windows_style_write_is_taken_only_after_the_rename(share: Share, tmp_path: Path) -> None:
    config = agent_config(tmp_path, spool_dir=share.spool)
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"sales": [make_sale(1), make_sale(2)]}), encoding="utf-8")
    async with running_agent(config) as run:
        half = await asyncio.to_thread(share.client, f"put {export} 2026-12-01-0001.json.tmp")
        assert half.returncode == 0, half.stdout + half.stderr
        await asyncio.sleep(1.0)  # the spool sees the write; a temporary name is never taken
        assert not any(key.startswith("sale:") for key in stored_keys(run.db))
        assert (share.spool / "incoming" / "2026-12-01-0001.json.tmp").exists()

        done = await asyncio.to_thread(share.client, "rename 2026-12-01-0001.json.tmp 2026-12-01-0001.json")
        assert done.returncode == 0, done.stdout + done.stderr
        await eventually(lambda: (share.spool / "done" / "2026-12-01-0001.json").exists(), what="the file taken")
        assert {"sale:kassa-1:1", "sale:kassa-1:2"} <= set(stored_keys(run.db))

        # A file it refuses: the reason is readable from the share, and cannot be changed there.
        bad = tmp_path / "bad.json"
        bad.write_text('{"sales": [{"till_id": "kassa-1"}]}', encoding="utf-8")
        await asyncio.to_thread(share.client, f"put {bad} bad.json.tmp", "rename bad.json.tmp bad.json")
        await eventually(lambda: (share.spool / "rejected" / "bad.json.error.txt").exists(), what="the rejection")
        why = tmp_path / "why.txt"
        read = await asyncio.to_thread(share.client, f"get bad.json.error.txt {why}", share="kassabro-rejected")
        assert read.returncode == 0, read.stdout + read.stderr
        assert "receipt_no" in why.read_text(encoding="utf-8")
        write = await asyncio.to_thread(share.client, f"put {bad} again.json", share="kassabro-rejected")
        assert "NT_STATUS_ACCESS_DENIED" in write.stdout + write.stderr
        delete = await asyncio.to_thread(share.client, "del bad.json.error.txt", share="kassabro-rejected")
        assert "NT_STATUS" in delete.stdout + delete.stderr
        assert (share.spool / "rejected" / "bad.json.error.txt").exists()
        print("SMB transcript:", *(r.stdout + r.stderr for r in (half, done, read, write, delete)), sep="\n")


def test_guests_old_protocols_and_other_paths_are_refused(share: Share) -> None:
    guest = share.client("ls", auth=["-N"])
    assert guest.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in guest.stdout + guest.stderr or "LOGON_FAILURE" in guest.stdout + guest.stderr
    wrong = share.client("ls", auth=["-U", f"{share.user}%not-the-password"])
    assert "NT_STATUS_LOGON_FAILURE" in wrong.stdout + wrong.stderr
    smb2 = share.client("ls", protocol="SMB2")
    assert smb2.returncode != 0 and "NT_STATUS_NOT_SUPPORTED" in smb2.stdout + smb2.stderr
    escape = share.client("cd ..", "ls")
    assert "done" not in escape.stdout  # the share's root is incoming/; nothing above it is visible
    listing = subprocess.run(
        ["smbclient", "-L", "//127.0.0.1", "-p", str(share.port), "-U", f"{share.user}%{PASSWORD}", "-m", "SMB3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    shares = {line.split()[0] for line in listing.stdout.splitlines() if "Disk" in line}
    assert shares == {"kassabro", "kassabro-rejected"}, listing.stdout
