"""Every statement a member's everyday updates run reads the big tables through an index.

The shop is grown (bench.population: most codes sold, an order, a ledger row and an
activity row per sale) and `ANALYZE`d, as a live one is, so the planner has statistics
that make a scan a real choice. Then a member goes through the everyday updates (start,
shop, a category page, a product, buying one, their level, a check-in, their orders and
balance) through the real runtime, every statement is recorded with its parameters, and
each is planned again with `EXPLAIN`. A full read of a table that grows with the shop is
a failure: it would make that update slower as the shop grows (issue 11: after
`ANALYZE`, SQLite counted stock through `ix_codes_order_id`, every unsold code of every
product, and a category page took 1.39 s instead of 6 ms). On PostgreSQL sequential
scans are switched off for the planning, so a scan in the plan means no index fits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import Connection

from bench.population import Population, Size, populate
from bot.conversation import Incoming, Keyboard
from bot.framework import UPDATE_SOURCE, Registry, Runtime
from bot.handlers import ALL_CONVERSATIONS
from bot.handlers.browse import ProductCallback, ShopCallback
from bot.handlers.buy import PayCallback, QuantityCallback
from bot.handlers.start import MenuCallback
from bot.state import DbChatStore
from core.chat_state import ChatStates
from core.shop import Shop
from tests.query_plans import postgres_full_reads
from tests.test_bot_framework import RecordingTransport

#: Big enough that reading a whole table costs more than an index would on any planner.
SIZE = Size(members=2_000, products=400, codes=20_000)
#: Tables that grow with members, sales and time (products and categories are bounded by
#: what an owner lists, and are cached besides).
GROWING = (
    "members",
    "orders",
    "codes",
    "wallet_entries",
    "activity_events",
    "checkins",
    "point_lots",
    "point_movements",
    "chat_states",
    "processed_updates",
    "audit_log",
    "reservations",
    "risk_events",
)


class KeyboardTransport(RecordingTransport):
    """Also keeps the buttons of the last screen, to tap the pay button it drew."""

    def __init__(self) -> None:
        super().__init__()
        self.buttons: list[str] = []

    def _keep(self, keyboard: Keyboard | None) -> None:
        if keyboard is not None:
            self.buttons = [b.data for row in keyboard for b in row if b.data is not None]

    async def send(self, chat_id: int, text: str, keyboard: Keyboard | None = None) -> int:
        self._keep(keyboard)
        return await super().send(chat_id, text, keyboard)

    async def edit(
        self, chat_id: int, message_id: int, text: str, keyboard: Keyboard | None = None
    ) -> None:
        self._keep(keyboard)
        await super().edit(chat_id, message_id, text, keyboard)


@contextmanager
def recording() -> Iterator[list[tuple[str, Any]]]:
    """(statement, parameters) of every single-row statement run on any engine."""
    seen: list[tuple[str, Any]] = []

    def note(
        _conn: Connection, _cursor: Any, statement: str, params: Any, _ctx: Any, many: bool
    ) -> None:
        if not many and statement.lstrip().upper().startswith(
            ("SELECT", "UPDATE", "DELETE", "WITH")
        ):
            seen.append((statement, params))

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", note)


class Member:
    """One member's chat with the runtime, update ids counting up."""

    def __init__(self, runtime: Runtime, telegram_id: int) -> None:
        self.runtime = runtime
        self.id = telegram_id
        self.transport = KeyboardTransport()
        self.update_id = 0

    def _incoming(self, **fields: Any) -> Incoming:
        self.update_id += 1
        return Incoming(
            user_id=self.id,
            chat_id=self.id,
            update_id=self.update_id,
            language_code="en",
            full_name="Planned Member",
            **fields,
        )

    async def command(self, name: str) -> None:
        incoming = self._incoming(kind="command", text=f"/{name}", command=name)
        await self.runtime.handle(incoming, self.transport)

    async def tap(self, data: str) -> None:
        incoming = self._incoming(
            kind="callback",
            callback_id=f"q{self.update_id}",
            callback_data=data,
            callback_message_id=1,
        )
        await self.runtime.handle(incoming, self.transport)


