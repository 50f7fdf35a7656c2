"""SIE type 4I day files: sales -> one balanced voucher per till and business day.

``config`` (the destination's keys), ``accounting`` (sales -> vouchers),
``format``/``writer`` (the CP437 text and ``#KSUMMA``), ``reader`` (the strict
reader), ``state`` (what was exported), ``export`` (due days, batch -> file,
``export_day`` for the CLI) and ``show`` (``kassabro sie show``). The
destination itself is ``agent.destinations.sie``.
"""

from agent.sie.config import SieAccounts, SieDestinationConfig

__all__ = ["SieAccounts", "SieDestinationConfig"]
