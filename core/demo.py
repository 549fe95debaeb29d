"""A demo shop to click through: categories, products, a few hundred codes, tiered members.

Seeding goes through the same services an admin uses (so validation and code dedupe
apply) and only ever adds what is missing: categories by slug, products by SKU, members
by Telegram id, codes by digest. The demo codes come from a generator seeded with the
SKU, so a second run produces the same codes and adds none of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import select

from core.catalog import Catalog
from core.clock import Clock
from core.ladder import Ladder
from core.members import new_referral_code
from core.models import Category, Member, Product, WalletEntry
from core.sql import insert_ignoring_conflict
from core.stock import StockService
from core.uow import Database
from core.vault import CodeVault

#: Letters and digits that cannot be misread for one another (no 0/O, 1/I).
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
#: Who the seeded rows say made them.
DEMO_ACTOR = "demo"


@dataclass(frozen=True, slots=True)
class DemoCategory:
    slug: str
    name_zh: str
    name_en: str
    parent_slug: str | None
    sort: int


@dataclass(frozen=True, slots=True)
class DemoProduct:
    sku: str
    category_slug: str
    name_zh: str
    name_en: str
    description_zh: str
    description_en: str
    base_price: int
    pool: str
    codes: int
    #: Groups and characters per group of the generated codes (4×4: XXXX-XXXX-XXXX-XXXX).
    code_shape: tuple[int, int] = (4, 4)
    max_per_order: int | None = None
    low_stock_threshold: int = 5
    tier_prices: tuple[tuple[str, int], ...] = ()

    def demo_codes(self) -> list[str]:
        """The same codes on every run: a generator seeded with the SKU, not `secrets`."""
        rng = random.Random(self.sku)
        groups, width = self.code_shape
        return [
            "-".join("".join(rng.choices(CODE_ALPHABET, k=width)) for _ in range(groups))
            for _ in range(self.codes)
        ]


@dataclass(frozen=True, slots=True)
class DemoMember:
    telegram_id: int
    username: str
    display_name: str
    locale: str
    tier_key: str
    balance: int


CATEGORIES = (
    DemoCategory("game-cards", "游戏点卡", "Game cards", None, 10),
    DemoCategory("tencent", "腾讯", "Tencent", "game-cards", 10),
    DemoCategory("netease", "网易", "NetEase", "game-cards", 20),
    DemoCategory("steam", "Steam", "Steam", "game-cards", 30),
    DemoCategory("phone-topups", "话费充值", "Phone top-ups", None, 20),
    DemoCategory("software", "软件授权", "Software keys", None, 30),
)

PRODUCTS = (
    DemoProduct(
        "QB-10",
        "tencent",
        "Q币 10元",
        "Tencent Q-Coins ¥10",
        "腾讯Q币充值卡，面值10元，可在 pay.qq.com 充值。",
        "Tencent Q-Coin card worth ¥10, redeem at pay.qq.com.",
        990,
        "basic",
        codes=40,
    ),
    DemoProduct(
        "QB-100",
        "tencent",
        "Q币 100元",
        "Tencent Q-Coins ¥100",
        "腾讯Q币充值卡，面值100元。",
        "Tencent Q-Coin card worth ¥100.",
        9800,
        "basic",
        codes=30,
    ),
    DemoProduct(
        "NETEASE-15",
        "netease",
        "网易一卡通 15元（150点）",
        "NetEase One Card ¥15 (150 points)",
        "网易一卡通点卡，可用于梦幻西游、大话西游等网易游戏。",
        "NetEase prepaid card for Fantasy Westward Journey and other NetEase games.",
        1480,
        "basic",
        codes=30,
    ),
    DemoProduct(
        "STEAM-50",
        "steam",
        "Steam 钱包充值卡 ¥50",
        "Steam Wallet card ¥50",
        "Steam 国区钱包充值码，面值50元。",
        "Steam Wallet code for the China region, worth ¥50.",
        4900,
        "selected",
        codes=25,
        code_shape=(3, 5),
    ),
    DemoProduct(
        "STEAM-200",
        "steam",
        "Steam 钱包充值卡 ¥200",
        "Steam Wallet card ¥200",
        "Steam 国区钱包充值码，面值200元；黄金会员专享价。",
        "Steam Wallet code for the China region, worth ¥200; a special price for Gold.",
        19500,
        "selected",
        codes=20,
        code_shape=(3, 5),
        tier_prices=(("gold", 15800),),
    ),
    DemoProduct(
        "CMCC-100",
        "phone-topups",
        "中国移动 话费 ¥100",
        "China Mobile top-up ¥100",
        "中国移动全国通用充值卡，面值100元。",
        "China Mobile nationwide top-up card worth ¥100.",
        9850,
        "basic",
        codes=40,
        code_shape=(4, 5),
    ),
    DemoProduct(
        "CUCC-50",
        "phone-topups",
        "中国联通 话费 ¥50",
        "China Unicom top-up ¥50",
        "中国联通全国通用充值卡，面值50元。",
        "China Unicom nationwide top-up card worth ¥50.",
        4930,
        "basic",
        codes=30,
        code_shape=(4, 5),
    ),
    DemoProduct(
        "WIN11-PRO",
        "software",
        "Windows 11 专业版 零售密钥",
        "Windows 11 Pro retail key",
        "Windows 11 专业版零售版产品密钥，一机一码，永久激活。",
        "Windows 11 Pro retail product key, one PC, lifetime activation.",
        19900,
        "selected",
        codes=25,
        code_shape=(5, 5),
        max_per_order=5,
    ),
    DemoProduct(
        "OFFICE-2021-PP",
        "software",
        "Office 2021 专业增强版",
        "Office 2021 Professional Plus",
        "Office 2021 专业增强版产品密钥，含 Word、Excel、PowerPoint、Outlook 等。",
        "Office 2021 Professional Plus key: Word, Excel, PowerPoint, Outlook and more.",
        29900,
        "exclusive",
        codes=20,
        code_shape=(5, 5),
    ),
    DemoProduct(
        "WINSRV-2022-STD",
        "software",
        "Windows Server 2022 标准版",
        "Windows Server 2022 Standard",
        "Windows Server 2022 标准版产品密钥，库存紧张。",
        "Windows Server 2022 Standard product key, stock running low.",
        89900,
        "exclusive",
        codes=3,
        code_shape=(5, 5),
        low_stock_threshold=5,
    ),
)

MEMBERS = (
    DemoMember(10001, "demo_member", "演示会员", "zh_CN", "member", 10000),
    DemoMember(10002, "demo_silver", "Demo Silver", "en", "silver", 50000),
    DemoMember(10003, "demo_gold", "黄金演示", "zh_CN", "gold", 200000),
    DemoMember(10004, "demo_diamond", "Demo Diamond", "en", "diamond", 1000000),
)

#: Who the terminal chat acts as by default: a demo member with money to spend.
DEMO_BUYER = MEMBERS[0].telegram_id


@dataclass(frozen=True, slots=True)
class DemoReport:
    categories_created: int
    categories_existing: int
    products_created: int
    products_existing: int
    codes_added: int
    codes_existing: int
    members_created: int
    members_existing: int


async def is_empty(db: Database) -> bool:
    """True before any product exists (`make run --if-empty` seeds the demo then)."""
    async with db.read() as session:
        return await session.scalar(select(Product.id).limit(1)) is None


async def _seed_members(db: Database, clock: Clock, ladder: Ladder) -> int:
    """Insert the demo members that are missing, each with a top-up matching the balance.

    A tier the configured ladder lacks falls back to its entry tier. Returns how many
    were created.
    """
    created = 0
    now = clock.now()
    for demo in MEMBERS:
        tier_key = demo.tier_key if demo.tier_key in ladder.by_key else ladder.entry.key
        async with db.transaction() as session:
            member_id = await session.scalar(
                insert_ignoring_conflict(session, Member),
                {
                    "telegram_id": demo.telegram_id,
                    "username": demo.username,
                    "display_name": demo.display_name,
                    "locale": demo.locale,
                    "referral_code": new_referral_code(),
                    "balance": demo.balance,
                    "tier_key": tier_key,
                    "tier_source": "admin",
                    "created_at": now,
                },
            )
            if member_id is None:
                continue
            session.add(
                WalletEntry(
                    member_id=member_id,
                    kind="topup",
                    amount=demo.balance,
                    balance_after=demo.balance,
                    reason="demo top-up",
                    actor=DEMO_ACTOR,
                    created_at=now,
                )
            )
            created += 1
    return created


async def seed_demo(
    shop_db: Database, vault: CodeVault, clock: Clock, ladder: Ladder
) -> DemoReport:
    """Fill the shop with the demo; run it again and nothing is added twice."""
    catalog = Catalog(shop_db, clock, ladder=ladder)
    stock = StockService(shop_db, vault, clock)
    async with shop_db.read() as session:
        slugs = set(await session.scalars(select(Category.slug)))
        skus = set(await session.scalars(select(Product.sku)))

    new_categories = [c for c in CATEGORIES if c.slug not in slugs]
    for category in new_categories:
        await catalog.upsert_category(
            category.slug, category.name_zh, category.name_en, category.parent_slug, category.sort
        )

    new_products = [p for p in PRODUCTS if p.sku not in skus]
    for product in new_products:
        await catalog.create_product(
            product.sku,
            product.category_slug,
            product.name_zh,
            product.name_en,
            product.base_price,
            pool=product.pool,
            description_zh=product.description_zh,
            description_en=product.description_en,
            max_per_order=product.max_per_order,
            low_stock_threshold=product.low_stock_threshold,
        )
        for tier_key, price in product.tier_prices:
            if tier_key in ladder.by_key:
                await catalog.set_tier_price(product.sku, tier_key, price)

    codes_added = codes_existing = 0
    for product in PRODUCTS:
        report = await stock.import_codes(product.sku, product.demo_codes())
        codes_added += report.added
        codes_existing += report.duplicate

    members_created = await _seed_members(shop_db, clock, ladder)
    return DemoReport(
        categories_created=len(new_categories),
        categories_existing=len(CATEGORIES) - len(new_categories),
        products_created=len(new_products),
        products_existing=len(PRODUCTS) - len(new_products),
        codes_added=codes_added,
        codes_existing=codes_existing,
        members_created=members_created,
        members_existing=len(MEMBERS) - members_created,
    )
