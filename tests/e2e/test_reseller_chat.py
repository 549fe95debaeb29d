"""The chat side of the reseller features, end to end on both adapters and databases.

🔑 API keys (made, shown once, listed without the secret, revoked after a confirmation,
capped by the tier, refused to a tier without API access), the admin's referral report
and reservation list (a cancel is audited, puts the codes back and tells the holder),
and the referrer's commission notice, sent once however often the order is delivered.
Every screen is checked against what the shop stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, update

from bot.errors import render_error
from bot.handlers.admin_referrals import PAGE_SIZE
from bot.handlers.api_keys import DOCS_PATH
from bot.names import actor_for
from core.config import Settings
from core.errors import ErrorCode, ShopError
from core.models import AuditEntry, Member, WalletEntry
from core.shop import Shop
from tests.botapi import BotApiStub, StoredMessage
from tests.e2e.harness import Chat
from tests.e2e.test_membership import LOCALES, t
from tests.e2e.test_shopping import button, confirmation, seed
from tests.factories import make_member, make_product

ADMIN = 9_101
PUBLIC_URL = "https://shop.example.com"
en = t("en")


@pytest.fixture(autouse=True)
def quick_typist(api: BotApiStub) -> None:
    """Members here tap faster than Telegram's per-chat flood limit (see test_shopping)."""
    api.limits.per_chat_burst = 100


@pytest.fixture
def bot_settings(bot_settings: Settings) -> Settings:
    return bot_settings.model_copy(update={"admin_ids": [ADMIN], "public_url": PUBLIC_URL})


def plain(text: str) -> str:
    """A message as the member reads it: the HTML tags the bot sent are entities now."""
    return re.sub(r"</?(b|i|code)>", "", text)


def labels(message: StoredMessage) -> list[str]:
    return [b.get("text", "") for b in message.buttons]


async def member_with_tier(
    chat: Callable[..., Chat], shop: Shop, user_id: int, tier: str, locale: str = "en"
) -> tuple[Chat, int]:
    member_chat = chat(user_id, language_code=LOCALES[locale], first_name=f"Member{user_id}")
    await member_chat.say("/start")
    member = await shop.members.by_telegram(user_id)
    assert member is not None
    await shop.tiers.set_tier(member.id, tier, actor="test", reason="scenario")
    return member_chat, member.id


async def live_keys(shop: Shop, member_id: int) -> list[str]:
    return [key.key_id for key in await shop.api_keys.list(member_id)]


async def audit_rows(shop: Shop, action: str) -> list[AuditEntry]:
    async with shop.db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            )
        )


# --- 🔑 API keys ------------------------------------------------------------------------------


