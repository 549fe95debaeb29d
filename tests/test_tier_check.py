"""The check after a purchase or check-in against the full computation, over random activity.

`Tiers.settlement_due` measures only what could still move a member (often nothing).
Here random members buy, check in, get refunds, violations, joint campaigns, trials and
admin tiers while the clock jumps, on both databases; after every step each member's
quick answer must equal the one the full metrics give (the check as it was before it
learned to skip), and the metrics the database measures must equal the same numbers
counted in Python from the rows.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from core.checkin import CheckIns
from core.clock import ManualClock
from core.errors import ShopError
from core.ladder import Ladder
from core.models import Member, Order, PointLot, Violation
from core.orders import Orders, OrderView
from core.shop import Shop
from core.tiers.metrics import (
    HALF_YEAR,
    PAID_STATUSES,
    SETTLED_STATUSES,
    VIOLATION_WINDOW,
    YEAR,
    load_metrics,
)
from core.tiers.moves import load_standing
from core.tiers.rules import (
    FULFILMENT_WITHOUT_ORDERS,
    Metrics,
    Standing,
    TierSource,
    earned_tier,
    progress,
)
from tests.conftest import SHOP_ZONE
from tests.factories import make_member, make_product

MEMBERS = 5
STEPS = 70
#: Base prices that cross every spend threshold of the default ladder within a run.
PRICES = (100, 20_000, 150_000, 600_000, 3_000_000)


async def counted_in_python(shop: Shop, member_id: int, now: datetime) -> Metrics:
    """Every metric counted from the rows, as tiers.toml's comments define them."""
    async with shop.db.read() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        orders = list(await session.scalars(select(Order).where(Order.member_id == member_id)))
        violations = list(
            await session.scalars(select(Violation).where(Violation.member_id == member_id))
        )
        referred = list(
            await session.scalars(select(Member.id).where(Member.referrer_id == member_id))
        )
        referred_orders = list(
            await session.scalars(select(Order).where(Order.member_id.in_(referred)))
        )

    def paid_within(order: Order, since: datetime) -> bool:
        return (
            order.status in PAID_STATUSES
            and order.paid_at is not None
            and since <= order.paid_at <= now
            and order.created_at <= now
        )

    placed = [o for o in orders if now - YEAR <= o.created_at <= now]
    settled = [o for o in placed if o.status in SETTLED_STATUSES]
    fulfilled = [o for o in placed if o.status in PAID_STATUSES]
    active = {o.member_id for o in referred_orders if paid_within(o, now - YEAR)}
    return Metrics(
        total_spent=member.total_spent,
        spend_365d=sum(o.total for o in orders if paid_within(o, now - YEAR)),
        purchases_6m=sum(1 for o in orders if paid_within(o, now - HALF_YEAR)),
        violations_90d=sum(
            1 for v in violations if v.serious and now - VIOLATION_WINDOW <= v.created_at <= now
        ),
        fulfilment_rate=(
            len(fulfilled) * 100 // len(settled) if settled else FULFILMENT_WITHOUT_ORDERS
        ),
        referrals_active=len(active),
        joint_campaigns=member.joint_campaigns,
        growth_points=member.growth_points,
    )


async def due_by_full_metrics(shop: Shop, member_id: int, metrics: Metrics) -> bool:
    """The settlement check on every metric: a trial over, a tier earned, a reward unpaid."""
    ladder: Ladder = shop.ladder
    now = shop.clock.now()
    async with shop.db.read() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        if (
            member.tier_source == TierSource.TRIAL
            and member.trial_until is not None
            and member.trial_until <= now
        ):
            return True
        if ladder.index(earned_tier(ladder, metrics).key) > ladder.index(member.tier_key):
            return True
        above = ladder.above(member.tier_key)
        if above is None:
            return False
        reached = progress(ladder, above.key, above.upgrade, metrics).percent
        keys = [
            f"progress:{member_id}:{above.key}:{percent}"
            for percent in ladder.progress_rewards.at_percent
            if reached >= percent
        ]
        if not keys:
            return False
        paid = await session.scalar(
            select(func.count()).select_from(PointLot).where(PointLot.source_key.in_(keys))
        )
        return (paid or 0) < len(keys)


