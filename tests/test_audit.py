"""Admin actions: each changes what it says and leaves one audit row with before/after."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, update

from bot import cli
from core.audit import AuditView
from core.broadcast import Button
from core.errors import ErrorCode, ShopError
from core.models import AuditEntry, BroadcastDelivery, Member, Violation, WalletEntry
from core.shop import Shop
from tests.conftest import TEST_KEY
from tests.factories import make_member, make_product

ADMIN = "tg:1"


async def _only_row(shop: Shop, action: str) -> AuditView:
    rows = await shop.operations.audit.recent(action=action)
    assert len(rows) == 1
    assert rows[0].actor == ADMIN
    return rows[0]


async def test_top_up_and_adjust_write_ledger_and_audit_in_one_go(shop: Shop) -> None:
    admin = shop.operations.admin
    member = await make_member(shop.db, shop.clock, balance=500)

    change = await admin.top_up(ADMIN, member, 10_000, reason="bank transfer 42")
    assert (change.balance_before, change.balance_after) == (500, 10_500)
    row = await _only_row(shop, "topup")
    assert row.target == f"member:{member}"
    assert row.before == {"balance": 500}
    assert row.after == {"balance": 10_500, "amount": 10_000, "reason": "bank transfer 42"}
    assert row.created_at == shop.clock.now()

    await admin.adjust(ADMIN, member, -500, reason="double credit")
    row = await _only_row(shop, "adjustment")
    assert (row.before, row.after) == (
        {"balance": 10_500},
        {"balance": 10_000, "amount": -500, "reason": "double credit"},
    )
    assert await shop.wallet.balance(member) == 10_000
    entries = await shop.wallet.history(member)
    assert [(e.kind, e.amount, e.actor) for e in entries[:2]] == [
        ("adjustment", -500, ADMIN),
        ("topup", 10_000, ADMIN),
    ]


async def test_refused_wallet_action_leaves_no_audit_row(shop: Shop) -> None:
    admin = shop.operations.admin
    member = await make_member(shop.db, shop.clock, balance=100)

    with pytest.raises(ShopError) as refused:
        await admin.adjust(ADMIN, member, -101, reason="too much")
    assert refused.value.code is ErrorCode.INSUFFICIENT_BALANCE
    with pytest.raises(ShopError) as empty:
        await admin.top_up(ADMIN, member, 100, reason="  ")
    assert empty.value.code is ErrorCode.INVALID_INPUT

    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(AuditEntry.id))) == 0
        assert await session.scalar(select(func.count(WalletEntry.id))) == 1
    assert await shop.wallet.balance(member) == 100


async def test_tier_actions_record_the_tier_before_and_after(shop: Shop) -> None:
    admin = shop.operations.admin
    member = await make_member(shop.db, shop.clock)

    await admin.set_tier(ADMIN, member, "gold", reason="vip deal")
    row = await _only_row(shop, "set_tier")
    assert row.before == {"tier": "member", "source": "rules", "trial_until": None}
    assert row.after == {"tier": "gold", "source": "admin", "trial_until": None}

    await admin.grant_trial(ADMIN, member, days=10)
    row = await _only_row(shop, "grant_trial")
    assert row.before is not None
    assert row.after is not None
    assert row.before["tier"] == "gold"
    assert (row.after["tier"], row.after["source"]) == ("platinum", "trial")
    assert row.after["trial_until"] is not None

    await admin.invite_partner(ADMIN, member)
    row = await _only_row(shop, "invite_partner")
    assert row.before is not None
    assert row.after is not None
    assert (row.before["tier"], row.after["tier"], row.after["source"]) == (
        "platinum",
        "partner",
        "invite",
    )
    assert (await shop.members.get(member)).tier_key == "partner"


async def test_flag_violation_and_assign_manager(shop: Shop) -> None:
    admin = shop.operations.admin
    member = await make_member(shop.db, shop.clock, tier="diamond")

    await admin.flag_violation(ADMIN, member, reason="chargeback")
    row = await _only_row(shop, "flag_violation")
    assert row.before is None
    assert row.after is not None
    assert (row.after["reason"], row.after["serious"], row.after["actor"]) == (
        "chargeback",
        True,
        ADMIN,
    )
    async with shop.db.read() as session:
        assert await session.scalar(select(func.count(Violation.id))) == 1

    await admin.assign_manager(ADMIN, member, 9001, display_name="Lily")
    row = await _only_row(shop, "assign_manager")
    assert row.before == {"manager": None}
    assert row.after is not None
    assert row.after["manager"]["telegram_id"] == 9001
    assert row.after["manager"]["display_name"] == "Lily"
    access = await shop.manager.access(member)
    assert access.manager is not None
    assert access.manager.telegram_id == 9001


async def test_catalog_and_stock_actions(shop: Shop) -> None:
    admin = shop.operations.admin
    await shop.catalog.upsert_category("games", "游戏", "Games")

    await admin.create_product(ADMIN, "STEAM-100", "games", "Steam 100", "Steam 100", 10_000)
    row = await _only_row(shop, "create_product")
    assert row.before is None
    assert row.after is not None
    assert (row.after["sku"], row.after["base_price"], row.after["active"]) == (
        "STEAM-100",
        10_000,
        True,
    )

    await admin.update_product(ADMIN, "STEAM-100", base_price=9_500)
    row = await _only_row(shop, "update_product")
    assert row.before is not None
    assert row.after is not None
    assert (row.before["base_price"], row.after["base_price"]) == (10_000, 9_500)

    await admin.set_active(ADMIN, "STEAM-100", False)
    row = await _only_row(shop, "set_active")
    assert (row.before, row.after) == ({"active": True}, {"active": False})
    assert (await shop.catalog.product_by_sku("STEAM-100")).active is False

    report = await admin.import_codes(ADMIN, "STEAM-100", ["AAA-1", "AAA-2", "AAA-1"])
    assert report.added == 2
    row = await _only_row(shop, "import_codes")
    assert row.before == {"stock": 0}
    assert row.after == {
        "added": 2,
        "duplicate": 1,
        "rejected": 0,
        "stock_after": 2,
        "duplicates": [{"line": 3, "held_by": None}],
    }
    assert "AAA-1" not in str(row.after)


async def test_refund_records_the_order_status(shop: Shop) -> None:
    admin = shop.operations.admin
    member = await make_member(shop.db, shop.clock, balance=5_000)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, price=1_000)
    purchase = await shop.orders.place(member, product, 1, idempotency_key="k")

    await admin.refund(ADMIN, purchase.order.id, reason="code invalid")
    row = await _only_row(shop, "refund")
    assert row.target == f"order:{purchase.order.id}"
    assert row.before == {"member_id": member, "status": "paid", "total": purchase.order.total}
    assert row.after == {"status": "refunded", "reason": "code invalid"}
    assert await shop.wallet.balance(member) == 5_000

    with pytest.raises(ShopError) as again:
        await admin.refund(ADMIN, purchase.order.id, reason="again")
    assert again.value.code is ErrorCode.ORDER_NOT_REFUNDABLE
    assert len(await shop.operations.audit.recent(action="refund")) == 1


async def test_start_broadcast_snapshots_audience_with_audit(shop: Shop) -> None:
    admin = shop.operations.admin
    golds = [await make_member(shop.db, shop.clock, tier="gold") for _ in range(2)]
    await make_member(shop.db, shop.clock)

    broadcast, recipients = await admin.start_broadcast(
        ADMIN, "gold", "  新品上架 ", Button("Shop", "https://t.me/shop")
    )
    assert recipients == 2
    row = await _only_row(shop, "broadcast")
    assert row.target == f"broadcast:{broadcast.id}"
    assert row.after == {
        "audience": "gold",
        "recipients": 2,
        "text": "新品上架",
        "button": {"text": "Shop", "url": "https://t.me/shop"},
    }
    async with shop.db.read() as session:
        members = await session.scalars(
            select(BroadcastDelivery.member_id).order_by(BroadcastDelivery.member_id)
        )
        assert list(members) == golds

    with pytest.raises(ShopError) as unknown:
        await admin.start_broadcast(ADMIN, "emerald", "hi")
    assert unknown.value.code is ErrorCode.UNKNOWN_TIER
    assert len(await shop.operations.audit.recent()) == 1


async def test_denied_attempts_are_logged_and_filtered(shop: Shop) -> None:
    operations = shop.operations
    await operations.admin.denied("tg:666", "/topup")
    await operations.audit.log("tg:1", "export", "orders")

    denied = await operations.audit.recent(action="denied")
    assert [(r.actor, r.target) for r in denied] == [("tg:666", "/topup")]
    by_actor = await operations.audit.recent(actor="tg:1")
    assert [r.action for r in by_actor] == ["export"]
    assert [r.action for r in await operations.audit.recent(limit=1)] == ["export"]


async def test_topup_and_set_tier_commands_are_audited(
    shop: Shop,
    database_url: str,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    member = await make_member(shop.db, shop.clock, telegram_id=777)
    async with shop.db.transaction() as session:
        await session.execute(update(Member).where(Member.id == member).values(username="Alice"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    argv = ["topup", "@alice", "12.50", "--reason", "alipay 2026-11-22"]
    assert await asyncio.to_thread(cli.main, argv, clock=shop.clock) == 0
    assert (
        await asyncio.to_thread(
            cli.main, ["topup", "777", "100", "--reason", "wechat"], clock=shop.clock
        )
        == 0
    )
    assert await asyncio.to_thread(cli.main, ["set-tier", "777", "gold"], clock=shop.clock) == 0
    out = capsys.readouterr().out
    assert f"member #{member}: balance 0.00 -> 12.50" in out
    assert f"member #{member}: member -> gold" in out

    assert await shop.wallet.balance(member) == 11_250
    assert (await shop.members.get(member)).tier_key == "gold"
    audit = shop.operations.audit
    topups = await audit.recent(action="topup")
    assert [(r.before, r.after) for r in topups] == [
        ({"balance": 1_250}, {"balance": 11_250, "amount": 10_000, "reason": "wechat"}),
        ({"balance": 0}, {"balance": 1_250, "amount": 1_250, "reason": "alipay 2026-11-22"}),
    ]
    assert all(r.actor.startswith("cli:") for r in topups)
    (tier,) = await audit.recent(action="set_tier")
    assert tier.after is not None
    assert tier.after["tier"] == "gold"

    assert (
        await asyncio.to_thread(
            cli.main, ["topup", "@nobody", "1", "--reason", "x"], clock=shop.clock
        )
        == 1
    )
    assert (
        await asyncio.to_thread(
            cli.main, ["topup", "777", "1.234", "--reason", "x"], clock=shop.clock
        )
        == 1
    )
    assert "1.234 不是以元为单位的金额" in capsys.readouterr().err
    assert len(await audit.recent()) == 3
