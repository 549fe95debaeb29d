"""The stats chart: revenue per day as bars, paid orders as a line, as a PNG.

Drawn on a bare `Figure` with the Agg canvas (no pyplot, no global state), so charts
can be made from any task and the same points always give the same bytes. The title
and labels come from the caller, already translated. Chinese is drawn with Noto Sans CJK
SC from the `mplfonts` package, a dependency, because a fresh server has no CJK font and
matplotlib would draw every CJK glyph as a box.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from matplotlib import font_manager, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.stats import DayPoint

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

WIDTH_PX, HEIGHT_PX, DPI = 800, 400, 100
#: The shipped CJK font first (it has Latin too), matplotlib's own font for anything else.
FONTS = ["Noto Sans CJK SC", "DejaVu Sans"]
#: Noto Sans CJK SC (SIL Open Font License) inside the `mplfonts` package.
CJK_FONT = ("mplfonts", "fonts", "NotoSansCJKsc-Regular.otf")
BAR_COLOR, LINE_COLOR = "#4C78A8", "#F58518"


@cache
def _register_cjk_font() -> None:
    """Add the shipped font to matplotlib's font list (once: it would be listed twice)."""
    package, *parts = CJK_FONT
    font_manager.fontManager.addfont(str(files(package).joinpath(*parts)))


def font_rc() -> dict[RcKeyType, Any]:
    """matplotlib settings that draw with `FONTS`, the shipped CJK font among them."""
    _register_cjk_font()
    return {"font.family": "sans-serif", "font.sans-serif": FONTS}


def build_figure(
    points: Sequence[DayPoint], title: str, *, revenue_label: str = "¥", orders_label: str = "#"
) -> Figure:
    """The chart as a figure, before rendering (its axes hold the plotted data)."""
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    revenue_axes = figure.add_subplot()
    orders_axes = revenue_axes.twinx()
    positions = list(range(len(points)))
    revenue_axes.bar(positions, [p.revenue / 100 for p in points], color=BAR_COLOR)
    orders_axes.plot(positions, [p.orders for p in points], color=LINE_COLOR, marker="o")
    step = max(1, len(points) // 10)
    revenue_axes.set_xticks(positions[::step], [p.day.strftime("%m-%d") for p in points][::step])
    revenue_axes.set_ylabel(revenue_label, color=BAR_COLOR)
    orders_axes.set_ylabel(orders_label, color=LINE_COLOR)
    orders_axes.set_ylim(bottom=0)
    # With nothing sold, autoscaling centres the axes on zero (negative yuan, 0.006 orders).
    if not any(p.revenue for p in points):
        revenue_axes.set_ylim(0, 1)
    if not any(p.orders for p in points):
        orders_axes.set_ylim(0, 1)
    orders_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    revenue_axes.set_title(title)
    return figure


def render(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def render_chart(
    points: Sequence[DayPoint], title: str, *, revenue_label: str = "¥", orders_label: str = "#"
) -> bytes:
    """The PNG (800×400) of revenue (bars, yuan) and orders (line) per day."""
    with rc_context(font_rc()):
        return render(
            build_figure(points, title, revenue_label=revenue_label, orders_label=orders_label)
        )
