"""Where the systemd unit lets the service write, so ``check-config`` can say so before a run fails.

The unit runs the agent with ``ProtectSystem=strict``: the whole file system
is read-only for it except ``StateDirectory=`` (/var/lib/kassabro) and the
``ReadWritePaths=`` of the unit and its drop-ins. A ``sie`` destination whose
``dir`` (or ``copy_to``) lies elsewhere, say the documented example
``/srv/kassabro/sie``, could never be written: the books would stop at the
first run. ``check-config`` reads the installed unit (and its drop-ins) and
names the drop-in line that fixes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

UNIT_NAME = "kassabro.service"
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
"""Where an installed unit is looked for, in systemd's order of precedence."""
SHIPPED_UNIT = Path(__file__).resolve().parents[1] / "systemd" / UNIT_NAME
"""The unit in a source checkout (a development machine has none installed)."""
DROP_IN = f"/etc/systemd/system/{UNIT_NAME}.d/sie.conf"


@dataclass
class Sandbox:
    """The write rules of one unit: ``ProtectSystem`` and the paths it leaves writable."""

    strict: bool = False
    writable: list[PurePosixPath] = field(default_factory=list)
    hidden: list[PurePosixPath] = field(default_factory=list)
    source: str = ""

    def allows(self, path: Path) -> bool:
        """Whether the service may write ``path`` (or files under it)."""
        target = PurePosixPath(os.path.normpath(str(path)))
        if any(target == h or h in target.parents for h in self.hidden):
            return False
        if not self.strict:
            return True
        return any(target == w or w in target.parents for w in self.writable)


def parse_unit(texts: list[str], source: str = "") -> Sandbox:
    """The sandbox of a unit and its drop-ins (later texts override, as systemd reads them)."""
    box = Sandbox(source=source)
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            key, _, value = (part.strip() for part in line.partition("="))
            if key == "ProtectSystem":
                box.strict = value == "strict"
            elif key in ("StateDirectory", "LogsDirectory", "CacheDirectory"):
                base = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log", "CacheDirectory": "/var/cache"}[key]
                box.writable += [PurePosixPath(base) / name for name in value.split()]
            elif key == "ReadWritePaths":
                if not value:
                    box.writable = []  # an empty assignment resets the list
                box.writable += [PurePosixPath(p.lstrip("-+")) for p in value.split()]
            elif key == "ProtectHome" and value in ("yes", "true", "tmpfs", "read-only"):
                box.hidden += [PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user")]
            elif key == "PrivateTmp" and value in ("yes", "true"):
                box.hidden += [PurePosixPath("/tmp"), PurePosixPath("/var/tmp")]
    return box


def installed_unit(explicit: Path | None = None) -> Sandbox | None:
    """The sandbox of ``explicit``, else of the installed unit, else of the shipped one; None if none is found."""
    candidates = [explicit] if explicit is not None else [*(d / UNIT_NAME for d in UNIT_DIRS), SHIPPED_UNIT]
    for unit in candidates:
        try:
            texts = [unit.read_text(encoding="utf-8")]
        except OSError:
            continue
        # Drop-ins beside the unit (``<unit>.d/*.conf``), and for an installed unit those in /etc too.
        folders = [Path(f"{unit}.d")]
        if explicit is None and unit != SHIPPED_UNIT:
            folders.append(UNIT_DIRS[0] / f"{UNIT_NAME}.d")
        drop_ins = sorted({conf for folder in folders for conf in folder.glob("*.conf")}, key=lambda p: p.name)
        for drop_in in drop_ins:
            try:
                texts.append(drop_in.read_text(encoding="utf-8"))
            except OSError:
                continue
        return parse_unit(texts, str(unit))
    return None


def write_problem(path: Path, box: Sandbox | None) -> str | None:
    """Why the service cannot write ``path``, naming the fix; None when it can."""
    if box is not None and not box.allows(path):
        return (
            f"{path} is not writable for the service: {box.source} has ProtectSystem=strict and leaves only "
            f"{', '.join(str(w) for w in box.writable) or 'nothing'} writable. Keep the files under /var/lib/kassabro, "
            f"or add a drop-in ({DROP_IN}, e.g. with `systemctl edit kassabro`) holding:\n"
            f"    [Service]\n    ReadWritePaths={path}"
        )
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        return f"{path} cannot be written ({existing} is not writable for this user)"
    return None
