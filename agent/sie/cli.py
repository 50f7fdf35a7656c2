"""``kassabro sie export`` and ``kassabro sie show``: the command-line face of the SIE destination.

``agent.cli`` parses the arguments and calls ``export`` or ``show`` here;
each prints its report and returns the exit status (0 success, 1 failure,
2 usage or config error, as contract §4 says).
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

from agent.destinations.sie import SieExportError, export_day
from agent.sie.config import SieDestinationConfig
from agent.sie.show import show as describe

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def show(path: Path | str) -> int:
    """Print the file's vouchers, balance verdict and checksum verdict."""
    result = describe(path)
    print(result.text, end="", file=sys.stdout if result.ok else sys.stderr)
    return result.exit_code


def _pick(config: Any, name: str | None) -> SieDestinationConfig | str:
    """The SIE destination to export, or the reason none can be chosen."""
    candidates = [d for d in config.destinations if isinstance(d, SieDestinationConfig)]
    if name is not None:
        chosen = [d for d in candidates if d.name == name]
        if not chosen:
            names = ", ".join(d.name for d in candidates) or "none"
            return f"--destination: no sie destination named {name!r} (sie destinations: {names})"
        return chosen[0]
    if not candidates:
        return 'the config has no destination of kind "sie"'
    if len(candidates) > 1:
        return f"several sie destinations ({', '.join(d.name for d in candidates)}); choose one with --destination"
    return candidates[0]


def export(config: Any, date_text: str, *, till: str | None = None, destination: str | None = None) -> int:
    """Export the business day ``date_text`` (YYYY-MM-DD) now, through the outbox's own state.

    Safe while the agent runs: both take batches from the same outbox and
    write under the same directory lock, so no sale is exported twice.
    """
    try:
        day = date.fromisoformat(date_text)
    except ValueError:
        print(f"kassabro: --date: {date_text!r} is not a date YYYY-MM-DD", file=sys.stderr)
        return EXIT_USAGE
    chosen = _pick(config, destination)
    if isinstance(chosen, str):
        print(f"kassabro: {chosen}", file=sys.stderr)
        return EXIT_USAGE
    from agent.outbox.store import OutboxStore

    path = config.outbox_path
    if not path.exists():
        print(f"kassabro: no outbox at {path} yet (the agent has not run with this data_dir)", file=sys.stderr)
        return EXIT_FAILURE
    store = OutboxStore.open(path, store_id=config.store_id, max_bytes=config.outbox.max_bytes, check=False)
    try:
        store.register_destinations([(d.name, d.kind, list(d.types)) for d in config.destinations])
        report = export_day(store, chosen, day, till, store_id=config.store_id, gift_card_skus=config.skus.gift_card)
    except SieExportError as exc:
        print(f"kassabro: sie export failed, nothing was acknowledged: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        store.close()
    print(f"{chosen.name}: {report.summary()}")
    if not report.files and not report.rejected:
        print(
            f"nothing to export for {day.isoformat()}"
            + (f" on {till}" if till else "")
            + " (already exported, or no sales that day)"
        )
    return EXIT_OK
