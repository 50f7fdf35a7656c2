"""Build the offline install bundles: ``dist/kassabro-<version>-py<XY>-<platform>.tar.gz``.

Why a bundle: a shop's Pi must install Kassabro with no internet, no compiler
and no "newest version that day". A bundle is for one Python and one platform,
because its compiled wheels are: ``py311`` for Raspberry Pi OS 12 bookworm
(CPython 3.11), ``py313`` for Raspberry Pi OS 13 trixie (CPython 3.13, every
image since October 2025), each for linux_aarch64, linux_armv7l and this
machine's platform. Each bundle holds the kassabro wheel, every locked
dependency as a wheel for that platform and Python, ``install.sh``, the unit,
the journald drop-in, the example configs, the technician's README, a
hash-pinned ``requirements.txt`` (what ``install.sh`` installs with
``--require-hashes``), ``BUNDLE`` (what the bundle is for: version, platform,
Python, Raspberry Pi OS release, glibc range) and ``SHA256SUMS`` of all of it.

Wheels come from ``pip download --only-binary=:all: --require-hashes`` against
``requirements.lock``: a file whose hash is not in the lock is refused. Where a
platform has no wheel:

- an optional dependency (``OPTIONAL``) is left out and named, with what the
  agent does instead;
- a required one fails that platform's bundle with a message naming it: no
  bundle is better than one that fails on the Pi.

    python deploy/dist.py [--out dist] [--platform linux_aarch64 ...] [--python 3.13 ...] [--find-links DIR]

``--find-links DIR`` takes the wheels from DIR only (no index): a rebuild from
an earlier bundle's ``wheels/`` with no network.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    """One Raspberry Pi OS release a bundle is built for: its Python, and the glibc its wheels may need."""

    python: str
    """``X.Y``: a cpXY wheel runs on exactly this minor version."""
    system: str
    """How the technician knows the release (``/etc/os-release``), written to BUNDLE."""
    glibc_minor: range
    """manylinux_2_17 .. the release's own glibc: pip does not widen the range itself."""

    @property
    def tag(self) -> str:
        """``py311``: the part of the bundle's name that says which Python it is for."""
        return "py" + self.python.replace(".", "")

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")


TARGETS: dict[str, Target] = {
    "3.11": Target("3.11", "Raspberry Pi OS 12 bookworm", range(17, 37)),  # glibc 2.36
    "3.13": Target("3.13", "Raspberry Pi OS 13 trixie", range(17, 42)),  # glibc 2.41
}
"""Every Python a release has bundles for, by ``python3 --version``'s X.Y (install.sh names the same two)."""

OPTIONAL: dict[str, str] = {
    "httptools": "uvicorn parses HTTP with its pure-Python h11 parser instead (about 30 % more CPU per ingest request)",
}
"""Locked dependencies a bundle may lack, and what the agent does without them."""

NOT_IN_ANY_BUNDLE: dict[str, str] = {
    "systemd-python": "the journal extra: no wheel exists for any platform; the agent logs to stderr with "
    "syslog priority prefixes (<3>, <4>, <6>...), which journald reads, so levels survive but the "
    "DESTINATION=/RECORD_KEY=/BATCH_ID= journal fields do not",
}
"""Extras that no bundle carries, with the reason (docs/deployment.md)."""


@dataclass(frozen=True)
class Locked:
    """One pinned requirement of the lock, with the hashes of all its files."""

    name: str
    version: str
    hashes: tuple[str, ...]

    def requirement_line(self) -> str:
        hashes = " ".join(f"--hash={h}" for h in self.hashes)
        return f"{self.name}=={self.version} {hashes}"


class DistError(Exception):
    """A bundle cannot be built; the message says why in one line."""


def read_lock(path: Path) -> list[Locked]:
    """The pinned requirements of a pip-compile ``--generate-hashes`` file."""
    text = path.read_text(encoding="utf-8")
    # A line may carry an environment marker (``; platform_machine != "armv7l"``).
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ;[^\\\n]*)?((?:\s*\\\n\s+--hash=\S+)+)", text, re.MULTILINE)
    locked = [
        Locked(name.lower(), version, tuple(re.findall(r"--hash=(\S+)", hashes))) for name, version, hashes in found
    ]
    if not locked:
        raise DistError(f"{path}: no pinned requirement with hashes (run make lock)")
    return locked


def source_version(repo: Path) -> str:
    """``agent.__version__`` read from the source, not imported: the tree may not be the installed one."""
    match = re.search(r'^__version__ = "([^"]+)"', (repo / "agent/__init__.py").read_text(encoding="utf-8"), re.M)
    if not match:
        raise DistError(f"{repo}/agent/__init__.py: no __version__")
    return match.group(1)


def this_platform() -> str:
    machine = platform.machine().lower()
    return f"linux_{ {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(machine, machine) }"


