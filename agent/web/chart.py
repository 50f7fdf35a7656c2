"""The 24-hour chart of backlog and throughput, drawn on the server as inline SVG.

Drawn by the server so the page needs no chart library and nothing from the
internet, and so it stays within the CSP (no inline script, no ``style``
attributes: shapes carry classes that ``static/status.css`` colours).

Two panels share one time axis: records waiting (an area; the highest value in
each 15-minute slot) above, records sent per 15 minutes (bars) below. Each has
its own scale, labelled with its top value, because a backlog of 3 and a
throughput of 900 an hour do not fit one axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

from agent.web.i18n import Translator

SPAN_S = 24 * 3600
SLOT_S = 15 * 60
SLOTS = SPAN_S // SLOT_S

WIDTH = 480
LEFT = 4
RIGHT = 4
PANEL_H = 60
TOP = 20
GAP = 34
AXIS_H = 22
HEIGHT = TOP + PANEL_H + GAP + PANEL_H + AXIS_H


@dataclass
class ChartData:
    """The history cut into 15-minute slots, oldest first.

    ``pending`` holds None for slots before the first known point.
    """

    start: float
    pending: list[float | None]
    delivered: list[float]

    @property
    def has_data(self) -> bool:
        return any(p is not None for p in self.pending) or any(self.delivered)

    @property
    def delivered_total(self) -> int:
        return int(sum(self.delivered))

    @property
    def peak_pending(self) -> int:
        return int(max((p for p in self.pending if p is not None), default=0))


def slot_history(points: Iterable[Mapping[str, float]], now: float) -> ChartData:
    """Fold per-minute points into ``SLOTS`` slots ending at ``now``.

    A slot's backlog is the highest value seen in it, carried forward through
    slots without points (the backlog did not vanish because nobody looked).
    """
    end = (now // SLOT_S + 1) * SLOT_S
    start = end - SPAN_S
    pending: list[float | None] = [None] * SLOTS
    delivered = [0.0] * SLOTS
    for point in points:
        t = float(point.get("t", 0))
        if not start <= t < end:
            continue
        slot = int((t - start) // SLOT_S)
        value = float(point.get("pending") or 0)
        current = pending[slot]
        pending[slot] = value if current is None else max(current, value)
        delivered[slot] += float(point.get("delivered") or 0)
    last: float | None = None
    last_slot = int((now - start) // SLOT_S)
    for slot in range(SLOTS):
        if pending[slot] is None and last is not None and slot <= last_slot:
            pending[slot] = last
        last = pending[slot] if pending[slot] is not None else last
    return ChartData(start=start, pending=pending, delivered=delivered)


def render_chart(data: ChartData, t: Translator) -> Markup | None:
    """The chart of ``slot_history``'s result as an ``<svg>`` element, or None when there is no history yet."""
    if not data.has_data:
        return None
    slot_w = (WIDTH - LEFT - RIGHT) / SLOTS
    parts: list[str] = [
        (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(t("chart_label"))}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f"<title>{escape(t('chart_label'))}</title>",
    ]

    # Panel 1: backlog as an area.
    top1 = TOP
    peak = max(1.0, float(data.peak_pending))
    parts.append(_panel_frame(top1, t("chart_backlog"), t.number(data.peak_pending)))
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    for slot, value in enumerate(data.pending):
        if value is None:
            if run:
                runs.append(run)
                run = []
            continue
        y = top1 + PANEL_H - (value / peak) * PANEL_H
        x0 = LEFT + slot * slot_w
        run.extend([(x0, y), (x0 + slot_w, y)])
    if run:
        runs.append(run)
    for run in runs:
        base = top1 + PANEL_H
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
        area = f"{run[0][0]:.1f},{base:.1f} {coords} {run[-1][0]:.1f},{base:.1f}"
        parts.append(f'<polygon class="chart-backlog-area" points="{area}"/>')
        parts.append(f'<polyline class="chart-backlog-line" points="{coords}"/>')

    # Panel 2: delivered per slot as bars.
    top2 = TOP + PANEL_H + GAP
    most = max(data.delivered)
    parts.append(_panel_frame(top2, t("chart_delivered"), t.number(most)))
    scale = max(1.0, most)
    for slot, value in enumerate(data.delivered):
        if value <= 0:
            continue
        h = max(1.0, (value / scale) * PANEL_H)
        x = LEFT + slot * slot_w + 0.5
        parts.append(
            f'<rect class="chart-delivered" x="{x:.1f}" y="{top2 + PANEL_H - h:.1f}" '
            f'width="{max(0.5, slot_w - 1):.1f}" height="{h:.1f}"/>'
        )

    # The shared time axis: a tick every 6 hours of local time, and "now".
    axis_y = top2 + PANEL_H
    for label, x in _hour_ticks(data.start, t):
        parts.append(f'<line class="chart-tick" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{axis_y}"/>')
        parts.append(f'<text class="chart-axis" x="{x:.1f}" y="{axis_y + 17}" text-anchor="middle">{label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _panel_frame(top: float, title: str, top_value: str) -> str:
    """A panel's baseline, its name and the value its top stands for."""
    bottom = top + PANEL_H
    return (
        f'<line class="chart-base" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}"/>'
        f'<line class="chart-grid" x1="{LEFT}" y1="{top}" x2="{WIDTH - RIGHT}" y2="{top}"/>'
        f'<text class="chart-title" x="{LEFT}" y="{top - 5}">{escape(title)}</text>'
        f'<text class="chart-value" x="{WIDTH - RIGHT}" y="{top - 5}" text-anchor="end">'
        f"{escape(top_value)}</text>"
    )


def _hour_ticks(start: float, t: Translator) -> list[tuple[str, float]]:
    """Local-time labels at 00, 06, 12 and 18 within the chart's span."""
    ticks: list[tuple[str, float]] = []
    begin = datetime.fromtimestamp(start, tz=UTC).astimezone(t.tz)
    moment = begin.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    span_px = WIDTH - LEFT - RIGHT
    for _ in range(25):
        offset = moment.timestamp() - start
        if offset >= SPAN_S:
            break
        if moment.hour % 6 == 0 and offset > SLOT_S:
            x = LEFT + offset / SPAN_S * span_px
            ticks.append((moment.strftime("%H:%M"), x))
        moment += timedelta(hours=1)
    return ticks