async def everyday(shop: Shop, grown: Population) -> list[tuple[str, Any]]:
    """A known member's everyday updates, then their statements."""
    runtime = Runtime(
        shop,
        Registry(ALL_CONVERSATIONS),
        DbChatStore(ChatStates(shop.db, shop.clock, UPDATE_SOURCE)),
    )
    member = Member(runtime, grown.telegram_ids[len(grown.telegram_ids) // 2])
    product = grown.products[-1]
    await member.command("start")  # the first update registers the chat, not everyday
    with recording() as seen:
        await member.command("start")
        await member.tap(MenuCallback(item="shop").pack())
        await member.tap(ShopCallback(category=grown.categories[7]).pack())
        await member.tap(ProductCallback(product=product).pack())
        await member.tap(QuantityCallback(product=product, quantity=1).pack())
        pay = [data for data in member.transport.buttons if data.startswith(PayCallback.prefix)]
        assert pay, member.transport.sent[-1:]
        await member.tap(pay[0])
        await member.command("level")
        await member.command("checkin")
        await member.tap(MenuCallback(item="orders").pack())
        await member.tap(MenuCallback(item="balance").pack())
    assert not [a for a in member.transport.answers if a[2]], member.transport.answers
    return seen


async def test_everyday_statements_read_growing_tables_through_indexes(
    shop: Shop,
) -> None:
    grown = await populate(shop.db, shop.vault, shop.clock, SIZE)
    seen = await everyday(shop, grown)
    assert len(seen) > 10
    failures = []
    for statement, params in dict(seen).items():
        async with shop.db.engine.connect() as conn:
            if shop.db.is_postgres:
                await conn.execute(text("SET enable_seqscan = off"))
                rows = await conn.exec_driver_sql("EXPLAIN " + statement, params)
                plan = [str(row[0]) for row in rows]
                full = postgres_full_reads(plan, GROWING)
            else:
                rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
                plan = [str(row[-1]) for row in rows]
                full = _sqlite_full_reads(plan)
            await conn.rollback()
        full += _stock_read_elsewhere(statement, plan)
        if full:
            failures.append(statement + "\n  " + "\n  ".join(plan))
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_everyday_statement_is_prepared_again_on_every_run(shop: Shop) -> None:
    """SQLite prepares a statement again, as if the schema had changed, on every run in
    which a bound value could decide whether a partial index applies (`kind = ?` on a
    table with an index `WHERE kind = 'trip'`). The purchase's SELECT cost 300 µs
    instead of 30 that way. Each everyday statement is run twice here on one connection,
    in a transaction rolled back, and SQLite's own count of re-preparations
    (`sqlite_stmt.reprep`) must stay at zero."""
    grown = await populate(shop.db, shop.vault, shop.clock, SIZE)
    seen = await everyday(shop, grown)
    statements = dict(seen)
    driver = sqlite3.connect(shop.db.engine.url.database or "", isolation_level=None)
    try:
        driver.execute("BEGIN")
        for statement, params in statements.items():
            for _ in range(2):
                driver.execute(statement, params).fetchall()
        again = [sql for (sql,) in driver.execute("SELECT sql FROM sqlite_stmt WHERE reprep > 0")]
        driver.execute("ROLLBACK")
    finally:
        driver.close()
    assert len(statements) > 10
    assert again == []


#: The only indexes that hold unsold codes and nothing else (core/models.py, `Code`).
SHELF_INDEXES = ("ix_codes_available", "ix_codes_reserved")


def _stock_read_elsewhere(statement: str, plan: list[str]) -> list[str]:
    """Unsold codes (a stock count, a claim) read through any index but the shelf's.

    An equality search on another index is no scan, yet it can be as long as one: after
    `ANALYZE` SQLite took a plain index on `order_id` for `order_id IS NULL`, reading the
    unsold codes of every product for a count of one.
    """
    if "order_id IS NULL" not in statement:
        return []
    reads = [
        line.strip()
        for line in plan
        if line.startswith(("SEARCH codes", "SCAN codes"))  # SQLite
        or ("Scan" in line and " on codes" in line and "Bitmap Heap Scan" not in line)
        or "Bitmap Index Scan on ix_codes" in line  # PostgreSQL: the heap scan's index
    ]
    return [
        line
        for line in reads
        if "PRIMARY KEY" not in line
        and "using pk_codes" not in line
        and not any(index in line for index in SHELF_INDEXES)
    ]


def _sqlite_full_reads(plan: list[str]) -> list[str]:
    """A scan of a growing table (a covering index walked end to end is one too), or an
    automatic index, which SQLite builds by scanning the table on every run."""
    return [
        line
        for line in plan
        if "AUTOMATIC" in line
        or any(line.startswith((f"SCAN {table}", f"SCAN {table} ")) for table in GROWING)
    ]