def platform_args(name: str, target: Target) -> list[str]:
    arch = name.removeprefix("linux_")
    args: list[str] = []
    for minor in target.glibc_minor:
        args += ["--platform", f"manylinux_2_{minor}_{arch}"]
    return [*args, "--platform", f"manylinux2014_{arch}"]


def run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    # SOURCE_DATE_EPOCH: the wheel's zip entries get one fixed time (1980-01-01, zip's first),
    # so the same tree gives the same kassabro wheel and the same bundle, byte for byte.
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )


def build_wheel(repo: Path, out: Path) -> Path:
    """The kassabro wheel, built from a clean copy so the tree gets no build/ or egg-info."""
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "src"
        stage.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, stage / name)
        shutil.copytree(repo / "agent", stage / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        result = run_pip(["wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(stage)])
        if result.returncode != 0:
            raise DistError(f"building the kassabro wheel failed:\n{result.stderr[-2000:]}")
    wheels = sorted(out.glob("kassabro-*.whl"))
    if len(wheels) != 1:
        raise DistError(f"expected one kassabro wheel in {out}, found {len(wheels)}")
    return wheels[0]


def download(
    reqs: list[Locked], platform_name: str, target: Target, dest: Path, find_links: Path | None
) -> subprocess.CompletedProcess[str]:
    """``pip download`` of exactly these pinned files for the platform and Python, hashes checked."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as req_file:
        req_file.write("".join(r.requirement_line() + "\n" for r in reqs))
    source = ["--no-index", "--find-links", str(find_links)] if find_links else []
    try:
        return run_pip(
            [
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                *platform_args(platform_name, target),
                "--python-version",
                target.python,
                "--implementation",
                "cp",
                "--abi",
                target.abi,
                "--require-hashes",
                *source,
                "--dest",
                str(dest),
                "-r",
                req_file.name,
            ]
        )
    finally:
        Path(req_file.name).unlink()


def no_wheel(result: subprocess.CompletedProcess[str]) -> bool:
    return "No matching distribution" in result.stderr or "Could not find a version" in result.stderr


def missing_requirement(result: subprocess.CompletedProcess[str], reqs: list[Locked]) -> Locked | None:
    """The requirement pip found no file for ("No matching distribution found for name==version"), if that failed."""
    found = re.search(r"No matching distribution found for ([A-Za-z0-9_.-]+)==", result.stderr)
    if not found:
        return None
    name = re.sub(r"[-_.]+", "-", found.group(1)).lower()
    return next((r for r in reqs if re.sub(r"[-_.]+", "-", r.name) == name), None)


def fetch_wheels(
    locked: list[Locked], platform_name: str, target: Target, dest: Path, find_links: Path | None
) -> list[Locked]:
    """Download every locked wheel for the platform and Python; returns the optional ones it has no wheel for.

    Raises:
        DistError: a required dependency has no wheel for this platform (named), or pip failed otherwise.
    """
    required = [r for r in locked if r.name not in OPTIONAL]
    missing: list[Locked] = []
    while True:  # pip stops at the first file it cannot find: take it out and ask again, to name them all
        result = download(required, platform_name, target, dest, find_links)
        if result.returncode == 0:
            break
        lacking = missing_requirement(result, required)
        if lacking is None:
            raise DistError(f"{platform_name}: pip download failed:\n{result.stderr[-2000:]}")
        missing.append(lacking)
        required.remove(lacking)
    if missing:
        names = ", ".join(f"{r.name}=={r.version}" for r in missing)
        raise DistError(
            f"{platform_name}: no wheel for CPython {target.python} of the required dependencies {names}; "
            f"no {target.tag} bundle is built for {platform_name}"
        )
    absent = []
    for req in (r for r in locked if r.name in OPTIONAL):
        one = download([req], platform_name, target, dest, find_links)
        if one.returncode != 0:
            if not no_wheel(one):
                raise DistError(f"{platform_name}: pip download of {req.name} failed:\n{one.stderr[-2000:]}")
            absent.append(req)
    return absent


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def lay_out(
    bundle: Path,
    repo: Path,
    version: str,
    platform_name: str,
    target: Target,
    kassabro_wheel: Path,
    present: list[Locked],
    absent: list[Locked],
) -> None:
    """Everything but the wheels (already in ``bundle/wheels``): scripts, docs, requirements, BUNDLE, SHA256SUMS."""
    raspberrypi = repo / "deploy/raspberrypi"
    shutil.copy2(raspberrypi / "install.sh", bundle / "install.sh")
    (bundle / "install.sh").chmod(0o755)
    shutil.copy2(raspberrypi / "README.md", bundle / "README.md")
    shutil.copy2(raspberrypi / "journald-kassabro.conf", bundle / "journald-kassabro.conf")
    shutil.copy2(raspberrypi / "samba-kassabro.conf", bundle / "samba-kassabro.conf")
    shutil.copy2(repo / "systemd/kassabro.service", bundle / "kassabro.service")
    (bundle / "examples").mkdir()
    for example in sorted(raspberrypi.glob("*.toml")):
        shutil.copy2(example, bundle / "examples" / example.name)
    shutil.copy2(kassabro_wheel, bundle / "wheels" / kassabro_wheel.name)

    lines = [
        "# What install.sh installs, offline: pip --no-index --no-deps --require-hashes -r requirements.txt",
        f"# The locked dependencies ({len(present)} of {len(present) + len(absent)} have a wheel for {platform_name}"
        f" and CPython {target.python}),",
        "# then Kassabro itself.",
        *(r.requirement_line() for r in present),
        f"kassabro=={version} --hash=sha256:{sha256(kassabro_wheel)}",
    ]
    (bundle / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = [
        f"version={version}",
        f"platform={platform_name}",
        f"python={target.python}",
        f"system={target.system}",
        f"glibc=2.{target.glibc_minor.start}..2.{target.glibc_minor.stop - 1}",
        f"missing={','.join(r.name for r in absent)}",
    ]
    info += [f"# without {r.name}: {OPTIONAL[r.name]}" for r in absent]
    info += [f"# not in any bundle: {name}: {why}" for name, why in NOT_IN_ANY_BUNDLE.items()]
    (bundle / "BUNDLE").write_text("\n".join(info) + "\n", encoding="utf-8")

    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    sums = "".join(f"{sha256(p)}  {p.relative_to(bundle)}\n" for p in files)
    (bundle / "SHA256SUMS").write_text(sums, encoding="utf-8")


def write_tarball(bundle: Path, target: Path) -> None:
    """A reproducible .tar.gz: sorted names, root-owned, a fixed time, no gzip timestamp."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [bundle, *sorted(bundle.rglob("*"))]
        for path in paths:
            tar.add(path, arcname=str(Path(bundle.name) / path.relative_to(bundle)), recursive=False, filter=normalise)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    tmp.replace(target)


def bundle_name(version: str, target: Target, platform_name: str) -> str:
    """``kassabro-0.3.0-py313-linux_aarch64``: the Python before the platform, as install.sh names it."""
    return f"kassabro-{version}-{target.tag}-{platform_name}"


def build_bundle(
    repo: Path,
    out: Path,
    platform_name: str,
    target: Target,
    kassabro_wheel: Path,
    locked: list[Locked],
    find_links: Path | None,
) -> Path:
    version = source_version(repo)
    name = bundle_name(version, target, platform_name)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / name
        (bundle / "wheels").mkdir(parents=True)
        absent = fetch_wheels(locked, platform_name, target, bundle / "wheels", find_links)
        present = [r for r in locked if r not in absent]
        lay_out(bundle, repo, version, platform_name, target, kassabro_wheel, present, absent)
        tarball = out / f"{name}.tar.gz"
        write_tarball(bundle, tarball)
        wheels = len(list((bundle / "wheels").glob("*.whl")))
    missing = ", ".join(f"{r.name} ({OPTIONAL[r.name]})" for r in absent) or "none"
    print(f"{tarball}: {wheels} wheels, {tarball.stat().st_size / 1e6:.1f} MB; optional wheels missing: {missing}")
    return tarball


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the bundles go (default dist/)")
    parser.add_argument("--repo", type=Path, default=REPO, help="the Kassabro tree to bundle (default: this one)")
    parser.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        help="linux_aarch64, linux_armv7l or linux_x86_64 (repeatable; default: the two Pi platforms and this machine's)",
    )
    parser.add_argument(
        "--python",
        action="append",
        dest="pythons",
        choices=sorted(TARGETS),
        help="3.11 (bookworm) or 3.13 (trixie) (repeatable; default: both)",
    )
    parser.add_argument("--find-links", type=Path, help="take the dependency wheels from this directory only (offline)")
    args = parser.parse_args(argv)
    platforms = args.platforms or list(dict.fromkeys(["linux_aarch64", "linux_armv7l", this_platform()]))
    targets = [TARGETS[p] for p in dict.fromkeys(args.pythons or TARGETS)]
    repo = args.repo.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        locked = read_lock(repo / "requirements.lock")
        with tempfile.TemporaryDirectory() as tmp:
            kassabro_wheel = build_wheel(repo, Path(tmp))
            for target in targets:
                for platform_name in platforms:
                    try:
                        build_bundle(repo, args.out, platform_name, target, kassabro_wheel, locked, args.find_links)
                    except DistError as exc:
                        print(f"dist: {exc}", file=sys.stderr)
                        failed += 1
    except DistError as exc:
        print(f"dist: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
