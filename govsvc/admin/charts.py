"""Server-rendered SVG charts: the geometry is computed here, templates only draw what they are given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str


@dataclass(frozen=True)
class AxisLabel:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class DivergingBars:
    """Counts above a baseline (e.g. consents given) and below it (withdrawn), one pair per period."""

    width: int
    height: int
    baseline: float
    bars: list[Bar]
    labels: list[AxisLabel]
    up_max: int
    down_max: int


def diverging_bars(
    periods: Sequence[str],
    up: Sequence[int],
    down: Sequence[int],
    *,
    up_label: str,
    down_label: str,
    width: int = 720,
    height: int = 220,
    label_every: int = 7,
) -> DivergingBars:
    """Bars for ``up`` above the baseline and ``down`` below it, scaled on one axis so they compare."""
    margin_top, margin_bottom, margin_left, margin_right = 12, 28, 36, 8
    plot_height = height - margin_top - margin_bottom
    up_max, down_max = max(up, default=0), max(down, default=0)
    total = max(up_max + down_max, 1)
    baseline = margin_top + plot_height * up_max / total if up_max or down_max else margin_top + plot_height / 2
    slot = (width - margin_left - margin_right) / max(len(periods), 1)
    bar_width = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    labels: list[AxisLabel] = []
    for index, period in enumerate(periods):
        x = margin_left + index * slot + (slot - bar_width) / 2
        if up[index]:
            size = plot_height * up[index] / total
            bars.append(
                Bar(
                    round(x, 1),
                    round(baseline - size, 1),
                    round(bar_width, 1),
                    round(size, 1),
                    "up",
                    f"{period}: {up[index]} {up_label}",
                )
            )
        if down[index]:
            size = plot_height * down[index] / total
            bars.append(
                Bar(
                    round(x, 1),
                    round(baseline, 1),
                    round(bar_width, 1),
                    round(size, 1),
                    "down",
                    f"{period}: {down[index]} {down_label}",
                )
            )
        last = len(periods) - 1
        if index == last or (index % label_every == 0 and last - index >= label_every // 2):
            labels.append(AxisLabel(round(x + bar_width / 2, 1), height - 8, period))
    labels.append(AxisLabel(margin_left - 4, margin_top + 10, str(up_max), "end"))
    labels.append(AxisLabel(margin_left - 4, height - margin_bottom, str(down_max), "end"))
    return DivergingBars(width, height, round(baseline, 1), bars, labels, up_max, down_max)


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    lines: list[tuple[str, str]]  # (css class, SVG polyline points)


def sparkline(series: Sequence[tuple[str, Sequence[int]]], *, width: int = 160, height: int = 32) -> Sparkline:
    """Small polylines of several series on one scale (``(css class, values)`` each)."""
    peak = max((max(values, default=0) for _css, values in series), default=0) or 1
    lines = []
    for css_class, values in series:
        step = width / max(len(values) - 1, 1)
        points = " ".join(
            f"{round(index * step, 1)},{round(height - 2 - (height - 4) * value / peak, 1)}"
            for index, value in enumerate(values)
        )
        lines.append((css_class, points))
    return Sparkline(width, height, lines)
