"""The one wiring place: settings in, every service out.

`cardshop` commands, the bot adapters and the tests all build the shop here, so what
runs in production is what the tests exercise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.admin import AdminActions, Operations
from core.api_keys import ApiKeys
from core.audit import Audit
from core.broadcast import Broadcasts
from core.catalog import Catalog
from core.checkin import CheckIns
from core.clock import Clock
from core.commission import Referrals
from core.config import EPAY_NOTIFY_PATH, EPAY_RETURN_PATH, Settings, resolve_code_keys
from core.export import Exports
from core.jobs import Jobs, Notifier
from core.ladder import Ladder, load_ladder
from core.manager import ManagerRelay
from core.members import Members
from core.orders import Orders
from core.payments import EpayProvider, Payments, Provider, StarsProvider
from core.points import Points
from core.reservations import Reservations
from core.reviews import Reviews
from core.stats import Stats
from core.stock import StockService
from core.tickets import Tickets
from core.tiers.moves import Promotions, Tiers
from core.tiers.review import QuarterlyReview
from core.uow import Database
from core.vault import CodeVault
from core.wallet import Wallet

log = logging.getLogger(__name__)


@dataclass
class Shop:
    settings: Settings
    db: Database
    clock: Clock
    ladder: Ladder
    vault: CodeVault
    members: Members
    catalog: Catalog
    stock: StockService
    wallet: Wallet
    referrals: Referrals
    orders: Orders
    tiers: Tiers
    quarterly_review: QuarterlyReview
    points: Points
    checkins: CheckIns
    reviews: Reviews
    tickets: Tickets
    manager: ManagerRelay
    #: Wallet top-ups by the configured providers.
    payments: Payments
    #: Stock reservation (库存预留).
    reservations: Reservations
    #: Reseller API keys (API接口对接).
    api_keys: ApiKeys
    #: Running the shop: audit, admin actions, broadcasts, stats, exports.
    operations: Operations = field(init=False)

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
    tiers = Tiers(db, ladder, clock)
    promotions = Promotions(tiers)
    shop = Shop(
        settings=settings,
        db=db,
        clock=clock,
        ladder=ladder,
        vault=vault,
        members=Members(db, clock, ladder.entry.key),
        catalog=Catalog(db, clock, ladder=ladder),
        stock=StockService(db, vault, clock),
        wallet=Wallet(db),
        referrals=Referrals(db, clock),
        orders=Orders(db, ladder, vault, clock, on_paid=promotions.after_purchase),
        tiers=tiers,
        quarterly_review=QuarterlyReview(db, ladder, clock, settings.zone),
        points=Points(db, ladder, clock),
        checkins=CheckIns(db, ladder, clock, settings.zone, on_checkin=promotions.after_checkin),
        reviews=Reviews(db, ladder, clock, on_activity=promotions.after_activity),
        tickets=Tickets(db, ladder, clock, on_activity=promotions.after_activity),
        manager=ManagerRelay(db, ladder, clock),
        payments=Payments(
            db, clock, settings.zone, ladder.topup, payment_providers(settings), Audit(db, clock)
        ),
        reservations=Reservations(db, ladder, clock, tiers, Audit(db, clock)),
        api_keys=ApiKeys(db, ladder, vault, clock, Audit(db, clock)),
    )
    shop.operations = _operations(shop)
    return shop


def payment_providers(settings: Settings) -> list[Provider]:
    """The providers whose settings are complete, in the order buyers see them.

    Stars need STARS_PER_YUAN; 易支付 needs its gateway, merchant id and key, and
    PUBLIC_URL for the gateway to call back. A half-configured 易支付 is left out, and the
    log says which setting is missing.
    """
    providers: list[Provider] = []
    if settings.stars_per_yuan is not None:
        providers.append(StarsProvider(settings.stars_per_yuan))
    url, pid, key, public = (
        settings.epay_url, settings.epay_pid, settings.epay_key, settings.public_url
    )  # fmt: skip
    if url and pid and key and public and settings.epay_methods:
        providers.append(
            EpayProvider(
                url,
                pid,
                key.get_secret_value(),
                notify_url=public + EPAY_NOTIFY_PATH,
                return_url=public + EPAY_RETURN_PATH,
                methods=settings.epay_methods,
            )
        )
    elif url or pid or key:
        named = {"EPAY_URL": url, "EPAY_PID": pid, "EPAY_KEY": key, "PUBLIC_URL": public}
        missing = ", ".join(name for name, value in named.items() if not value)
        log.warning("易支付 is not offered: %s not set", missing or "EPAY_METHODS")
    return providers


def build_jobs(shop: Shop, notifier: Notifier) -> Jobs:
    """The scheduled jobs over the shop's services, telling members through `notifier`."""
    return Jobs(
        shop.db, shop.clock, shop.settings.zone, notifier, tiers=shop.tiers,
        review=shop.quarterly_review, points=shop.points,
        tickets=shop.tickets, catalog=shop.catalog, payments=shop.payments,
        reservations=shop.reservations, api_keys=shop.api_keys,
    )  # fmt: skip


def _operations(shop: Shop) -> Operations:
    """The services for running the shop, over the shop's own."""
    audit = Audit(shop.db, shop.clock)
    broadcasts = Broadcasts(shop.db, shop.ladder, shop.clock, rate=shop.settings.broadcast_rate)
    admin = AdminActions(
        shop.db, shop.clock, audit, broadcasts, members=shop.members, tiers=shop.tiers,
        manager=shop.manager, catalog=shop.catalog, stock=shop.stock, orders=shop.orders,
        reservations=shop.reservations,
    )  # fmt: skip
    return Operations(
        audit=audit,
        admin=admin,
        broadcasts=broadcasts,
        stats=Stats(shop.db, shop.clock, shop.settings.zone, shop.tickets),
        exports=Exports(shop.db, shop.settings.zone, shop.tiers),
    )
