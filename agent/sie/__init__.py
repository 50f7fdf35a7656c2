"""SIE type 4I files: sales -> one balanced voucher per till and business day, or per Z-report.

``config`` (the destination's keys), ``accounting`` (sales -> vouchers),
``format``/``writer`` (the CP437 text and ``#KSUMMA``), ``reader`` (the strict
reader), ``state`` (what was booked), ``export`` (the booking run: due days and
Z-reports -> one file per run), ``errors`` (what a run raises) and ``show``
(``kassabro sie show``).
The package knows nothing of delivery: the destination, ``agent.destinations.sie``,
translates its errors and holds ``export_day``, which ``cli`` (``kassabro sie``)
runs.
"""

from agent.sie.config import SieAccounts, SieDestinationConfig

__all__ = ["SieAccounts", "SieDestinationConfig"]
