"""The reseller API's route table: every endpoint, its models and its handler, once.

`ROUTES` is the one list both `bot.api.mount` serves and `bot.api.openapi` documents,
so the document names exactly the routes, bodies, queries and answers that run.
Handlers only translate: they call the shop's services (`core/`) for the key's member,
and turn what comes back into the models; every rule (price, stock, idempotency, tiers,
reservations) is the shop's own, the same the chat goes through.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from bot.api import models
from core.api_keys import ApiCaller
from core.models import OrderStatus
from core.orders import OrderView
from core.reservations import ReservationView
from core.shop import Shop

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Call:
    """One signed request as a handler sees it: validated, its caller known."""

    shop: Shop
    caller: ApiCaller
    body: BaseModel | None
    query: BaseModel | None
    #: The integer path parameters (`{order_id}`...).
    ids: dict[str, int]

    def parsed(self, model: type[M]) -> M:
        """The body or query, as the route's model."""
        for value in (self.body, self.query):
            if isinstance(value, model):
                return value
        raise TypeError(f"this route has no {model.__name__}")

    @property
    def currency(self) -> str:
        return self.shop.settings.shop_currency


@dataclass(frozen=True, slots=True)
class Reply:
    answer: BaseModel
    status: int = 200


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: what it reads, what it answers, and which refusals it may give
    besides those of every signed route (401, 403, 429)."""

    method: str
    #: OpenAPI style; `{name}` parameters are positive integers.
    path: str
    summary: str
    handler: Handler
    answer: type[BaseModel]
    status: int = 200
    body: type[models.Request] | None = None
    query: type[models.Request] | None = None
    #: A tier capability the caller's tier needs for this route (403 naming the tier).
    capability: str | None = None
    refusals: tuple[int, ...] = field(default=())
    #: A second success status (a replayed order is a 200, a new one a 201).
    also: tuple[int, ...] = field(default=())

    @property
    def ids(self) -> list[str]:
        """The names of the path's integer parameters, in order."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


# --- translating the shop's views ---------------------------------------------------------


def _order(view: OrderView, currency: str, codes: list[str] | None = None) -> models.Order:
    return models.Order(
        id=view.id,
        sku=view.sku,
        names=view.product_names,
        quantity=view.quantity,
        unit_price=view.unit_price,
        discount=view.discount,
        total=view.total,
        currency=currency,
        status=view.status.value,
        created_at=view.created_at,
        codes=codes,
    )


def _reservation(view: ReservationView) -> models.Reservation:
    return models.Reservation(
        id=view.id,
        sku=view.sku,
        names=view.product_names,
        quantity=view.quantity,
        remaining=view.remaining,
        created_at=view.created_at,
        expires_at=view.expires_at,
    )


# --- handlers -------------------------------------------------------------------------------


async def products(call: Call) -> Reply:
    tier, lines = await call.shop.catalog.price_list(call.caller.member_id)
    return Reply(
        models.ProductList(
            tier=tier,
            products=[
                models.Product(
                    sku=line.product.sku,
                    names=line.product.names,
                    unit_price=line.unit_price,
                    currency=call.currency,
                    stock=line.product.stock,
                    reserved=line.held,
                    max_per_order=line.max_per_order,
                )
                for line in lines
            ],
        )
    )


async def balance(call: Call) -> Reply:
    shop, member_id = call.shop, call.caller.member_id
    member = await shop.members.get(member_id)
    points = await shop.points.balance(member_id)
    tier = shop.ladder.tier(member.tier_key)
    return Reply(
        models.Balance(
            balance=member.balance,
            currency=call.currency,
            points=points.available,
            tier=models.Tier(key=tier.key, names=dict(tier.names)),
        )
    )


