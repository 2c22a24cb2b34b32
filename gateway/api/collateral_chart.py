"""The page's chart of reserve and supply over time: an inline SVG drawn on the server from the
log's reserve statements, so it shows without a script and needs no library.

Both series are step lines: a statement's figures hold until the next statement, and the newest
one's until now (a short tail at the right). The x axis is
the statements' own times (their index order when they all share one time); the y axis starts
at zero, so the gap between the lines is the real surplus, not a magnified one. Returns the SVG
and the points the page's script reads for its hover read-out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

from gateway.collateral.views import StatementPoint

WIDTH, HEIGHT = 960, 300
LEFT, RIGHT, TOP, BOTTOM = 84, 18, 14, 34
"""Margins of the plot inside the view box (room for the axes' labels)."""
TAIL = 0.04
"""The plot's right part after the newest statement, where its figures run on to now."""


def _time(p: StatementPoint) -> float:
    return datetime.fromisoformat(p.time.replace("Z", "+00:00")).timestamp()


def nice_step(span: float, ticks: int = 5) -> float:
    """A 1, 2 or 5 times 10^k step that cuts ``span`` into at most about ``ticks`` parts."""
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return float(m * power)
    return float(10 * power)  # pragma: no cover (the loop always returns)


def short_kzt(tiyn: int) -> str:
    """An axis label: whole KZT, with K or M for thousands and millions."""
    kzt = tiyn / 100
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(kzt) >= div:
            value = kzt / div
            return f"{value:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{kzt:.2f}".rstrip("0").rstrip(".")


def _time_label(at: float, span: float) -> str:
    t = datetime.fromtimestamp(at, UTC)
    if span < 600:
        return t.strftime("%H:%M:%S")
    if span < 86400:
        return t.strftime("%H:%M")
    return t.strftime("%d %b %H:%M")


def _step_path(xy: Sequence[tuple[float, float]]) -> str:
    x0, y0 = xy[0]
    parts = [f"M{x0:.1f} {y0:.1f}"]
    for x, y in xy[1:]:
        parts.append(f"H{x:.1f}V{y:.1f}")
    return "".join(parts)


def chart(points: Sequence[StatementPoint]) -> tuple[str, list[list[object]]]:
    """The SVG of ``points`` (oldest first) and, per point, [x, index, block, reserve, supply,
    time, y of reserve, y of supply] in view-box units."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        f'data-points="{len(points)}">',
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="none"/>',
    ]
    if not points:
        out.append(
            f'<text class="empty" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
            'text-anchor="middle">No reserve statement yet</text></svg>'
        )
        return "".join(out), []

    times = [_time(p) for p in points]
    t0, t1 = min(times), max(times)
    by_time = t1 > t0
    top = max(max(p.reserve, p.supply) for p in points)
    step = nice_step(top * 1.05 if top else 100.0)
    y_max = step * math.ceil((top * 1.05 if top else 100.0) / step)

    span_w = plot_w * (1 - TAIL)

    def x_of(i: int) -> float:
        if len(points) == 1:
            return LEFT + span_w
        frac = (times[i] - t0) / (t1 - t0) if by_time else i / (len(points) - 1)
        return LEFT + frac * span_w

    def y_of(v: int) -> float:
        return TOP + plot_h - (v / y_max) * plot_h

    # Grid and y labels.
    k = 0
    while k * step <= y_max + 1e-9:
        y = y_of(int(k * step))
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text x="{LEFT - 10}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(short_kzt(int(k * step)))}</text>"
        )
        k += 1
    out.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + plot_w}" '
        f'y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )

    # X labels: times spread over the span, or the first and last index.
    labels: list[tuple[float, str]] = []
    if by_time:
        span = t1 - t0
        for j in range(6):
            label = _time_label(t0 + span * j / 5, span)
            if not labels or labels[-1][1] != label:  # a short span repeats its labels
                labels.append((LEFT + span_w * j / 5, label))
    else:
        labels.append((LEFT, f"statement #{points[0].index}"))
        if len(points) > 1:
            labels.append((LEFT + span_w, f"statement #{points[-1].index}"))
    for j, (x, label) in enumerate(labels):
        anchor = "start" if j == 0 else "middle"
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 22}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )

    xs = [x_of(i) for i in range(len(points))]
    reserve = [(x, y_of(p.reserve)) for x, p in zip(xs, points, strict=True)]
    supply = [(x, y_of(p.supply)) for x, p in zip(xs, points, strict=True)]
    # The newest figures hold until now: both lines run on to the plot's right edge.
    reserve.append((float(LEFT + plot_w), reserve[-1][1]))
    supply.append((float(LEFT + plot_w), supply[-1][1]))
    if len(points) == 1:  # one statement: a level line across the plot
        reserve.insert(0, (float(LEFT), reserve[0][1]))
        supply.insert(0, (float(LEFT), supply[0][1]))
    base = TOP + plot_h
    area = _step_path(reserve) + f"V{base:.1f}H{reserve[0][0]:.1f}Z"
    out.append(f'<path class="reserve-area" d="{area}"/>')
    out.append(f'<path class="reserve-line" d="{_step_path(reserve)}"/>')
    out.append(f'<path class="supply-line" d="{_step_path(supply)}"/>')
    out.append("</svg>")
    data: list[list[object]] = [
        [round(x, 1), p.index, p.block, p.reserve, p.supply, p.time, round(y_of(p.reserve), 1),
         round(y_of(p.supply), 1)]
        for x, p in zip(xs, points, strict=True)
    ]  # fmt: skip
    return "".join(out), data


__all__ = ["chart", "nice_step", "short_kzt"]
