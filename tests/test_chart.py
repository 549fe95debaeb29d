"""The stats chart draws Chinese with the font the package dependencies bring."""

from __future__ import annotations

import io
from datetime import date

from matplotlib import rc_context

from core import chart
from core.stats import DayPoint

POINTS = [DayPoint(date(2026, 11, 20), 0, 0), DayPoint(date(2026, 11, 21), 12_550, 3)]


def test_chinese_text_has_every_glyph() -> None:
    """A glyph missing from the chosen fonts warns, and warnings are errors in the tests."""
    figure = chart.build_figure(
        POINTS, "收入和订单：近 7 天", revenue_label="收入（元）", orders_label="订单"
    )
    with rc_context(chart.font_rc()):
        figure.savefig(io.BytesIO(), format="png")


def test_the_shipped_font_is_the_one_used() -> None:
    with rc_context(chart.font_rc()):
        png = chart.render_chart(POINTS, "收入和订单：近 7 天")
    assert png.startswith(b"\x89PNG")
    assert chart.FONTS[0] == "Noto Sans CJK SC"


def test_a_quiet_week_has_no_negative_yuan_or_fractional_orders() -> None:
    quiet = [DayPoint(date(2026, 11, day), 0, 0) for day in range(16, 23)]
    revenue_axes, orders_axes = chart.build_figure(quiet, "7 days").axes
    assert revenue_axes.get_ylim() == (0, 1)
    assert orders_axes.get_ylim() == (0, 1)
    assert all(tick == int(tick) for tick in orders_axes.get_yticks())
