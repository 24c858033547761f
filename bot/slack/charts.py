"""Sparklines for thread messages and the canary-vs-baseline chart posted after a rollout.

The chart is drawn with matplotlib's object API (``Figure`` + the Agg canvas), never
pyplot: no global figure state, nothing that needs a display, safe to call from a worker
thread (rendering takes a few hundred ms, so callers run it in one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from io import BytesIO
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BARS = "▁▂▃▄▅▆▇█"
MAX_SPARK_CHARS = 30
WIDTH_PX, HEIGHT_PX_PER_METRIC, DPI = 800, 250, 100
_CANARY, _BASELINE = "#e8590c", "#1c7ed6"
_TIMESTAMPS_FROM = 1e9  # x values this large are Unix times, not seconds since the start
# Elapsed-time ticks fall on round times (30s, 5m, 1h), at most about eight of them.
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200)

Points = Sequence[tuple[float, float]]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _downsample(values: list[float | None], width: int) -> list[float | None]:
    """Average each of ``width`` buckets; a bucket with no numbers stays a gap."""
    if len(values) <= width:
        return values
    out: list[float | None] = []
    for i in range(width):
        bucket = [v for v in values[i * len(values) // width:(i + 1) * len(values) // width]
                  if v is not None]
        out.append(sum(bucket) / len(bucket) if bucket else None)
    return out


def sparkline(values: Sequence[float | None]) -> str:
    """A tiny inline trend, e.g. ``▁▂▅█▇``; gaps (None, NaN) are spaces.

    Scaled to its own min and max, so it shows the shape, not the size: the message next
    to it carries the numbers. A flat series is a row of middle bars, not of floor bars,
    so that "steady" doesn't read as "zero".
    """
    points = _downsample([_finite(v) for v in values], MAX_SPARK_CHARS)
    numbers = [v for v in points if v is not None]
    if not numbers:
        return " " * len(points)
    low, high = min(numbers), max(numbers)
    if high == low:
        return "".join(" " if v is None else BARS[3] for v in points)
    top = len(BARS) - 1
    return "".join(" " if v is None else BARS[min(top, round((v - low) / (high - low) * top))]
                   for v in points)


def _plain(text: str) -> str:
    """Matplotlib reads ``$...$`` as math; a metric called ``cost $`` must stay text."""
    return text.replace("$", r"\$")


def _elapsed(seconds: float, _pos: object = None) -> str:
    """Axis tick for seconds since the rollout started: 45s, 2m, 1h05."""
    seconds = round(seconds)
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{sign}{minutes}m" + (f"{rest:02d}" if rest else "")
    hours, rest = divmod(seconds // 60, 60)
    return f"{sign}{hours}h{rest:02d}"


def canary_chart_png(
    series: Mapping[str, tuple[Points, Points]], title: str,
    step_marks: Sequence[tuple[float, str]] = (),
) -> bytes:
    """PNG of canary (orange) vs baseline (blue) per metric, one row each, 800 px wide.

    ``series`` maps a metric to its (canary, baseline) points ``(x, value)``, x being
    seconds since the rollout started or Unix timestamps; ``step_marks`` are dashed
    vertical lines at the times the weight changed, labelled e.g. ``25%``. With no
    series at all the chart is a single row saying "no data", so callers always have an
    image to post.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, len(series))
    fig = Figure(figsize=(WIDTH_PX / DPI, rows * HEIGHT_PX_PER_METRIC / DPI), dpi=DPI,
                 layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(_plain(title), fontsize=11)
    xs = [x for canary, baseline in series.values() for x, _ in (*canary, *baseline)]
    xs += [x for x, _ in step_marks]
    as_time = bool(xs) and min(xs) >= _TIMESTAMPS_FROM
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    if not series:
        _no_data(axes[0], "no data")
    for ax, (name, (canary, baseline)) in zip(axes, series.items(), strict=False):
        if _metric(ax, name, canary, baseline, step_marks, as_time=as_time):
            _time_axis(ax, (min(xs), max(xs)), as_time=as_time)
    if series and not as_time:
        axes[-1].set_xlabel("time since the rollout started", fontsize=8)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _time_axis(ax: Axes, span: tuple[float, float], *, as_time: bool) -> None:
    """The same time range on every row (not sharex: a "no data" row has no ticks)."""
    pad = (span[1] - span[0]) * 0.02 or 30.0  # a single instant gets a minute around it
    low, high = span[0] - pad, span[1] + pad
    if as_time:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num

        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.set_xlim(date2num(datetime.fromtimestamp(low, UTC)),
                    date2num(datetime.fromtimestamp(high, UTC)))
    else:
        from matplotlib.ticker import FuncFormatter, MultipleLocator

        wide = (high - low) / 8
        step = next((s for s in _TICK_STEPS if s >= wide), math.ceil(wide / 3600) * 3600)
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.xaxis.set_major_formatter(FuncFormatter(_elapsed))
        ax.set_xlim(low, high)


def _metric(ax: Axes, name: str, canary: Points, baseline: Points,
            step_marks: Sequence[tuple[float, str]], *, as_time: bool) -> bool:
    """Draw one metric's row; False when there was nothing to draw."""
    ax.set_title(_plain(name), fontsize=9, loc="left")
    if not canary and not baseline:
        _no_data(ax, f"no data for {name}")
        return False

    from matplotlib.dates import date2num

    def x(value: float) -> float:
        return float(date2num(datetime.fromtimestamp(value, UTC))) if as_time else value

    for points, label, color in ((baseline, "baseline", _BASELINE), (canary, "canary", _CANARY)):
        if points:
            ordered = sorted(points)
            ax.plot([x(t) for t, _ in ordered], [v for _, v in ordered], label=label,
                    color=color, linewidth=1.6, marker="." if len(ordered) < 20 else None)
    for at, label in step_marks:
        ax.axvline(x(at), color="#868e96", linestyle="--", linewidth=0.9)  # type: ignore[arg-type]
        ax.text(x(at), 0.98, f" {_plain(label)}", transform=ax.get_xaxis_transform(),  # type: ignore[arg-type]
                fontsize=7, color="#495057", va="top", ha="left")
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best", frameon=False)
    return True


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, _plain(text), ha="center", va="center", fontsize=11, color="#868e96",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