class Run:
    """One random run: the shop, its members and products, and what the checks answered."""

    def __init__(self, shop: Shop, clock: ManualClock, seed: int) -> None:
        self.shop = shop
        self.clock = clock
        self.random = random.Random(seed)
        self.members: list[int] = []
        self.products: list[int] = []
        self.answers: Counter[str] = Counter()
        # Purchases and check-ins here leave the settling to the `settle` step, so members
        # spend a while with a settlement due and both answers get checked; a purchase's
        # own answer (from inside its transaction) is checked as it hands it over.
        self.orders = Orders(shop.db, shop.ladder, shop.vault, clock, on_paid=self._after_paid)
        self.checkins = CheckIns(
            shop.db, shop.ladder, clock, SHOP_ZONE, on_checkin=self._after_checkin
        )
        self._keys = 0

    async def setup(self) -> None:
        for price in PRICES:
            product, _ = await make_product(
                self.shop.db, self.shop.vault, self.clock, price=price, codes=STEPS
            )
            self.products.append(product)
        for _ in range(MEMBERS):
            self.members.append(await make_member(self.shop.db, self.clock, balance=10**9))
        async with self.shop.db.transaction() as session:
            await session.execute(
                update(Member)
                .where(Member.id.in_(self.members[1:4]))
                .values(referrer_id=self.members[0])
            )

    async def agree(self, member_id: int, standing: Standing | None = None) -> None:
        now = self.clock.now()
        counted = await counted_in_python(self.shop, member_id, now)
        async with self.shop.db.read() as session:
            assert await load_metrics(session, member_id, now) == counted
        expected = await due_by_full_metrics(self.shop, member_id, counted)
        assert await self.shop.tiers.settlement_due(member_id, standing) == expected
        self.answers[f"due={expected}"] += 1

    async def _after_paid(self, order: OrderView, due: bool | None) -> None:
        """The purchase's in-transaction answer against the full metrics just after it."""
        counted = await counted_in_python(self.shop, order.member_id, self.clock.now())
        assert due == await due_by_full_metrics(self.shop, order.member_id, counted)
        self.answers[f"purchase due={due}"] += 1

    async def _after_checkin(self, standing: Standing) -> None:
        async with self.shop.db.read() as session:
            assert standing == await load_standing(session, standing.member_id)
        await self.agree(standing.member_id, standing)
        self.answers["standing"] += 1

    async def step(self) -> None:
        shop, pick = self.shop, self.random
        member = pick.choice(self.members)
        action = pick.choice(
            ["buy"] * 6
            + ["checkin", "settle"] * 3
            + ["later"] * 2
            + ["refund", "violation", "admin"]
        )
        self.answers[action] += 1
        try:
            if action == "buy":
                self._keys += 1
                product = pick.choice(self.products)
                await self.orders.place(member, product, 1, idempotency_key=f"k{self._keys}")
            elif action == "checkin":
                await self.checkins.check_in(member)
            elif action == "settle":
                await shop.tiers.promote(member, reason="test")
            elif action == "later":
                self.clock.advance(timedelta(days=pick.choice([1, 1, 3, 20, 45, 100])))
            elif action == "refund":
                await self._refund(member)
            elif action == "violation":
                await shop.tiers.flag_violation(
                    member, reason="test", actor="test", serious=pick.random() < 0.7
                )
            else:
                await self._admin(member)
        except ShopError:
            self.answers["refused"] += 1
        # Risk control allows a few orders a minute; a step is never quicker than that.
        self.clock.advance(timedelta(minutes=10))
        for each in self.members:
            await self.agree(each)

    async def _refund(self, member: int) -> None:
        async with self.shop.db.read() as session:
            paid = list(
                await session.scalars(
                    select(Order.id).where(
                        Order.member_id == member, Order.status.in_(PAID_STATUSES)
                    )
                )
            )
        if paid:
            await self.shop.orders.refund(self.random.choice(paid), actor="test", reason="test")

    async def _admin(self, member: int) -> None:
        tiers, pick = self.shop.tiers, self.random
        move = pick.choice(["joint", "trial", "tier", "review"])
        if move == "joint":
            await tiers.set_joint_campaigns(member, pick.randint(0, 2), actor="test")
        elif move == "trial":
            await tiers.grant_trial(member, actor="test", days=pick.randint(1, 40))
        elif move == "tier":
            tier = pick.choice(self.shop.ladder.tiers).key
            await tiers.set_tier(member, tier, actor="test", reason="test")
        else:
            await self.shop.quarterly_review.run()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_quick_check_agrees_with_the_full_metrics(
    shop: Shop, clock: ManualClock, seed: int
) -> None:
    run = Run(shop, clock, seed)
    await run.setup()
    for _ in range(STEPS):
        await run.step()
    # Not vacuous: both answers came up, and check-ins handed their standing over.
    assert run.answers["due=True"], run.answers
    assert run.answers["due=False"], run.answers
    assert run.answers["standing"], run.answers
    assert run.answers["purchase due=True"], run.answers
    assert run.answers["purchase due=False"], run.answers