async def test_a_key_is_made_shown_once_listed_without_its_secret_and_revoked(
    chat: Callable[..., Chat], shop: Shop, api: BotApiStub
) -> None:
    member, member_id = await member_with_tier(chat, shop, 5_101, "platinum")
    [menu] = await member.say("/start")
    assert en._("🔑 API") in labels(menu)

    [screen] = await member.tap(en._("🔑 API"))
    assert en._("You have no API keys yet.") in (screen.text or "")
    assert en._("API documentation: {url}").format(url=PUBLIC_URL + DOCS_PATH) in (
        screen.text or ""
    )
    [prompt] = await member.tap(en._("➕ New key"))
    assert prompt.message_id == screen.message_id
    [refused] = await member.say("x" * 65)  # longer than a label may be
    assert plain(refused.text or "") == plain(
        en.ngettext(
            "Send a label for the new key (up to {max} character), e.g. the site that will use"
            " it, or tap Skip.",
            "Send a label for the new key (up to {max} characters), e.g. the site that will use"
            " it, or tap Skip.",
            64,
        ).format(max=64)
    )
    assert await live_keys(shop, member_id) == []

    [shown] = await member.say("my site")
    [key_id] = await live_keys(shop, member_id)
    caller = await shop.api_keys.authenticate(key_id)
    assert caller is not None
    secret = caller.secret
    text = shown.text or ""
    assert key_id in text
    assert secret in text
    assert (
        en._(
            "⚠️ Copy the secret now and keep it safe: it is shown only this once, and anyone"
            " holding it can buy with your balance. If it leaks, revoke the key."
        )
        in text
    )
    assert [key.label for key in await shop.api_keys.list(member_id)] == ["my site"]

    # "I have saved it" turns the secret's message into the list: the secret is gone.
    [listed] = await member.tap(en._("✅ I have saved it"))
    assert listed.message_id == shown.message_id
    assert key_id in (listed.text or "")
    assert "my site" in (listed.text or "")
    assert all(secret not in (m.text or "") for m in api.sent_to(member.chat_id))

    # From /level too, for a tier with the API.
    [level] = await member.say("/level")
    assert en._("🔑 API") in labels(level)
    await member.tap(en._("🔑 API"))
    [confirm] = await member.tap(en._("🗑 Revoke {key_id}").format(key_id=key_id))
    assert en._("✅ Yes, revoke") in labels(confirm)
    assert await live_keys(shop, member_id) == [key_id]  # asking changes nothing

    [done] = await member.tap(en._("✅ Yes, revoke"))
    assert plain(en._("🗑 The key <code>{key_id}</code> is revoked.").format(key_id=key_id)) in (
        done.text or ""
    )
    assert en._("You have no API keys yet.") in (done.text or "")
    assert await live_keys(shop, member_id) == []
    assert await shop.api_keys.authenticate(key_id) is None

    # Someone else's key, forged into the button, is no key of this member's.
    other = await make_member(shop.db, shop.clock, tier="platinum")
    theirs = (await shop.api_keys.issue(other)).key.key_id
    for action in ("revoke", "confirm"):
        await member.press(done.message_id, f"apikey:{theirs}:{action}")
        assert member.answer() == en._("No API key {key}.").format(key=theirs)
    assert await live_keys(shop, other) == [theirs]


