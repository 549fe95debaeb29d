"""The catalog: categories two levels deep, products with their tier prices and live stock.

Buyers' screens (`browse`, `offer`, `quote`) are the busiest reads of the shop, so
they are drawn from a copy of the definitions (categories, products, tier prices) kept
in memory, plus ONE statement per screen for what must be read fresh: the member's tier,
balance, points and per-account prices, the stock of the products shown, and the
catalog's revision. Triggers bump that revision in the transaction of every change to
the definitions, whoever makes it (this process, a `cardshop` command, another worker,
a shell), so a screen whose statement reads the revision its copy was loaded at is
drawn from current definitions; otherwise the copy is reloaded and the statement run
again. A price change therefore shows on the very next screen and stock is never
cached. The purchase itself (`Orders.place`) prices from its own transaction.

The staff's reads and writes go to the database directly. Stock is counted through the
partial index on available codes (`order_id IS NULL`), so it stays cheap however many
codes were sold.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, get_args

from sqlalchemy import ColumnElement, Integer, Select, and_, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core import pricing
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder, Pool
from core.members import load_member
from core.models import (
    CatalogRevision,
    Category,
    Code,
    Member,
    MemberPrice,
    Product,
    TierPrice,
)
from core.points import available_points
from core.pricing import PricingInput, Quote
from core.sql import insert_ignoring_conflict
from core.uow import Database

#: The locale every name must exist in and every lookup falls back to.
FALLBACK_LOCALE = "en"
POOLS: frozenset[str] = frozenset(get_args(Pool))
SKU_PATTERN = re.compile(r"[A-Za-z0-9_-]{2,64}")
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Matches the width of the name columns, so a long name is refused, not truncated.
NAME_MAX = 128

T = TypeVar("T")

#: Available codes of the product in the enclosing query (uses `ix_codes_available`);
#: codes a member holds under a reservation are nobody else's stock, so never counted.
_STOCK = (
    select(func.count(Code.id))
    .where(Code.product_id == Product.id, Code.order_id.is_(None), Code.reserved_by.is_(None))
    .correlate(Product)
    .scalar_subquery()
)
#: Unsold codes of the product in the enclosing query that its member holds under a
#: reservation (uses `ix_codes_reserved`): stock for that member alone.
_HELD = (
    select(func.count(Code.id))
    .where(
        Code.product_id == Product.id,
        Code.order_id.is_(None),
        Code.reserved_by == Member.id,
    )
    .correlate(Product, Member)
    .scalar_subquery()
)
_CHILD = aliased(Category)
_CHILDREN = (
    select(func.count(_CHILD.id))
    .where(_CHILD.parent_id == Category.id)
    .correlate(Category)
    .scalar_subquery()
)


#: The catalog's revision as the triggers keep it; no row yet reads as 0.
_REVISION = select(func.coalesce(func.max(CatalogRevision.revision), 0)).scalar_subquery()


def _localized(texts: dict[str, str], locale: str) -> str:
    return texts.get(locale) or texts[FALLBACK_LOCALE]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a longer list; `page` counts from 1."""

    items: tuple[T, ...]
    page: int
    page_size: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @classmethod
    def of(cls, items: Sequence[T], page: int, page_size: int) -> Page[T]:
        """The `page`th `page_size` of `items`, or the last page when past it (a button
        drawn before the list shrank)."""
        last = max(1, -(-len(items) // page_size))
        page = min(max(page, 1), last)
        start = (page - 1) * page_size
        return cls(tuple(items[start : start + page_size]), page, page_size, len(items))


@dataclass(frozen=True, slots=True)
class CategoryView:
    id: int
    parent_id: int | None
    slug: str
    names: dict[str, str]
    sort: int
    children: int

    def name(self, locale: str) -> str:
        return _localized(self.names, locale)

    @classmethod
    def of(cls, row: Category, children: int) -> CategoryView:
        return cls(
            id=row.id,
            parent_id=row.parent_id,
            slug=row.slug,
            names={"zh_CN": row.name_zh, "en": row.name_en},
            sort=row.sort,
            children=children,
        )


@dataclass(frozen=True, slots=True)
class ProductView:
    id: int
    sku: str
    category_id: int
    names: dict[str, str]
    descriptions: dict[str, str]
    #: Price before any tier discount, in 分.
    base_price: int
    pool: str
    max_per_order: int | None
    low_stock_threshold: int
    active: bool
    sort: int
    #: Fixed prices in 分 that replace a tier's discount on this product.
    tier_prices: dict[str, int]
    #: Codes not yet sold.
    stock: int

    def name(self, locale: str) -> str:
        return _localized(self.names, locale)

    def description(self, locale: str) -> str:
        return _localized(self.descriptions, locale)

    @classmethod
    def of(cls, row: Product, stock: int, tier_prices: dict[str, int]) -> ProductView:
        return cls(
            id=row.id,
            sku=row.sku,
            category_id=row.category_id,
            names={"zh_CN": row.name_zh, "en": row.name_en},
            descriptions={"zh_CN": row.description_zh, "en": row.description_en},
            base_price=row.base_price,
            pool=row.pool,
            max_per_order=row.max_per_order,
            low_stock_threshold=row.low_stock_threshold,
            active=row.active,
            sort=row.sort,
            tier_prices=tier_prices,
            stock=stock,
        )


@dataclass(frozen=True, slots=True)
class Offer:
    """A product as one member sees it now: their quote, or the refusal that stands instead."""

    #: With the stock read for this screen.
    product: ProductView
    quote: Quote | None
    #: Why there is no quote (the tier lock, no stock, the quantity...); None with a quote.
    refusal: ShopError | None
    #: Points the member could spend right now.
    points: int
    #: Of the product's stock, the codes this member holds under a reservation.
    held: int = 0

    def _refused(self, code: ErrorCode) -> bool:
        return self.refusal is not None and self.refusal.code == code

    @property
    def locked(self) -> bool:
        """The member's tier may not buy this product (a higher tier opens it)."""
        return self._refused(ErrorCode.NOT_ALLOWED_FOR_TIER)

    @property
    def opener(self) -> str | None:
        """The key of the lowest tier that may buy a locked product, if any may."""
        if self.refusal is None or not self.locked:
            return None
        required: str | None = self.refusal.params.get("required")
        return required

    @property
    def sold_out(self) -> bool:
        """No code left (not merely fewer than the quantity asked for)."""
        return self._refused(ErrorCode.OUT_OF_STOCK) and self.product.stock == 0

    def quoted(self) -> Quote:
        """The quote, or the refusal raised."""
        if self.quote is None:
            assert self.refusal is not None
            raise self.refusal
        return self.quote


@dataclass(frozen=True, slots=True)
class CategoryPage:
    """One catalog screen for one member: a category's children, or a page of its offers."""

    #: None for the top level.
    category: CategoryView | None
    children: tuple[CategoryView, ...]
    #: Empty for a category that has children (products live in leaf categories).
    offers: Page[Offer]


@dataclass(frozen=True, slots=True)
class PriceLine:
    """A product a member may buy, as a program buying for them needs it (the API)."""

    #: With `stock` what this member can buy now: the open shelf plus their own holds.
    product: ProductView
    #: The member's price for one unit now, in 分.
    unit_price: int
    #: The most one order may hold (tier batch cap, product cap), stock aside.
    max_per_order: int
    #: Of `stock`, the codes the member holds under a reservation.
    held: int


@dataclass(frozen=True, slots=True)
class _Shelf:
    """The catalog's definitions as of `revision`: what buyers' screens are drawn from."""

    revision: int
    categories: dict[int, CategoryView]
    #: The children of each category (None: the top level), in display order.
    children: dict[int | None, tuple[CategoryView, ...]]
    #: Every product, active or not. Their `stock` is 0: each screen reads its own.
    products: dict[int, ProductView]
    #: The active products of each category, in display order.
    on_sale: dict[int, tuple[int, ...]]

    def window(self, category_id: int, page: int, page_size: int) -> Page[int]:
        """The ids of a category's products on `page`, or on the last page when past it."""
        return Page.of(self.on_sale.get(category_id, ()), page, page_size)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a member's screen reads fresh, in the statement that checks the revision."""

    tier_key: str
    balance: int
    points: int
    #: Available codes of each product on the screen.
    stock: dict[int, int]
    #: Per-account prices of the products on the screen that have one.
    member_prices: dict[int, int]
    #: Of `stock`, the codes of each product the member holds under a reservation.
    held: dict[int, int]


@functools.cache
def _facts_query() -> Select[*tuple[Any, ...]]:
    """The revision, the member, and each listed product's stock (the open shelf and the
    codes of it the member holds under a reservation, apart) and per-account price.

    Binds `member`, `at` (for the points spendable then) and `products` (a list, maybe
    empty: the member's row still comes back, with NULL product columns). One row per
    product; no row at all when the member does not exist.
    """
    return (
        select(
            _REVISION.label("revision"),
            Member.tier_key,
            Member.balance,
            available_points(Member.id.expression, bindparam("at")).label("points"),
            Product.id.label("product_id"),
            _STOCK.label("stock"),
            _HELD.label("held"),
            MemberPrice.price.label("member_price"),
        )
        .select_from(Member)
        .outerjoin(Product, Product.id.in_(bindparam("products", expanding=True)))
        .outerjoin(
            MemberPrice,
            and_(MemberPrice.member_id == Member.id, MemberPrice.product_id == Product.id),
        )
        .where(Member.id == bindparam("member", type_=Integer))
    )


def _pricing_input(product: ProductView, facts: _Facts) -> PricingInput:
    """What `pricing` needs for one product and the member whose facts were read."""
    return PricingInput(
        product_id=product.id,
        sku=product.sku,
        active=product.active,
        pool=product.pool,
        base_price=product.base_price,
        max_per_order=product.max_per_order,
        tier_key=facts.tier_key,
        tier_prices=product.tier_prices,
        member_price=facts.member_prices.get(product.id),
        balance=facts.balance,
        available_points=facts.points,
    )


def _invalid(field: str, reason: str) -> ShopError:
    return ShopError(ErrorCode.INVALID_INPUT, field=field, reason=reason)


def _int(field: str, value: object, *, minimum: int | None = None, reason: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, "not_integer")
    if minimum is not None and value < minimum:
        raise _invalid(field, reason)
    return value


def _name(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field, "empty")
    if len(value.strip()) > NAME_MAX:
        raise _invalid(field, "too_long")
    return value.strip()


def _price(field: str, value: object) -> int:
    return _int(field, value, minimum=1, reason="not_positive")


def _checked(field: str, value: object) -> object:
    """One product field validated and normalised, or INVALID_INPUT naming it."""
    if field in {"name_zh", "name_en"}:
        return _name(field, value)
    if field in {"description_zh", "description_en"}:
        if not isinstance(value, str):
            raise _invalid(field, "not_text")
        return value.strip()
    if field == "base_price":
        return _price(field, value)
    if field == "pool":
        if value not in POOLS:
            raise _invalid(field, "unknown_pool")
        return value
    if field == "max_per_order":
        return None if value is None else _int(field, value, minimum=1, reason="below_one")
    if field == "low_stock_threshold":
        return _int(field, value, minimum=0, reason="negative")
    if field == "sort":
        return _int(field, value)
    if field == "active":
        if not isinstance(value, bool):
            raise _invalid(field, "not_boolean")
        return value
    raise _invalid(field, "unknown_field")


def _sku(value: object) -> str:
    if not isinstance(value, str) or not SKU_PATTERN.fullmatch(value):
        raise _invalid("sku", "pattern")
    return value


def _upsert_price(
    session: AsyncSession, model: type[TierPrice] | type[MemberPrice], **values: Any
) -> Any:
    """`INSERT ... ON CONFLICT (primary key) DO UPDATE SET price`, so setters are idempotent."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(model).values(**values)
    keys = [column.name for column in model.__table__.primary_key]
    return statement.on_conflict_do_update(
        index_elements=keys, set_={"price": statement.excluded.price}
    )


async def _views(session: AsyncSession, rows: Sequence[tuple[Product, int]]) -> list[ProductView]:
    """Product rows with their stock to DTOs, fetching every tier price in one query."""
    prices: dict[int, dict[str, int]] = {product.id: {} for product, _ in rows}
    if prices:
        result = await session.execute(
            select(TierPrice.product_id, TierPrice.tier_key, TierPrice.price).where(
                TierPrice.product_id.in_(prices)
            )
        )
        for product_id, tier_key, price in result:
            prices[product_id][tier_key] = price
    return [ProductView.of(product, stock, prices[product.id]) for product, stock in rows]


async def _product(
    session: AsyncSession, condition: ColumnElement[bool], **key: Any
) -> ProductView:
    row = (await session.execute(select(Product, _STOCK).where(condition))).first()
    if row is None:
        raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, **key)
    return (await _views(session, [row]))[0]


async def _product_id(session: AsyncSession, sku: str) -> int:
    product_id = await session.scalar(select(Product.id).where(Product.sku == sku))
    if product_id is None:
        raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, sku=sku)
    return product_id


async def _category_id(session: AsyncSession, slug: str, field: str) -> int:
    category_id = await session.scalar(select(Category.id).where(Category.slug == slug))
    if category_id is None:
        raise _invalid(field, "not_found")
    return category_id


def _no_offers(page_size: int) -> Page[Offer]:
    return Page((), page=1, page_size=page_size, total=0)


class Catalog:
    """Browsing for buyers and the product admin for the shop's staff."""

    def __init__(self, db: Database, clock: Clock, *, ladder: Ladder) -> None:
        self._db = db
        self._clock = clock
        self._ladder = ladder
        self._shelf: _Shelf | None = None

    # --- buyers' screens: definitions from memory, one statement for the rest -----------

    async def browse(
        self, member_id: int, category_id: int | None, *, page: int = 1, page_size: int
    ) -> CategoryPage:
        """The top level (`category_id` None), a category's children, or a page of its
        products as this member sees them (the last page when `page` is past it)."""
        _int("page", page, minimum=1, reason="below_one")
        _int("page_size", page_size, minimum=1, reason="below_one")
        if category_id is None:
            shelf = await self._current()
            return CategoryPage(None, shelf.children.get(None, ()), _no_offers(page_size))

        def shown(shelf: _Shelf) -> Sequence[int]:
            if shelf.children.get(category_id):
                return ()
            return shelf.window(category_id, page, page_size).items

        shelf, facts = await self._read(member_id, shown)
        category = shelf.categories.get(category_id)
        if category is None:
            raise ShopError(ErrorCode.CATEGORY_NOT_FOUND, category=category_id)
        children = shelf.children.get(category_id, ())
        if children:
            return CategoryPage(category, children, _no_offers(page_size))
        window = shelf.window(category_id, page, page_size)
        offers = tuple(self._offer(shelf, facts, product, 1) for product in window.items)
        return CategoryPage(
            category, (), Page(offers, page=window.page, page_size=page_size, total=window.total)
        )

    async def offer(
        self, member_id: int, product_id: int, quantity: int = 1, *, use_points: bool = False
    ) -> Offer:
        """One product for this member: the quote for `quantity`, or why they cannot buy.

        A product that is not active any more comes back with its refusal too; only an
        unknown product or member raises.
        """
        shelf, facts = await self._read(
            member_id, lambda shelf: (product_id,) if product_id in shelf.products else ()
        )
        if product_id not in shelf.products:
            raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, product=product_id)
        return self._offer(shelf, facts, product_id, quantity, use_points=use_points)

    async def quote(
        self, member_id: int, product_id: int, quantity: int, *, use_points: bool = False
    ) -> Quote:
        """The breakdown the member is shown before paying; raises what refuses it."""
        offer = await self.offer(member_id, product_id, quantity, use_points=use_points)
        return offer.quoted()

    def _offer(
        self,
        shelf: _Shelf,
        facts: _Facts,
        product_id: int,
        quantity: int,
        *,
        use_points: bool = False,
    ) -> Offer:
        product = replace(shelf.products[product_id], stock=facts.stock[product_id])
        held = facts.held.get(product_id, 0)
        inputs = _pricing_input(product, facts)
        try:
            quote = pricing.quote(
                self._ladder, inputs, quantity, use_points=use_points, stock=product.stock
            )
        except ShopError as refusal:
            return Offer(product, None, refusal, facts.points, held)
        return Offer(product, quote, None, facts.points, held)

    async def price_list(self, member_id: int) -> tuple[str, list[PriceLine]]:
        """The member's tier and every product on sale their tier may buy, in catalog
        order, each at their price with the stock they can buy (their holds included).

        One statement, like a category page; prices come from `pricing`, as charged.
        """
        shelf, facts = await self._read(
            member_id, lambda shelf: [pid for ids in shelf.on_sale.values() for pid in ids]
        )
        lines = []
        for product in sorted(
            (shelf.products[pid] for ids in shelf.on_sale.values() for pid in ids),
            key=lambda product: (product.sort, product.id),
        ):
            held = facts.held.get(product.id, 0)
            inputs = _pricing_input(product, facts)
            try:
                pricing.check_allowed(self._ladder, inputs)
            except ShopError:
                continue
            lines.append(
                PriceLine(
                    product=replace(product, stock=facts.stock[product.id]),
                    unit_price=pricing.unit_price(self._ladder, inputs)[0],
                    max_per_order=pricing.quantity_limit(self._ladder, inputs),
                    held=held,
                )
            )
        return facts.tier_key, lines

    async def _current(self) -> _Shelf:
        """The definitions, checked against the revision in one statement."""
        shelf = self._shelf or await self._reload()
        while True:
            async with self._db.read() as session:
                revision = await session.scalar(select(_REVISION))
            if revision == shelf.revision:
                return shelf
            shelf = await self._reload()

    async def _read(
        self, member_id: int, shown: Callable[[_Shelf], Sequence[int]]
    ) -> tuple[_Shelf, _Facts]:
        """Current definitions and the member's fresh facts for the products `shown`
        picks from them, in one statement whenever the definitions have not moved.

        A product's stock for this member is the open shelf plus their own holds: what
        they can buy, and what their purchase takes first."""
        shelf = self._shelf or await self._reload()
        while True:
            params = {"member": member_id, "at": self._clock.now(), "products": list(shown(shelf))}
            async with self._db.read() as session:
                rows = (await session.execute(_facts_query(), params)).all()
            if not rows:
                raise ShopError(ErrorCode.MEMBER_NOT_FOUND, member=member_id)
            first = rows[0]
            if first.revision == shelf.revision:
                return shelf, _Facts(
                    tier_key=first.tier_key,
                    balance=first.balance,
                    points=int(first.points),
                    stock={
                        row.product_id: row.stock + row.held
                        for row in rows
                        if row.product_id is not None
                    },
                    member_prices={
                        row.product_id: row.member_price
                        for row in rows
                        if row.member_price is not None
                    },
                    held={
                        row.product_id: row.held
                        for row in rows
                        if row.product_id is not None and row.held
                    },
                )
            shelf = await self._reload()

    async def _reload(self) -> _Shelf:
        """Load every definition and keep it as the process's copy.

        The revision is read first: on PostgreSQL (READ COMMITTED) the rows that follow
        may be newer than it, never older, so a copy is never labelled newer than it is;
        a copy labelled older only costs one more reload. Concurrent reloads may finish
        out of order and leave the older copy kept; the next screen's check replaces it.
        """
        async with self._db.read() as session:
            revision = await session.scalar(select(_REVISION))
            categories = list(
                await session.scalars(select(Category).order_by(Category.sort, Category.id))
            )
            products = list(
                await session.scalars(select(Product).order_by(Product.sort, Product.id))
            )
            prices: dict[int, dict[str, int]] = defaultdict(dict)
            for product_id, tier_key, price in await session.execute(
                select(TierPrice.product_id, TierPrice.tier_key, TierPrice.price)
            ):
                prices[product_id][tier_key] = price
        counts: dict[int | None, int] = defaultdict(int)
        for category in categories:
            counts[category.parent_id] += 1
        views = {
            category.id: CategoryView.of(category, counts[category.id]) for category in categories
        }
        children: dict[int | None, list[CategoryView]] = defaultdict(list)
        for view in views.values():
            children[view.parent_id].append(view)
        on_sale: dict[int, list[int]] = defaultdict(list)
        for product in products:
            if product.active:
                on_sale[product.category_id].append(product.id)
        shelf = _Shelf(
            revision=revision or 0,
            categories=views,
            children={parent: tuple(kids) for parent, kids in children.items()},
            products={p.id: ProductView.of(p, 0, prices[p.id]) for p in products},
            on_sale={category: tuple(ids) for category, ids in on_sale.items()},
        )
        self._shelf = shelf
        return shelf

    # --- reads ------------------------------------------------------------------------

    async def categories(self, parent_id: int | None = None) -> list[CategoryView]:
        """Top-level categories, or the children of `parent_id`, in display order."""
        parent = (
            Category.parent_id.is_(None) if parent_id is None else Category.parent_id == parent_id
        )
        async with self._db.read() as session:
            result = await session.execute(
                select(Category, _CHILDREN).where(parent).order_by(Category.sort, Category.id)
            )
            return [CategoryView.of(row, children) for row, children in result]

    async def category(self, category_id: int) -> CategoryView:
        async with self._db.read() as session:
            result = await session.execute(
                select(Category, _CHILDREN).where(Category.id == category_id)
            )
            row = result.first()
        if row is None:
            raise ShopError(ErrorCode.CATEGORY_NOT_FOUND, category=category_id)
        return CategoryView.of(*row)

    async def products(
        self,
        category_id: int | None,
        *,
        page: int,
        page_size: int,
        include_inactive: bool = False,
    ) -> Page[ProductView]:
        """One page of a category's products (all products when `category_id` is None).

        The window count rides along with the rows, so rows, stock and total are one
        statement; only a page past the end needs a separate count.
        """
        _int("page", page, minimum=1, reason="below_one")
        _int("page_size", page_size, minimum=1, reason="below_one")
        conditions: list[ColumnElement[bool]] = []
        if category_id is not None:
            conditions.append(Product.category_id == category_id)
        if not include_inactive:
            conditions.append(Product.active.is_(True))
        query = (
            select(Product, _STOCK, func.count().over().label("total"))
            .where(*conditions)
            .order_by(Product.sort, Product.id)
            .limit(page_size)
            .offset((page - 1) * page_size)
        )
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
            if rows:
                total = rows[0].total
            else:
                count = select(func.count()).select_from(Product).where(*conditions)
                total = await session.scalar(count) or 0
            items = await _views(session, [(product, stock) for product, stock, _ in rows])
        return Page(items=tuple(items), page=page, page_size=page_size, total=total)

    async def product(self, product_id: int) -> ProductView:
        async with self._db.read() as session:
            return await _product(session, Product.id == product_id, product=product_id)

    async def product_by_sku(self, sku: str) -> ProductView:
        async with self._db.read() as session:
            return await _product(session, Product.sku == sku, sku=sku)

    async def product_id(self, sku: str) -> int:
        """The id of the product with `sku` (active or not); PRODUCT_NOT_FOUND else."""
        async with self._db.read() as session:
            return await _product_id(session, sku)

    async def stock_counts(self, product_ids: Sequence[int]) -> dict[int, int]:
        """Available codes per product in one grouped query; 0 for a product with none."""
        counts = dict.fromkeys(product_ids, 0)
        if not counts:
            return counts
        async with self._db.read() as session:
            result = await session.execute(
                select(Code.product_id, func.count(Code.id))
                .where(
                    Code.product_id.in_(counts),
                    Code.order_id.is_(None),
                    Code.reserved_by.is_(None),
                )
                .group_by(Code.product_id)
            )
            counts.update((product_id, count) for product_id, count in result)
        return counts

    async def low_stock(self) -> list[ProductView]:
        """Active products below their restock threshold, emptiest first."""
        async with self._db.read() as session:
            result = await session.execute(
                select(Product, _STOCK)
                .where(Product.active.is_(True), Product.low_stock_threshold > _STOCK)
                .order_by(_STOCK, Product.id)
            )
            return await _views(session, result.all())

    # --- admin writes -------------------------------------------------------------------

    async def upsert_category(
        self,
        slug: str,
        name_zh: str,
        name_en: str,
        parent_slug: str | None = None,
        sort: int = 0,
    ) -> CategoryView:
        """Create the category or update it in place; the tree stays two levels deep."""
        if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
            raise _invalid("slug", "pattern")
        name_zh, name_en = _name("name_zh", name_zh), _name("name_en", name_en)
        sort = _int("sort", sort)
        if parent_slug == slug:
            raise _invalid("parent_slug", "self")
        async with self._db.transaction() as session:
            parent_id = None
            if parent_slug is not None:
                parent = await session.scalar(select(Category).where(Category.slug == parent_slug))
                if parent is None:
                    raise _invalid("parent_slug", "not_found")
                if parent.parent_id is not None:
                    raise _invalid("parent_slug", "too_deep")
                parent_id = parent.id
            await session.execute(
                insert_ignoring_conflict(session, Category),
                {
                    "slug": slug,
                    "parent_id": parent_id,
                    "name_zh": name_zh,
                    "name_en": name_en,
                    "sort": sort,
                },
            )
            result = await session.execute(
                select(Category, _CHILDREN).where(Category.slug == slug).with_for_update()
            )
            row, children = result.one()
            if parent_id is not None and children:
                raise _invalid("parent_slug", "too_deep")
            row.parent_id = parent_id
            row.name_zh, row.name_en, row.sort = name_zh, name_en, sort
            return CategoryView.of(row, children)

    async def create_product(
        self,
        sku: str,
        category_slug: str,
        name_zh: str,
        name_en: str,
        base_price: int,
        *,
        pool: str = "basic",
        description_zh: str = "",
        description_en: str = "",
        max_per_order: int | None = None,
        low_stock_threshold: int | None = None,
        active: bool = True,
        sort: int = 0,
    ) -> ProductView:
        """A new product; a taken SKU is INVALID_INPUT (field `sku`, reason `taken`).

        Without `low_stock_threshold` the schema's default applies.
        """
        fields: dict[str, object] = {
            "name_zh": name_zh,
            "name_en": name_en,
            "description_zh": description_zh,
            "description_en": description_en,
            "base_price": base_price,
            "pool": pool,
            "max_per_order": max_per_order,
            "active": active,
            "sort": sort,
        }
        if low_stock_threshold is not None:
            fields["low_stock_threshold"] = low_stock_threshold
        values = {"sku": _sku(sku)} | {field: _checked(field, v) for field, v in fields.items()}
        async with self._db.transaction() as session:
            category_id = await _category_id(session, category_slug, "category_slug")
            product_id = await session.scalar(
                insert_ignoring_conflict(session, Product),
                {"category_id": category_id, "created_at": self._clock.now(), **values},
            )
            if product_id is None:
                raise _invalid("sku", "taken")
            return await _product(session, Product.id == product_id, product=product_id)

    async def update_product(self, sku: str, **changes: Any) -> ProductView:
        """Change some fields of a product; `category_slug` moves it to another category."""
        values = {
            field: _checked(field, value)
            for field, value in changes.items()
            if field != "category_slug"
        }
        async with self._db.transaction() as session:
            product = await session.scalar(
                select(Product).where(Product.sku == sku).with_for_update()
            )
            if product is None:
                raise ShopError(ErrorCode.PRODUCT_NOT_FOUND, sku=sku)
            if "category_slug" in changes:
                values["category_id"] = await _category_id(
                    session, changes["category_slug"], "category_slug"
                )
            for field, value in values.items():
                setattr(product, field, value)
            await session.flush()
            return await _product(session, Product.id == product.id, product=product.id)

    async def set_active(self, sku: str, active: bool) -> ProductView:
        return await self.update_product(sku, active=active)

    async def set_tier_price(self, sku: str, tier_key: str, price: int | None) -> ProductView:
        """Fix the price one tier pays for a product, or (None) go back to its discount."""
        self._ladder.tier(tier_key)
        async with self._db.transaction() as session:
            product_id = await _product_id(session, sku)
            if price is None:
                await session.execute(
                    delete(TierPrice).where(
                        TierPrice.product_id == product_id, TierPrice.tier_key == tier_key
                    )
                )
            else:
                await session.execute(
                    _upsert_price(
                        session,
                        TierPrice,
                        product_id=product_id,
                        tier_key=tier_key,
                        price=_price("price", price),
                    )
                )
            return await _product(session, Product.id == product_id, product=product_id)

    async def set_member_price(self, member_id: int, sku: str, price: int | None) -> None:
        """Fix the price one account pays (strategic partners), or (None) remove it."""
        async with self._db.transaction() as session:
            await load_member(session, member_id)
            product_id = await _product_id(session, sku)
            if price is None:
                await session.execute(
                    delete(MemberPrice).where(
                        MemberPrice.member_id == member_id, MemberPrice.product_id == product_id
                    )
                )
            else:
                await session.execute(
                    _upsert_price(
                        session,
                        MemberPrice,
                        member_id=member_id,
                        product_id=product_id,
                        price=_price("price", price),
                    )
                )
