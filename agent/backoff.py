"""The retry policy: capped exponential backoff with full jitter.

Both sides of the outbox wait between attempts: a destination's delivery loop
after a failed send, and an MQTT connection (the destination's and the ingest
source's) between reconnects. The policy lives here, in neither, so a source
never reaches into ``agent.destinations`` for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class RetryPolicy:
    """Capped exponential backoff with full jitter, honouring ``Retry-After``.

    ``delay(attempt)`` for attempt 1, 2, 3... is uniform in
    ``[0, min(cap, base * 2**(attempt-1))]`` (AWS's "full jitter"), so many shops
    coming back at once do not hammer a receiver in step. A ``Retry-After`` is
    honoured but capped at ``cap_s`` so a bad header cannot park a destination
    for days. Retries go on forever: records are never dropped for age.

    Args:
        base_s: the ceiling of the first delay.
        cap_s: the ceiling no delay exceeds.
        rng: the randomness (tests seed one).
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, attempt: int) -> float:
        """The largest delay ``attempt`` may draw: ``base * 2**(attempt-1)``, at most ``cap_s``."""
        exponent = min(max(attempt, 1) - 1, 62)
        return min(self.cap_s, self.base_s * (2.0**exponent))

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before ``attempt``; the receiver's ``retry_after_s`` wins, capped."""
        if retry_after_s is not None:
            return min(self.cap_s, max(0.0, retry_after_s))
        return self.rng.uniform(0.0, self.ceiling(attempt))