async def test_the_tier_caps_the_keys_and_a_double_tapped_skip_makes_one(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    member, member_id = await member_with_tier(chat, shop, 5_102, "platinum")
    cap = shop.ladder.tier("platinum").capabilities.api_keys_max
    for n in range(cap - 1):
        await shop.api_keys.issue(member_id, label=f"script {n}")
    await member.say("/api")
    [prompt] = await member.tap(en._("➕ New key"))
    skip = button(prompt, en._("Skip »"))
    [shown] = await member.press(prompt.message_id, skip)
    assert len(await live_keys(shop, member_id)) == cap
    assert "sk_" in (shown.text or "")
    [again] = await member.press(prompt.message_id, skip)  # the second tap of a double tap
    assert "sk_" not in (again.text or "")
    assert len(await live_keys(shop, member_id)) == cap

    [full] = await member.tap(en._("➕ New key"))
    limit = render_error(ShopError(ErrorCode.API_KEY_LIMIT, max=cap), en, shop.ladder)
    assert plain(limit) in (full.text or "")
    await member.say("one more", expect_reply=True)  # not a label: the step never started
    assert len(await live_keys(shop, member_id)) == cap


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_a_tier_without_api_sees_no_button_and_forged_ones_change_nothing(
    chat: Callable[..., Chat], shop: Shop, locale: str
) -> None:
    member, member_id = await member_with_tier(chat, shop, 5_103, "platinum", locale)
    issued = await shop.api_keys.issue(member_id, label="kept")
    await shop.tiers.set_tier(member_id, "silver", actor="test", reason="scenario")
    tr = t(locale)
    refusal = render_error(ShopError(ErrorCode.API_NOT_ALLOWED), tr, shop.ladder)

    [menu] = await member.say("/start")
    assert tr._("🔑 API") not in labels(menu)
    [level] = await member.say("/level")
    assert tr._("🔑 API") not in labels(level)
    [said] = await member.say("/api")
    assert said.text == refusal

    message_id = level.message_id
    for data in (
        "apikeys:list",
        "apikeys:new",
        "apikeys:skip",
        f"apikey:{issued.key.key_id}:revoke",
        f"apikey:{issued.key.key_id}:confirm",
        "menu:api",
        "apikey:nonsense\x00:confirm",
    ):
        await member.press(message_id, data)
        assert member.answer() == refusal, data
    assert await live_keys(shop, member_id) == [issued.key.key_id]
    assert (await shop.api_keys.list(member_id))[0].revoked_at is None


# --- admin: referrals and reservations ------------------------------------------------------


async def refer(shop: Shop, member_id: int, referrer_id: int) -> None:
    async with shop.db.transaction() as session:
        await session.execute(
            update(Member).where(Member.id == member_id).values(referrer_id=referrer_id)
        )


async def test_admin_pages_through_the_referral_report(
    chat: Callable[..., Chat], shop: Shop
) -> None:
    db, clock = shop.db, shop.clock
    top = await make_member(db, clock, tier="platinum")
    buyer = await make_member(db, clock, balance=50_000)
    idle = await make_member(db, clock)
    await refer(shop, buyer, top)
    await refer(shop, idle, top)
    product, _ = await make_product(db, shop.vault, clock, price=10_000)
    kept = await shop.orders.place(buyer, product, 1, idempotency_key="kept")
    refunded = await shop.orders.place(buyer, product, 1, idempotency_key="refunded")
    for order in (kept.order.id, refunded.order.id):
        await shop.orders.mark_delivered(order)
    await shop.orders.refund(refunded.order.id, actor="test", reason="scenario")
    # Enough other referrers for a second page.
    for _ in range(PAGE_SIZE):
        await refer(shop, await make_member(db, clock), await make_member(db, clock))

    report = await shop.referrals.report()
    assert len(report) == PAGE_SIZE + 1
    first = report[0]
    assert (first.member_id, first.joined, first.bought, first.earned, first.reversed) == (
        top,
        2,
        1,
        285,
        285,
    )  # 3% of 9,500 (member's 95折) per order, the refunded one taken back

    admin = chat(ADMIN, language_code="en", first_name="Boss")
    await admin.say("/admin")
    [page_one] = await admin.tap(en._("👥 Referrals"))
    text = page_one.text or ""
    assert en._("Page {page} of {pages}").format(page=1, pages=2) in text
    top_name = await shop.members.get(top)
    assert (
        plain(en._("<b>{name}</b> · member #{id}").format(name=top_name.display_name, id=top))
        in text
    )
    assert (
        en.ngettext(
            "{joined} joined, {bought} bought in the last {days} day",
            "{joined} joined, {bought} bought in the last {days} days",
            365,
        ).format(joined=2, bought=1, days=en.number(365))
        in text
    )
    assert (
        en._("Commission {earned} net, {reversed} taken back on refunds").format(
            earned=en.money(285), reversed=en.money(285)
        )
        in text
    )
    [page_two] = await admin.tap(en._("Next ›"))
    assert en._("Page {page} of {pages}").format(page=2, pages=2) in (page_two.text or "")
    assert re.search(rf"#{report[-1].member_id}\b", page_two.text or "")
    assert not re.search(rf"#{top}\b", page_two.text or "")


@pytest.mark.parametrize("locale", list(LOCALES))
async def test_admin_cancels_a_reservation_the_holder_is_told_and_stock_is_back(
    chat: Callable[..., Chat], shop: Shop, api: BotApiStub, locale: str
) -> None:
    holder, holder_id = await member_with_tier(chat, shop, 5_104, "platinum", locale)
    product, _ = await make_product(shop.db, shop.vault, shop.clock, codes=5)
    hold = await shop.reservations.reserve(holder_id, product, 3)
    assert await shop.stock.available(product) == 2

    admin = chat(ADMIN, language_code="en", first_name="Boss")
    await admin.say("/admin")
    [listing] = await admin.tap(en._("📌 Reservations"))
    assert f"#{hold.id} · {hold.sku} · 3/3" in (listing.text or "")
    [card] = await admin.tap(f"#{hold.id}")
    assert "Member5104" in (card.text or "")
    [confirm] = await admin.tap(en._("✖ Cancel reservation"))
    assert en.ngettext(
        "Cancel reservation #{id}? Its {count} unbought code goes back on sale,"
        " and the member is told.",
        "Cancel reservation #{id}? Its {count} unbought codes go back on sale,"
        " and the member is told.",
        3,
    ).format(id=hold.id, count=3) in (confirm.text or "")
    assert await shop.stock.available(product) == 2  # asking changes nothing

    before = len(api.sent_to(holder.chat_id))
    yes = button(confirm, en._("✅ Yes, cancel"))
    [done] = await admin.press(confirm.message_id, yes)
    assert en.ngettext(
        "Reservation #{id} cancelled: {count} code back on sale.",
        "Reservation #{id} cancelled: {count} codes back on sale.",
        3,
    ).format(id=hold.id, count=3) in (done.text or "")
    assert await shop.stock.available(product) == 5
    assert await shop.reservations.mine(holder_id) == []
    [told] = api.sent_to(holder.chat_id)[before:]
    tr = t(locale)
    assert told.text == plain(
        tr.ngettext(
            "📌 A shop admin cancelled your reservation of <b>{name}</b>: {count} unbought code"
            " went back on sale.",
            "📌 A shop admin cancelled your reservation of <b>{name}</b>: {count} unbought codes"
            " went back on sale.",
            3,
        ).format(name=hold.product_name(locale), count=3)
    )
    [row] = await audit_rows(shop, "reservation.cancel")
    assert (row.actor, row.target, row.after) == (
        actor_for(ADMIN),
        f"reservation:{hold.id}",
        {"released": 3},
    )

    # The second tap of a double tap finds the hold ended: nothing more happens.
    await admin.press(confirm.message_id, yes)
    assert admin.answer() == render_error(
        ShopError(ErrorCode.RESERVATION_NOT_FOUND), en, shop.ladder
    )
    assert len(await audit_rows(shop, "reservation.cancel")) == 1
    assert len(api.sent_to(holder.chat_id)) == before + 1


# --- the commission notice ------------------------------------------------------------------


async def test_the_referrer_hears_of_a_commission_once_whatever_is_redelivered(
    chat: Callable[..., Chat], shop: Shop, api: BotApiStub
) -> None:
    await seed(shop)
    referrer_chat, referrer_id = await member_with_tier(chat, shop, 5_105, "platinum", "zh_CN")
    code = (await shop.members.get(referrer_id)).referral_code
    buyer_chat = chat(5_106, language_code="en", first_name="Zed")
    await buyer_chat.say(f"/start ref_{code}")
    buyer = await shop.members.by_telegram(5_106)
    assert buyer is not None
    await shop.operations.admin.top_up("test", buyer.id, 100_000, reason="paid in")
    before = len(api.sent_to(referrer_chat.chat_id))

    confirm = await confirmation(buyer_chat, "en", "1")
    pay = button(confirm, "✅ Pay")
    update_ = buyer_chat.api.inject_callback(buyer_chat.user, confirm.message_id, pay)
    buyer_chat.queries.append(update_["callback_query"]["id"])
    await api.wait_for(lambda: update_["callback_query"]["id"] in api.answered_callbacks)
    await api.wait_for(lambda: len(api.sent_to(referrer_chat.chat_id)) > before)
    await buyer_chat.press(confirm.message_id, pay)  # the second tap: "already paid"
    await buyer_chat.send_update(update_, expect_reply=False)  # Telegram sends it again

    [order] = await shop.orders.recent(buyer.id)
    async with shop.db.read() as session:
        credits = list(
            await session.scalars(
                select(WalletEntry.amount).where(
                    WalletEntry.kind == "commission", WalletEntry.member_id == referrer_id
                )
            )
        )
        commission_rows = await session.scalar(
            select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "commission")
        )
    percent = shop.ladder.tier("platinum").capabilities.commission_percent
    assert credits == [order.total * percent // 100]
    assert commission_rows == 1
    [notice] = api.sent_to(referrer_chat.chat_id)[before:]
    zh = t("zh_CN")
    assert notice.text == zh._(
        "💰 +{amount} commission from an order of a member you referred ({name})."
    ).format(amount=zh.money(credits[0]), name="Z***")
    assert zh._("👥 Referrals") in labels(notice)
