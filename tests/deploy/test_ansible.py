"""deploy/ansible/rollout.yml: valid for ansible-playbook, standard modules only, rolled out in guarded batches."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "deploy/ansible/rollout.yml"
INVENTORY = REPO / "deploy/ansible/inventory.example.ini"


def syntax_check(playbook: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Debian's ansible-playbook (APT_TEST_PACKAGES), its ~/.ansible in a temporary home, not in the tree."""
    return subprocess.run(
        ["ansible-playbook", "-i", str(INVENTORY), "--syntax-check", str(playbook)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "ANSIBLE_NOCOLOR": "1"},
    )


@pytest.mark.slow
def test_syntax_check_passes(tmp_path: Path) -> None:
    result = syntax_check(PLAYBOOK, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_ansible_lint_passes_at_the_production_profile(tmp_path: Path) -> None:
    """ansible-lint (the release extra) on a copy: it keeps a cache beside the playbook."""
    copy = tmp_path / "ansible"
    shutil.copytree(PLAYBOOK.parent, copy)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-lint")), "--offline", "--profile", "production", "rollout.yml"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=copy,
        env={**os.environ, "HOME": str(tmp_path), "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s), 0 warning(s)" in result.stdout + result.stderr


@pytest.mark.slow
def test_syntax_check_catches_a_mistake(tmp_path: Path) -> None:
    """The check above means something: a misspelt task keyword in the same playbook fails it."""
    broken = tmp_path / "rollout.yml"
    broken.write_text(PLAYBOOK.read_text().replace("      register: kassabro_installed", "      registr: x", 1))
    result = syntax_check(broken, tmp_path)
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