async def place_order(call: Call) -> Reply:
    """Buy and hand over the codes at once; the same idempotency key, the same order.

    The codes are in the answer, so the order counts as delivered once the answer is
    made (which is when the buyer's referrer earns commission, as in the chat); that
    step failing never takes the codes back.
    """
    shop, member_id = call.shop, call.caller.member_id
    asked = call.parsed(models.PlaceOrder)
    product_id = await shop.catalog.product_id(asked.sku)
    purchase = await shop.orders.place(
        member_id,
        product_id,
        asked.quantity,
        idempotency_key=models.IDEMPOTENCY_PREFIX + asked.idempotency_key,
        max_total=asked.max_total,
    )
    order = purchase.order
    status = order.status
    if status is OrderStatus.PAID:
        try:
            await shop.orders.mark_delivered(order.id)
            status = OrderStatus.DELIVERED
        except Exception:
            log.exception("api: order %s handed over but not marked delivered", order.id)
    placed = _order(order, call.currency, purchase.codes).model_dump()
    placed.update(status=status.value, balance_after=purchase.balance_after)
    answer = models.PlacedOrder(**placed, created=purchase.created)
    return Reply(answer, 201 if purchase.created else 200)


async def get_order(call: Call) -> Reply:
    view, codes = await call.shop.orders.reveal(call.caller.member_id, call.ids["order_id"])
    return Reply(_order(view, call.currency, codes))


async def list_orders(call: Call) -> Reply:
    asked = call.parsed(models.OrdersSince)
    views = await call.shop.orders.since(call.caller.member_id, asked.since, limit=asked.limit)
    return Reply(models.OrderList(orders=[_order(view, call.currency) for view in views]))


async def reservations(call: Call) -> Reply:
    views = await call.shop.reservations.mine(call.caller.member_id)
    return Reply(models.ReservationList(reservations=[_reservation(view) for view in views]))


async def reserve(call: Call) -> Reply:
    shop = call.shop
    asked = call.parsed(models.Reserve)
    product_id = await shop.catalog.product_id(asked.sku)
    view = await shop.reservations.reserve(call.caller.member_id, product_id, asked.quantity)
    return Reply(_reservation(view), 201)


async def release(call: Call) -> Reply:
    reservation_id = call.ids["reservation_id"]
    released = await call.shop.reservations.release(call.caller.member_id, reservation_id)
    return Reply(models.Released(id=reservation_id, released=released))


PREFIX = "/api/v1"

ROUTES: tuple[Route, ...] = (
    Route(
        "GET", f"{PREFIX}/products",
        "Products you may buy: your price, the stock you can buy, the most per order.",
        products, models.ProductList,
    ),
    Route(
        "GET", f"{PREFIX}/balance", "Your wallet balance, points and tier.",
        balance, models.Balance,
    ),
    Route(
        "POST", f"{PREFIX}/orders",
        "Buy: pays from your balance and answers with the codes. The same idempotency_key"
        " returns the same order (200); a new order is a 201.",
        place_order, models.PlacedOrder, status=201, also=(200,), body=models.PlaceOrder,
        refusals=(400, 404, 409, 422),
    ),
    Route(
        "GET", f"{PREFIX}/orders", "Your orders placed at or after `since`, oldest first.",
        list_orders, models.OrderList, query=models.OrdersSince, refusals=(422,),
    ),
    Route(
        "GET", f"{PREFIX}/orders/{{order_id}}", "One of your orders, with its codes.",
        get_order, models.Order, refusals=(404,),
    ),
    Route(
        "GET", f"{PREFIX}/reservations", "Your open reservations.",
        reservations, models.ReservationList, capability="reservation",
    ),
    Route(
        "POST", f"{PREFIX}/reservations",
        "Reserve codes of a product for you alone (adds to an open hold of it).",
        reserve, models.Reservation, status=201, body=models.Reserve,
        capability="reservation", refusals=(400, 404, 409, 422),
    ),
    Route(
        "DELETE", f"{PREFIX}/reservations/{{reservation_id}}",
        "Release a reservation early: its codes go back on the shelf.",
        release, models.Released, capability="reservation", refusals=(404,),
    ),
)  # fmt: skip
