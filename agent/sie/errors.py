"""What a booking run can raise, in SIE's own terms.

The SIE package knows nothing of the delivery loop; the ``sie`` destination
(``agent.destinations.sie``) translates these once, into its delivery errors:

- ``SieWriteFailed``: the directory, the disk or the export state failed.
  Nothing was acknowledged; the same batch can be written again later
  (a retryable failure).
- ``SieBatchRefused``: the batch cannot become a balanced file. Writing it
  again cannot help; splitting it finds the record that is to blame (a
  permanent refusal).

Records that can never be booked (not SEK, a discount that cannot be placed)
are no error: ``SieBooks.run`` reports them, and the destination turns them
into dead letters with the reason.
"""

from __future__ import annotations


class SieError(Exception):
    """Base of the errors ``SieBooks.run`` raises; the message says why, in words."""


class SieWriteFailed(SieError):
    """The file or the export state could not be written or read; try the same batch again later."""


class SieBatchRefused(SieError):
    """The batch's vouchers do not balance; it is never written."""
