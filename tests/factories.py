"""Rows for tests, inserted through the ORM in one transaction each."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.config import DEFAULT_TIERS_FILE
from core.ladder import Ladder
from core.models import (
    PAID_STATUSES,
    Category,
    Code,
    Member,
    Order,
    OrderStatus,
    Product,
    WalletEntry,
)
from core.points import award_points_on
from core.uow import Database, run_on
from core.vault import CodeVault

_ids = itertools.count(1)


async def make_member(
    db: Database,
    clock: Clock,
    *,
    balance: int = 0,
    tier: str = "member",
    telegram_id: int | None = None,
) -> int:
    """A member with `balance` 分 paid in through a real top-up ledger row."""
    n = next(_ids)
    async with db.transaction() as session:
        member = Member(
            telegram_id=telegram_id if telegram_id is not None else 500_000 + n,
            display_name=f"buyer {n}",
            referral_code=f"T{n:07d}",
            tier_key=tier,
            balance=balance,
            created_at=clock.now(),
        )
        session.add(member)
        await session.flush()
        if balance:
            session.add(
                WalletEntry(
                    member_id=member.id,
                    kind="topup",
                    amount=balance,
                    balance_after=balance,
                    created_at=clock.now(),
                )
            )
        return member.id


async def make_product(
    db: Database,
    vault: CodeVault,
    clock: Clock,
    *,
    price: int = 1000,
    codes: int = 10,
    pool: str = "basic",
    max_per_order: int | None = None,
) -> tuple[int, list[str]]:
    """A product with `codes` codes in stock; returns its id and the codes in clear."""
    n = next(_ids)
    plain = [f"CODE-{n:04d}-{i:05d}" for i in range(codes)]
    async with db.transaction() as session:
        category = Category(slug=f"cat-{n}", name_zh=f"分类{n}", name_en=f"Category {n}")
        session.add(category)
        await session.flush()
        product = Product(
            sku=f"SKU-{n}",
            category_id=category.id,
            name_zh=f"商品{n}",
            name_en=f"Product {n}",
            base_price=price,
            pool=pool,
            max_per_order=max_per_order,
            created_at=clock.now(),
        )
        session.add(product)
        await session.flush()
        session.add_all(
            Code(
                product_id=product.id,
                secret=vault.encrypt(code),
                digest=vault.digest(code),
                added_at=clock.now(),
            )
            for code in plain
        )
        return product.id, plain


async def make_order(
    session: AsyncSession,
    member_id: int,
    product_id: int,
    *,
    at: datetime,
    total: int,
    quantity: int = 1,
    discount: int = 0,
    status: OrderStatus = OrderStatus.DELIVERED,
    key: str | None = None,
    refunded_at: datetime | None = None,
) -> int:
    """An order row placed at `at`, priced the way the purchase path prices it; returns its id.

    Per-unit prices follow from `total` and `discount` (the base price is what the discount
    came off); `paid_at` is `at` once the status says it was paid. Added to the caller's
    session so it can sit beside the rows that test builds with it.
    """
    unit_price = total // quantity
    order = Order(
        member_id=member_id,
        product_id=product_id,
        idempotency_key=key if key is not None else f"order-{next(_ids)}",
        quantity=quantity,
        tier_key="member",
        unit_base_price=max(unit_price + discount // quantity, 1),
        unit_price=unit_price,
        discount=discount,
        total=total,
        status=status,
        created_at=at,
        # A refund keeps the time the order was paid.
        paid_at=at if status in (*PAID_STATUSES, OrderStatus.REFUNDED) else None,
        refunded_at=refunded_at,
    )
    session.add(order)
    await session.flush()
    return order.id


async def give_points(
    db: Database,
    ladder: Ladder,
    member_id: int,
    amount: int,
    *,
    at: datetime,
    source: str = "reward",
    key: str = "gift",
) -> bool:
    """Points earned at `at` through the real award path; False when `key` was used."""
    async with db.transaction() as session:
        return await run_on(
            session, award_points_on, ladder, member_id, source=source, source_key=key,
            amount=amount, at=at,
        )  # fmt: skip


def tiers_file_with(folder: Path, **numbers: int) -> Path:
    """A copy of the shipped tiers.toml with some of its top-level numbers changed.

    Each name must occur exactly once in the file (`max_orders`, `window_seconds`...).
    """
    text = DEFAULT_TIERS_FILE.read_text(encoding="utf-8")
    for name, value in numbers.items():
        text, found = re.subn(rf"^{name} = \d+", f"{name} = {value}", text, flags=re.MULTILINE)
        assert found == 1, f"{name} occurs {found} times in {DEFAULT_TIERS_FILE}"
    path = folder / "tiers.toml"
    path.write_text(text, encoding="utf-8")
    return path
