"""Stats on fixed data: shop-local calendar days, exact numbers, and the chart."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from bot import cli
from core.chart import build_figure, render_chart
from core.clock import ManualClock
from core.errors import ErrorCode, ShopError
from core.models import CheckIn, OrderStatus
from core.shop import Shop
from core.stats import DayPoint
from tests.conftest import SHOP_ZONE, TEST_KEY
from tests.factories import make_member, make_order, make_product


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHOP_ZONE)


async def _order(
    shop: Shop,
    member: int,
    product: int,
    *,
    paid: datetime,
    total: int,
    quantity: int = 1,
    status: OrderStatus = OrderStatus.DELIVERED,
    refunded: datetime | None = None,
) -> None:
    async with shop.db.transaction() as session:
        await make_order(
            session,
            member,
            product,
            at=paid,
            total=total,
            quantity=quantity,
            status=status,
            refunded_at=refunded,
        )


async def _fixed_shop(shop: Shop) -> tuple[int, int]:
    """Today is 2026-11-22 (10:00 in Shanghai)."""
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    old = await make_member(shop.db, shop.clock, tier="gold")
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=0)
    clock.set(local(21, 23, 30))  # yesterday, 15:30 UTC
    newer = await make_member(shop.db, shop.clock)
    clock.set(local(22, 10))
    await _order(shop, old, product, paid=local(22, 0, 10), total=1_000, quantity=2)
    await _order(shop, old, product, paid=local(22, 9), total=2_550)
    await _order(shop, newer, product, paid=local(21, 23, 59), total=500)
    await _order(shop, old, product, paid=local(16, 12), total=7_000, quantity=3)
    await _order(shop, old, product, paid=local(15, 23, 59), total=9_900)  # 8 days ago
    await _order(
        shop, newer, product, paid=local(20, 8), total=300, status=OrderStatus.REFUNDED,
        refunded=local(22, 8),
    )  # fmt: skip
    async with shop.db.transaction() as session:
        session.add_all(
            [
                CheckIn(
                    member_id=old,
                    day=date(2026, 11, 22),
                    streak=3,
                    points=20,
                    created_at=local(22, 8),
                ),
                CheckIn(
                    member_id=old,
                    day=date(2026, 11, 21),
                    streak=2,
                    points=15,
                    created_at=local(21, 8),
                ),
                CheckIn(
                    member_id=newer,
                    day=date(2026, 11, 14),
                    streak=1,
                    points=10,
                    created_at=local(14, 8),
                ),
            ]
        )
    await shop.tickets.open(newer, "order", "where is my code?")
    return old, newer


async def test_summary_counts_shop_local_days_exactly(shop: Shop) -> None:
    await _fixed_shop(shop)
    stats = shop.operations.stats

    today = await stats.summary(1)
    assert (today.date_from, today.date_to) == (date(2026, 11, 22), date(2026, 11, 22))
    assert (today.revenue, today.orders, today.codes_sold) == (3_550, 2, 3)
    assert (today.refunds, today.refunded) == (1, 300)
    assert (today.new_members, today.checkins) == (1, 1)  # `old` joined at 10:00 today
    assert today.tier_distribution == {"gold": 1, "member": 1}
    assert (today.tickets.opened, today.tickets.answered) == (1, 0)

    week = await stats.summary(7)
    assert week.date_from == date(2026, 11, 16)
    assert (week.revenue, week.orders, week.codes_sold) == (11_050, 4, 7)
    assert (week.new_members, week.checkins) == (2, 2)

    month = await stats.summary(30)
    assert (month.revenue, month.orders, month.checkins) == (20_950, 5, 3)

    with pytest.raises(ShopError) as refused:
        await stats.summary(0)
    assert refused.value.code is ErrorCode.INVALID_INPUT


async def test_daily_has_every_day_and_the_chart_plots_them(shop: Shop) -> None:
    await _fixed_shop(shop)
    points = await shop.operations.stats.daily(7)

    assert points == [
        DayPoint(date(2026, 11, 16), 7_000, 1),
        DayPoint(date(2026, 11, 17), 0, 0),
        DayPoint(date(2026, 11, 18), 0, 0),
        DayPoint(date(2026, 11, 19), 0, 0),
        DayPoint(date(2026, 11, 20), 0, 0),
        DayPoint(date(2026, 11, 21), 500, 1),
        DayPoint(date(2026, 11, 22), 3_550, 2),
    ]

    figure = build_figure(points, "7 days")
    bars_axes, line_axes = figure.axes
    bars = [patch for patch in bars_axes.patches if isinstance(patch, Rectangle)]
    assert [bar.get_height() for bar in bars] == [70.0, 0, 0, 0, 0, 5.0, 35.5]
    (line,) = line_axes.get_lines()
    assert len(np.asarray(line.get_xdata())) == 7
    assert np.asarray(line.get_ydata()).tolist() == [1, 0, 0, 0, 0, 1, 2]

    png = render_chart(points, "近 7 天")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    assert (int.from_bytes(png[16:20]), int.from_bytes(png[20:24])) == (800, 400)
    assert render_chart(points, "近 7 天") == png


async def test_stats_command(
    shop: Shop,
    database_url: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_member(shop.db, shop.clock, tier="silver")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    assert await asyncio.to_thread(cli.main, ["stats", "--days", "30"], clock=shop.clock) == 0
    out = capsys.readouterr().out
    assert "(days: 30)" in out
    assert "tiers: silver 1" in out
    assert "new members 1" in out
