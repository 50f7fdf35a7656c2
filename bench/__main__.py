"""``python -m bench [NAME ...]``: run every ``bench/bench_*.py`` (or the named ones) in turn.

Each module has a ``main()`` that prints its markdown table; this runner only
finds them, so a new benchmark is a new file and nothing else.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def discover() -> list[str]:
    """The benchmark modules' names (``bench_ingest``, ...), in name order."""
    return sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    available = discover()
    wanted = [name if name.startswith("bench_") else f"bench_{name}" for name in argv] or available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    for name in wanted:
        started = time.perf_counter()
        print(f"## {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
        print(f"\n({name} took {time.perf_counter() - started:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
