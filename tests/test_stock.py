"""Importing codes: the report, dedupe across files, keys and racing imports, no plaintext."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine.url import make_url

from bot import cli
from core.catalog import Catalog
from core.clock import ManualClock
from core.config import DEFAULT_TIERS_FILE
from core.errors import ErrorCode, ShopError
from core.ladder import load_ladder
from core.migrate import upgrade
from core.models import AuditEntry, Category, Code, Member, Product
from core.shop import Shop
from core.stock import MAX_CODE_LENGTH, SOLD_TWICE_MARK, Duplicate, StockService
from core.uow import Database
from core.vault import CodeVault
from tests.conftest import PG_URL, START, TEST_KEY
from tests.factories import make_order


def _catalog(db: Database, clock: ManualClock) -> Catalog:
    return Catalog(db, clock, ladder=load_ladder(DEFAULT_TIERS_FILE))


@pytest.fixture
async def product_id(db: Database, clock: ManualClock) -> int:
    catalog = _catalog(db, clock)
    await catalog.upsert_category("games", "游戏点卡", "Game cards")
    product = await catalog.create_product("QB-10", "games", "Q币 10元", "Q-Coins ¥10", 990)
    return product.id


async def _stored(db: Database, vault: CodeVault) -> list[tuple[str, str]]:
    """Every stored code of the product decrypted, with its digest."""
    async with db.read() as session:
        rows = (await session.execute(select(Code.secret, Code.digest).order_by(Code.id))).all()
    return [(vault.decrypt(secret), digest) for secret, digest in rows]


def _codes(count: int, prefix: str = "CODE") -> list[str]:
    return [f"{prefix}-{n:04d}-ABCD" for n in range(count)]


async def test_import_report_counts_every_kind_of_line(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    vault = CodeVault([Fernet.generate_key()])
    stock = StockService(db, vault, clock)
    await stock.import_codes("QB-10", ["OLD1-AAAA", "OLD2-BBBB"])

    report = await stock.import_codes(
        "QB-10",
        [
            "NEW1-CCCC\n",
            "",
            "   ",
            "  NEW2-DDDD  ",
            "\ufeffNEW3-EEEE",
            "NEW1-CCCC",  # repeated in the file
            " NEW2-DDDD\r\n",  # repeated in the file, with other spacing
            "OLD1-AAAA",  # already in stock
            "OLD2-BBBB",  # already in stock
            "HAS SPACE",  # rejected: whitespace inside
            "TAB\tINSIDE",  # rejected
            "BELL\x07CODE",  # rejected: control character
            "ZERO\u200bWIDTH",  # rejected: invisible formatting
            "X" * (MAX_CODE_LENGTH + 1),  # rejected: too long
            "Y" * MAX_CODE_LENGTH,  # longest accepted
        ],
    )

    assert (report.added, report.duplicate, report.rejected, report.stock_after) == (4, 4, 5, 6)
    stored = await _stored(db, vault)
    assert sorted(code for code, _ in stored) == sorted(
        ["OLD1-AAAA", "OLD2-BBBB", "NEW1-CCCC", "NEW2-DDDD", "NEW3-EEEE", "Y" * MAX_CODE_LENGTH]
    )
    assert all(digest == vault.digest(code) for code, digest in stored)
    assert await stock.available(product_id) == 6


async def test_a_whole_text_counts_as_lines(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    stock = StockService(db, CodeVault([Fernet.generate_key()]), clock)

    report = await stock.import_codes("QB-10", "AAAA-1111\n\nBBBB-2222\r\nAAAA-1111\n")

    assert (report.added, report.duplicate, report.rejected, report.stock_after) == (2, 1, 0, 2)


async def test_second_import_of_the_same_file_adds_nothing(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    stock = StockService(db, CodeVault([Fernet.generate_key()]), clock)
    lines = _codes(1200)  # more than one batch

    first = await stock.import_codes("QB-10", lines)
    second = await stock.import_codes("QB-10", lines)

    assert (first.added, first.duplicate, first.stock_after) == (1200, 0, 1200)
    assert (second.added, second.duplicate, second.stock_after) == (0, 1200, 1200)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Code)) == 1200


async def test_import_to_unknown_product_is_refused(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    stock = StockService(db, CodeVault([Fernet.generate_key()]), clock)
    with pytest.raises(ShopError) as caught:
        await stock.import_codes("NOPE", ["AAAA-1111"])
    assert caught.value.code is ErrorCode.PRODUCT_NOT_FOUND
    assert await stock.available(product_id) == 0


async def test_old_codes_stay_duplicates_across_key_rotation(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old_codes, new_codes = _codes(30, "OLD"), _codes(10, "NEW")
    await StockService(db, CodeVault([old_key]), clock).import_codes("QB-10", old_codes)

    rotated_vault = CodeVault([new_key, old_key])
    rotating = StockService(db, rotated_vault, clock)
    mixed = await rotating.import_codes("QB-10", old_codes + new_codes)
    assert (mixed.added, mixed.duplicate, mixed.stock_after) == (10, 30, 40)

    assert await rotating.rotate_keys() == 30
    assert await rotating.rotate_keys() == 0

    # Once rotated, the old key can go: everything reads and dedupes under the new one.
    new_only = CodeVault([new_key])
    stored = await _stored(db, new_only)
    assert sorted(code for code, _ in stored) == sorted(old_codes + new_codes)
    assert all(digest == new_only.digest(code) for code, digest in stored)
    with pytest.raises(InvalidToken):
        await _stored(db, CodeVault([old_key]))
    again = await StockService(db, new_only, clock).import_codes("QB-10", old_codes)
    assert (again.added, again.duplicate) == (0, 30)


async def test_concurrent_imports_of_one_file_add_each_code_once(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    vault = CodeVault([Fernet.generate_key()])
    lines = _codes(300)
    services = [StockService(db, vault, clock) for _ in range(5)]

    reports = await asyncio.gather(*(s.import_codes("QB-10", lines) for s in services))

    assert sum(r.added for r in reports) == 300
    assert all(r.added + r.duplicate == 300 for r in reports)
    stored = await _stored(db, vault)
    assert len(stored) == 300
    assert sorted(code for code, _ in stored) == sorted(lines)


async def test_no_code_is_stored_in_plaintext(
    database_url: str, db: Database, clock: ManualClock, product_id: int
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("reads the SQLite file's bytes")
    lines = [*_codes(50, "PLAIN"), "ZX81-QW7E-LM55-AB90"]
    stock = StockService(db, CodeVault([Fernet.generate_key()]), clock)
    assert (await stock.import_codes("QB-10", lines)).added == 51

    path = Path(str(make_url(database_url).database))
    files = [path, path.with_name(path.name + "-wal")]
    contents = b"".join(f.read_bytes() for f in files if f.exists())
    assert contents, "the database files should exist"
    assert b"Q-Coins" in contents  # the reading itself works: product names are plaintext
    leaked = [code for code in lines if code.encode() in contents]
    assert leaked == []


async def test_a_code_in_stock_for_one_product_is_a_duplicate_for_any_other(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    """A code is one thing that can be sold once: QB-100 refuses what QB-10 holds."""
    catalog = _catalog(db, clock)
    await catalog.create_product("QB-100", "games", "Q币 100元", "Q-Coins ¥100", 9800)
    vault = CodeVault([Fernet.generate_key()])
    stock = StockService(db, vault, clock)
    await stock.import_codes("QB-10", ["SHARED-1", "SHARED-2"])

    report = await stock.import_codes(
        "QB-100", ["FRESH-1", "SHARED-2", "", "SHARED-1", "FRESH-1", "SHARED-2"]
    )

    assert (report.added, report.duplicate, report.stock_after) == (1, 4, 1)
    assert report.duplicates == (
        Duplicate(line=2, held_by="QB-10"),
        Duplicate(line=4, held_by="QB-10"),
        Duplicate(line=5, held_by=None),  # repeats line 1 of this import
        Duplicate(line=6, held_by=None),
    )
    again = await stock.import_codes("QB-10", ["FRESH-1"])
    assert again.duplicates == (Duplicate(line=1, held_by="QB-100"),)
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Code)) == 3


async def test_racing_imports_to_two_products_store_a_code_once(
    db: Database, clock: ManualClock, product_id: int
) -> None:
    catalog = _catalog(db, clock)
    await catalog.create_product("QB-100", "games", "Q币 100元", "Q-Coins ¥100", 9800)
    vault = CodeVault([Fernet.generate_key()])
    lines = _codes(200)

    reports = await asyncio.gather(
        *(StockService(db, vault, clock).import_codes(sku, lines) for sku in ("QB-10", "QB-100"))
    )

    assert sum(r.added for r in reports) == 200
    for report, other in zip(reports, ("QB-100", "QB-10"), strict=True):
        assert report.added + report.duplicate == 200
        assert {d.held_by for d in report.duplicates} <= {other}
    assert len(await _stored(db, vault)) == 200


@pytest.fixture(params=["sqlite", "postgres"])
async def at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database at revision 0002; PostgreSQL is put back at head afterwards."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        await upgrade(url, "0002")
        yield url
        return
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set TEST_DATABASE_URL to run these")
    await _reset_postgres(PG_URL, "0002")
    try:
        yield PG_URL
    finally:
        await _reset_postgres(PG_URL, "head")


async def _reset_postgres(url: str, revision: str) -> None:
    db = Database.from_url(url)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await db.dispose()
    await upgrade(url, revision)


async def test_migration_0003_settles_codes_stored_under_two_products(at_0002: str) -> None:
    """Unsold copies go (a sold row wins, else the oldest); a code sold twice keeps both
    sales, the later one marked; the audit log says what was done."""
    clock = ManualClock(START)
    key = Fernet.generate_key()
    vault = CodeVault([key])
    db = Database.from_url(at_0002)
    try:
        ids = await _copies_before_0003(db, clock, vault)
        await upgrade(at_0002)
        async with db.read() as session:
            rows = dict((await session.execute(select(Code.id, Code.digest))).all())
            audit = (await session.execute(select(AuditEntry))).scalars().one()
        kept = ["x_first", "y_sold", "z_sold", "w_first", "w_later", "v_alone"]
        assert sorted(rows) == sorted(ids[name] for name in kept)
        assert rows[ids["w_later"]] == f"{SOLD_TWICE_MARK}{ids['w_later']}"
        assert rows[ids["w_first"]] == vault.digest("CODE-W")
        assert (audit.action, audit.after) == (
            "dedupe_codes",
            {"unsold_copies_removed": {"QB-100": 2, "QB-10": 1}, "sold_twice_code_ids": [
                ids["w_later"]]},
        )  # fmt: skip

        stock = StockService(db, vault, clock)
        report = await stock.import_codes("QB-100", ["CODE-X", "CODE-W"])
        assert report.duplicates == (
            Duplicate(line=1, held_by="QB-10"),
            Duplicate(line=2, held_by="QB-10"),
        )
        rotated = StockService(db, CodeVault([Fernet.generate_key(), key]), clock)
        assert await rotated.rotate_keys() == 6
        assert await rotated.rotate_keys() == 0
    finally:
        await db.dispose()


async def _copies_before_0003(db: Database, clock: ManualClock, vault: CodeVault) -> dict[str, int]:
    """Codes X, Y, Z, W stored under both products (as 0002 allowed), some sold."""
    async with db.transaction() as session:
        category = Category(slug="games", name_zh="点卡", name_en="Cards")
        session.add(category)
        await session.flush()
        ten, hundred = (
            Product(
                sku=sku,
                category_id=category.id,
                name_zh=sku,
                name_en=sku,
                base_price=990,
                created_at=clock.now(),
            )
            for sku in ("QB-10", "QB-100")
        )
        buyer = Member(telegram_id=1, referral_code="R1", created_at=clock.now())
        session.add_all([ten, hundred, buyer])
        await session.flush()
        ids: dict[str, int] = {}

        async def code(name: str, product: Product, text: str, sold_days_ago: int | None) -> None:
            order_id = None
            if sold_days_ago is not None:
                at = clock.now() - timedelta(days=sold_days_ago)
                order_id = await make_order(
                    session, buyer.id, product.id, at=at, total=990, key=name
                )
            # Only the columns 0002 had (the model has grown since): a Core insert.
            sold_at = None if sold_days_ago is None else clock.now() - timedelta(sold_days_ago)
            ids[name] = await session.scalar(
                insert(Code).values(
                    product_id=product.id, secret=vault.encrypt(text), digest=vault.digest(text),
                    order_id=order_id, added_at=clock.now(),
                    sold_at=sold_at,
                ).returning(Code.id)
            )  # fmt: skip

        await code("x_first", ten, "CODE-X", None)
        await code("x_copy", hundred, "CODE-X", None)
        await code("y_copy", hundred, "CODE-Y", None)
        await code("y_sold", ten, "CODE-Y", 3)
        await code("z_copy", ten, "CODE-Z", None)
        await code("z_sold", hundred, "CODE-Z", 2)
        await code("w_later", hundred, "CODE-W", 1)
        await code("w_first", ten, "CODE-W", 5)
        await code("v_alone", ten, "CODE-V", None)
    return ids


async def test_import_codes_command_names_the_holder_of_each_duplicate(
    shop: Shop,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await shop.catalog.upsert_category("games", "游戏点卡", "Game cards")
    for sku in ("QB-10", "QB-100"):
        await shop.catalog.create_product(sku, "games", sku, sku, 990)
    await shop.stock.import_codes("QB-10", ["SHARED-1"])
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    codes = tmp_path / "codes.txt"
    codes.write_text("NEW-1\nSHARED-1\nNEW-1\n", encoding="utf-8")

    argv = ["import-codes", "QB-100", str(codes)]
    assert await asyncio.to_thread(cli.main, argv, clock=shop.clock) == 0

    out = capsys.readouterr().out
    assert "added 1, duplicate 2, rejected 0; 1 in stock for QB-100" in out
    assert "line 2: duplicate, held by QB-10" in out
    assert "line 3: duplicate, held by an earlier line of this file" in out
