"""The one wiring place: settings in, every service out.

`cardshop` commands, the bot adapters and the tests all build the shop here, so what
runs in production is what the tests exercise.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.clock import Clock
from core.config import Settings, resolve_code_keys
from core.ladder import Ladder, load_ladder
from core.members import Members
from core.orders import Orders
from core.uow import Database
from core.vault import CodeVault
from core.wallet import Wallet


@dataclass
class Shop:
    settings: Settings
    db: Database
    clock: Clock
    ladder: Ladder
    vault: CodeVault
    members: Members
    wallet: Wallet
    orders: Orders

    async def close(self) -> None:
        await self.db.dispose()


def build_shop(
    settings: Settings, *, db: Database | None = None, clock: Clock | None = None
) -> Shop:
    """Assemble the services over one database; nothing touches the network yet."""
    db = db or Database.from_url(settings.database_url)
    clock = clock or Clock()
    ladder = load_ladder(settings.tiers_file)
    vault = CodeVault(resolve_code_keys(settings))
    return Shop(
        settings=settings,
        db=db,
        clock=clock,
        ladder=ladder,
        vault=vault,
        members=Members(db, clock, ladder.entry.key),
        wallet=Wallet(db, clock),
        orders=Orders(db, ladder, vault, clock),
    )
