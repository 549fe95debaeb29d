"""Fixtures: a real database per test, built by the migrations.

SQLite runs on a file in WAL mode (the shipped default); PostgreSQL runs when
`TEST_DATABASE_URL` is set (`.ci/run` sets it), otherwise those cases (every one
parametrized with "postgres") are deselected and counted in one summary line. Each
database is migrated once per session: SQLite tests copy a migrated file, PostgreSQL
tests truncate every table.

Every test reads time from the fixture `clock`, handed to the shop through `build_shop`.
`TEST_WALL_CLOCK=2027-05-31T23:59:50+08:00 make test` runs the suite with the machine's
wall clock moved there, which proves no test depends on the day it runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from cryptography.fernet import Fernet
from sqlalchemy import text

from core.clock import ManualClock
from core.config import Settings, load_settings
from core.migrate import migrate_afresh, upgrade
from core.models import Base
from core.shop import Shop, build_shop
from core.uow import Database

PG_URL = os.environ.get("TEST_DATABASE_URL")
SHOP_ZONE = ZoneInfo("Asia/Shanghai")
#: Tests start at 10:00 shop time on an ordinary day.
START = datetime(2026, 11, 22, 10, 0, tzinfo=SHOP_ZONE)
TEST_KEY = Fernet.generate_key().decode()
WALL_CLOCK = os.environ.get("TEST_WALL_CLOCK")


#: How many PostgreSQL cases this run deselected, for the one summary line.
_POSTGRES_DESELECTED = pytest.StashKey[int]()


def _on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without TEST_DATABASE_URL, drop the PostgreSQL cases instead of skipping each one.

    Hundreds of identical SKIPPED lines would bury the skips that say something.
    """
    if PG_URL:
        return
    postgres = [item for item in items if _on_postgres(item)]
    if not postgres:
        return
    items[:] = [item for item in items if not _on_postgres(item)]
    config.hook.pytest_deselected(items=postgres)
    config.stash[_POSTGRES_DESELECTED] = len(postgres)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    count = config.stash.get(_POSTGRES_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"{count} PostgreSQL case{'' if count == 1 else 's'} deselected:"
            " set TEST_DATABASE_URL to run them"
        )


@pytest.fixture(autouse=True, scope="session")
def wall_clock() -> Iterator[None]:
    """The machine's clock, moved to TEST_WALL_CLOCK when it is set (ticking from there)."""
    if not WALL_CLOCK:
        yield
        return
    with time_machine.travel(datetime.fromisoformat(WALL_CLOCK), tick=True):
        yield


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "shop.db"
    asyncio.run(upgrade(_sqlite_url(path)))
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set TEST_DATABASE_URL to run these")

    asyncio.run(migrate_afresh(PG_URL))
    return PG_URL


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "shop.db"
        shutil.copy(template, path)
        return _sqlite_url(path)
    return str(request.getfixturevalue("postgres_migrated"))


#: Members whose balance is not the sum of their ledger, and ledger rows whose
#: `balance_after` is not the running sum of the member's rows up to them (by id, the
#: order the balance moved in: every entry updates the member row before its insert).
LEDGER_DRIFT = text(
    """
    SELECT 'balance' AS what, m.id AS member_id, m.balance AS recorded,
           COALESCE((SELECT SUM(w.amount) FROM wallet_entries w WHERE w.member_id = m.id), 0)
             AS ledger
      FROM members m
     WHERE m.balance <> COALESCE(
             (SELECT SUM(w.amount) FROM wallet_entries w WHERE w.member_id = m.id), 0)
    UNION ALL
    SELECT 'entry ' || CAST(id AS VARCHAR(16)), member_id, balance_after, running
      FROM (SELECT id, member_id, balance_after,
                   SUM(amount) OVER (PARTITION BY member_id ORDER BY id) AS running
              FROM wallet_entries) chain
     WHERE balance_after <> running
    """
)


async def ledger_drift(database: Database) -> list[tuple[str, int, int, int]]:
    """Where the wallet ledger and the balances disagree; [] when they match."""
    async with database.read() as session:
        rows = (await session.execute(LEDGER_DRIFT)).all()
    return [(row.what, row.member_id, row.recorded, row.ledger) for row in rows]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The database, and after the test the check that every member's ledger sums to
    their balance, row by row (one statement, whatever the test did)."""
    database = Database.from_url(database_url)
    if database.is_postgres:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database
    try:
        drift = await ledger_drift(database)
        assert drift == [], f"the ledger does not sum to the balance: {drift}"
    finally:
        await database.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        code_encryption_keys=TEST_KEY,
        data_dir=tmp_path / "data",
        # The reseller API would listen on the default HTTP_LISTEN in every scenario;
        # its tests (tests/e2e/test_api.py) turn it on with a free port.
        api_enabled=False,
        _env_file=None,
    )


@pytest.fixture
def shop(settings: Settings, db: Database, clock: ManualClock) -> Shop:
    return build_shop(settings, db=db, clock=clock)
