"""Importing codes: the report, dedupe across files, keys and racing imports, no plaintext."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select
from sqlalchemy.engine.url import make_url

from core.catalog import Catalog
from core.clock import ManualClock
from core.errors import ErrorCode, ShopError
from core.models import Code
from core.stock import MAX_CODE_LENGTH, StockService
from core.uow import Database
from core.vault import CodeVault


@pytest.fixture
async def product_id(db: Database, clock: ManualClock) -> int:
    catalog = Catalog(db, clock)
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
