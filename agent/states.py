"""The states a destination is shown in: one name for each, shared by every view of it.

The delivery loop decides them (``DeliveryLoop.state``, ``state_at_rest``);
``/api/status``, the status page, ``kassabro status``, the systemd ``STATUS=``
line and the MQTT status payload show them. A ``StrEnum`` is the string it
names, so JSON, templates and f-strings write ``"online"`` exactly as before.
"""

from __future__ import annotations

from enum import StrEnum


class DestinationState(StrEnum):
    """How a destination is doing (contract §4, ``destinations[].state``)."""

    ONLINE = "online"
    """Delivering, nothing wrong recently."""
    OFFLINE = "offline"
    """The last attempt failed; retrying with backoff."""
    DEGRADED = "degraded"
    """Delivering, but records were refused since the start or attempts failed in the last minutes."""
    PAUSED = "paused"
    """Stopped by the shop (``kassabro pause``, the page's button); records wait."""


TROUBLED = frozenset({DestinationState.OFFLINE, DestinationState.DEGRADED, DestinationState.PAUSED})
"""The states worth naming in a one-line summary."""
