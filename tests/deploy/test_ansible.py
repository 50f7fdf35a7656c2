"""deploy/ansible/rollout.yml: valid for ansible-playbook, standard modules only, rolled out in guarded batches."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "deploy/ansible/rollout.yml"
INVENTORY = REPO / "deploy/ansible/inventory.example.ini"


def syntax_check(playbook: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), "--syntax-check", str(playbook)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(playbook.parent), "ANSIBLE_NOCOLOR": "1"},
    )


@pytest.mark.slow
def test_syntax_check_passes() -> None:
    result = syntax_check(PLAYBOOK)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_syntax_check_catches_a_mistake(tmp_path: Path) -> None:
    """The check above means something: a misspelt task keyword in the same playbook fails it."""
    broken = tmp_path / "rollout.yml"
    broken.write_text(PLAYBOOK.read_text().replace("      register: kassabro_installed", "      registr: x", 1))
    result = syntax_check(broken)
    assert result.returncode != 0
    assert "registr" in result.stdout + result.stderr


def test_standard_modules_batches_and_the_upgrade_command() -> None:
    text = PLAYBOOK.read_text()
    keywords = {"hosts", "when", "block", "register", "become"}
    modules = set(re.findall(r"^\s+- name: .*\n\s+([a-z_.]+):", text, re.MULTILINE)) - keywords
    assert modules and all(m.startswith("ansible.builtin.") for m in modules), modules
    assert {"ansible.builtin.copy", "ansible.builtin.unarchive", "ansible.builtin.command"} <= modules
    assert re.search(r"^  serial:\n    - 1\n", text, re.MULTILINE), "a canary shop first"
    assert re.search(r"^  max_fail_percentage: \d+$", text, re.MULTILINE)
    assert "./install.sh upgrade" in text
