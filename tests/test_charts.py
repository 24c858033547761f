"""Sparklines and the rollout chart: the text shapes, and PNGs of the promised size."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest

from bot.slack.charts import canary_chart_png, sparkline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must start with."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ""),
        ([1, 2, 3, 4, 5, 6, 7, 8], "▁▂▃▄▅▆▇█"),
        ([0.0, 1.0], "▁█"),
        ([5, 5, 5], "▄▄▄"),  # steady is a middle bar, not "zero"
        ([7], "▄"),
        ([1, None, NAN, 3], "▁  █"),
        ([None, None], "  "),
        ([None, 4, None], " ▄ "),
        ([-1.0, 0.0, 1.0], "▁▅█"),
        ([0, float("inf"), 1], "▁ █"),
    ],
)
def test_sparkline(values: list[float | None], expected: str) -> None:
    assert sparkline(values) == expected


def test_long_series_are_averaged_down_to_thirty_chars() -> None:
    line = sparkline(list(range(300)))
    assert len(line) == 30
    assert line[0] == "▁" and line[-1] == "█"
    assert list(line) == sorted(line)  # a rising series keeps rising
    spike = [0.0] * 90
    spike[45:48] = [9.0, 9.0, 9.0]  # one bucket of three, averaged, is still the top
    assert sparkline(spike) == "▁" * 15 + "█" + "▁" * 14
    gaps = [None] * 60 + [1.0] * 30 + [2.0] * 30  # a bucket of only gaps stays a gap
    assert sparkline(gaps) == " " * 15 + "▁" * 7 + "▅" + "█" * 7  # 1, 1, 2, 2 -> 1.5


def test_chart_is_a_png_with_a_row_per_metric() -> None:
    series = {
        "error rate": ([(t * 10.0, 0.01 + t / 1000) for t in range(40)],
                       [(t * 10.0, 0.01) for t in range(40)]),
        "p99 latency $ (ms)": ([(0.0, 120.0), (200.0, 180.0)], [(0.0, 110.0), (200.0, 115.0)]),
    }
    png = canary_chart_png(series, "api 1.4.0 on production: canary vs baseline",
                           step_marks=[(0.0, "5%"), (120.0, "25%"), (300.0, "50%")])
    assert png_size(png) == (800, 500)
    from matplotlib.image import imread

    pixels = imread(BytesIO(png), format="png")
    assert pixels.shape[:2] == (500, 800)
    assert len(png) < 200_000


def test_chart_with_timestamps_and_a_metric_without_data() -> None:
    start = 1_700_000_000.0
    series = {
        "error rate": ([(start + t, 0.02) for t in range(0, 600, 30)], []),
        "latency": ([], []),
    }
    png = canary_chart_png(series, "timestamps", step_marks=[(start + 300, "100%")])
    assert png_size(png) == (800, 500)


def test_empty_chart_says_no_data() -> None:
    png = canary_chart_png({}, "api 1.4.0: no analysis data")
    assert png_size(png) == (800, 250)
    from matplotlib.image import imread

    pixels = imread(BytesIO(png), format="png")
    assert pixels[:, :, :3].min() < 0.9  # something (title, frame, "no data") was drawn


def test_single_point_does_not_break_the_axis() -> None:
    png = canary_chart_png({"errors": ([(5.0, 1.0)], [(5.0, 2.0)])}, "one point",
                           step_marks=[(5.0, "5%")])
    assert png_size(png) == (800, 250)
