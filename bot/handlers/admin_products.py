"""Admin: products, created step by step or edited one field at a time.

A new product is asked for field by field, each answer checked at once against the
catalog's own rules (its SKU pattern, name length, pools, the ladder's tiers) so a bad
answer is explained and asked again; the last step shows everything for a final yes
before `AdminActions.create_product`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from bot.callbacks import BadCallbackError, Callback
from bot.conversation import Button, Context, Conversation, Keyboard, escape
from bot.handlers.admin import (
    actor,
    admin_only,
    admins_only,
    home_button,
    operations,
    section,
)
from bot.handlers.admin_stock import (
    AdminProductCallback,
    ImportCallback,
    NewProductCallback,
    ProductListCallback,
    show_list,
    stock_mark,
)
from bot.handlers.level import POOL_NAMES
from bot.i18n import N_
from core.catalog import NAME_MAX, POOLS, SKU_PATTERN, CategoryView, ProductView
from core.errors import ErrorCode, ShopError
from core.money import parse_yuan
from core.text import whole_number

conversation = Conversation("admin_products", button_guard=admins_only)

STATE = "adm_product"

Step = Literal[
    "sku",
    "name_zh",
    "name_en",
    "base_price",
    "pool",
    "tier_prices",
    "max_per_order",
    "category",
    "active",
]
STEPS: tuple[Step, ...] = get_args(Step)
#: Steps answered by typing (the others by a button; these two may also be skipped).
TYPED: frozenset[str] = frozenset(
    {"sku", "name_zh", "name_en", "base_price", "tier_prices", "max_per_order"}
)
SKIPPABLE: frozenset[str] = frozenset({"tier_prices", "max_per_order"})
EditField = Literal[
    "name_zh", "name_en", "base_price", "pool", "tier_prices", "max_per_order", "category"
]

PROMPTS: dict[str, str] = {
    "sku": N_(
        "<b>SKU</b>: a short unique code for the product, e.g. STEAM-100"
        " (letters, digits, - and _)."
    ),
    "name_zh": N_("<b>Chinese name</b>: what Chinese-speaking members see."),
    "name_en": N_("<b>English name</b>: what English-speaking members see."),
    "base_price": N_("<b>Price</b> in yuan before any level discount, e.g. 12.50."),
    "pool": N_("<b>Who may buy it?</b> Choose the product pool."),
    "tier_prices": N_(
        "<b>Fixed prices per level</b> (optional), e.g. <code>gold=9.50 platinum=9</code>."
        " Levels: {tiers}. Tap Skip to use each level's discount."
    ),
    "max_per_order": N_(
        "<b>Most codes per order</b> (optional): a whole number, or Skip for the level's limit."
    ),
    "category": N_("<b>Category</b>: where it is listed."),
    "active": N_("<b>On sale now?</b>"),
}
FIELD_LABELS: dict[EditField, str] = {
    "name_zh": N_("Chinese name"),
    "name_en": N_("English name"),
    "base_price": N_("Price"),
    "pool": N_("Pool"),
    "tier_prices": N_("Level prices"),
    "max_per_order": N_("Per order"),
    "category": N_("Category"),
}


class EditCallback(Callback):
    prefix = "admpe"
    product: int
    field: EditField


class StepCallback(Callback):
    """A button answer to the current step: a pool, a category id, 1/0, skip, create, cancel."""

    prefix = "admps"
    value: str


class InvalidStepError(Exception):
    """An answer that breaks one of the catalog's rules, named as core names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def invalid_text(ctx: Context, field: str, reason: str) -> str:
    """The sentence for core's INVALID_INPUT(field=, reason=) on a product field."""
    if field == "sku" and reason == "taken":
        return ctx._("This SKU is already taken. Please send another one.")
    if field == "sku":
        return ctx._("A SKU is 2 to 64 letters, digits, - or _, without spaces.")
    if field in ("name_zh", "name_en") and reason == "too_long":
        return ctx.ngettext(
            "That name is too long: at most {max} character.",
            "That name is too long: at most {max} characters.",
            NAME_MAX,
        ).format(max=NAME_MAX)
    if field in ("name_zh", "name_en"):
        return ctx._("The name cannot be empty.")
    if field in ("base_price", "price"):
        return ctx._("Please send a price in yuan above zero, such as 12.50.")
    if field == "tier_prices":
        return ctx._("Please send level prices like gold=9.50 platinum=9, or tap Skip.")
    if field == "max_per_order":
        return ctx._("Please send a whole number of at least 1, or tap Skip.")
    return ctx._("Please choose one of the buttons.")


def pool_name(ctx: Context, pool: str) -> str:
    return ctx._(POOL_NAMES.get(pool, pool))


def tier_name(ctx: Context, key: str) -> str:
    return escape(ctx.shop.ladder.tier(key).name(ctx.locale))


# --- parsing one answer --------------------------------------------------------------------


def _price(text: str, field: str) -> int:
    try:
        price = parse_yuan(text)
    except ShopError:
        raise InvalidStepError(field, "not_a_number") from None
    if price <= 0:
        raise InvalidStepError(field, "not_positive")
    return price


async def parse_typed(ctx: Context, step: str, text: str) -> Any:
    """A typed answer checked against the catalog's rules; JSON-ready for ctx.state."""
    text = text.strip()
    if step == "sku":
        if not SKU_PATTERN.fullmatch(text):
            raise InvalidStepError("sku", "pattern")
        try:
            await ctx.shop.catalog.product_by_sku(text)
        except ShopError as error:
            if error.code is not ErrorCode.PRODUCT_NOT_FOUND:
                raise
            return text
        raise InvalidStepError("sku", "taken")
    if step in ("name_zh", "name_en"):
        if not text:
            raise InvalidStepError(step, "empty")
        if len(text) > NAME_MAX:
            raise InvalidStepError(step, "too_long")
        return text
    if step == "base_price":
        return _price(text, "base_price")
    if step == "tier_prices":
        prices: dict[str, int] = {}
        for part in text.replace(",", " ").replace("，", " ").split():
            key, sep, amount = part.partition("=")
            if not sep:
                raise InvalidStepError("tier_prices", "format")
            prices[ctx.shop.ladder.tier(key.strip()).key] = _price(amount, "tier_prices")
        if not prices:
            raise InvalidStepError("tier_prices", "format")
        return prices
    if step == "max_per_order":
        most = whole_number(text)
        if most is None or most < 1:
            raise InvalidStepError("max_per_order", "below_one")
        return most
    raise InvalidStepError(step, "choose")


async def all_categories(ctx: Context) -> list[CategoryView]:
    """Every category, each top-level one followed by its children."""
    listed: list[CategoryView] = []
    for top in await ctx.shop.catalog.categories():
        listed.append(top)
        if top.children:
            listed += await ctx.shop.catalog.categories(top.id)
    return listed


async def parse_choice(ctx: Context, step: str, value: str) -> Any:
    """A button answer for `step`; anything but what that step offered is forged."""
    if value == "skip" and step in SKIPPABLE:
        return {} if step == "tier_prices" else None
    if step == "pool" and value in POOLS:
        return value
    if step == "active" and value in ("1", "0"):
        return value == "1"
    if step == "category" and (category_id := whole_number(value)) is not None:
        category = await ctx.shop.catalog.category(category_id)
        return category.slug
    raise BadCallbackError(f"{value!r} does not answer step {step!r}")


# --- showing --------------------------------------------------------------------------------


def tier_prices_text(ctx: Context, prices: dict[str, int]) -> str:
    if not prices:
        return ctx._("each level's discount")
    return ctx._(", ").join(
        f"{tier_name(ctx, key)} {ctx.money(price)}" for key, price in prices.items()
    )


def max_text(ctx: Context, value: int | None) -> str:
    return ctx.number(value) if value is not None else ctx._("the level's limit")


def draft_text(ctx: Context, draft: dict[str, Any], category: str) -> str:
    lines = [
        "<b>{zh}</b> / <b>{en}</b>".format(
            zh=escape(draft["name_zh"]), en=escape(draft["name_en"])
        ),
        ctx._("SKU: {sku}").format(sku=f"<code>{escape(draft['sku'])}</code>"),
        ctx._("Price: {price}").format(price=ctx.money(draft["base_price"])),
        ctx._("Pool: {pool}").format(pool=pool_name(ctx, draft["pool"])),
        ctx._("Level prices: {prices}").format(
            prices=tier_prices_text(ctx, draft.get("tier_prices") or {})
        ),
        ctx._("Per order: {max}").format(max=max_text(ctx, draft.get("max_per_order"))),
        ctx._("Category: {category}").format(category=escape(category)),
        ctx._("On sale: {active}").format(active=ctx._("yes") if draft["active"] else ctx._("no")),
    ]
    return "\n".join(lines)


async def product_card(ctx: Context, product: ProductView) -> None:
    category = await ctx.shop.catalog.category(product.category_id)
    draft = {
        "sku": product.sku,
        "name_zh": product.names["zh_CN"],
        "name_en": product.names["en"],
        "base_price": product.base_price,
        "pool": product.pool,
        "tier_prices": product.tier_prices,
        "max_per_order": product.max_per_order,
        "active": product.active,
    }
    stock = ctx._("Stock: {stock} {mark} (restock below {threshold})").format(
        stock=ctx.number(product.stock),
        mark=stock_mark(product),
        threshold=ctx.number(product.low_stock_threshold),
    )
    text = draft_text(ctx, draft, category.name(ctx.locale)) + "\n" + stock
    pid = product.id
    fields = list(FIELD_LABELS.items())
    keyboard: list[list[Button]] = [
        [
            Button("✏️ " + ctx._(label), EditCallback(product=pid, field=field))
            for field, label in fields[i : i + 2]
        ]
        for i in range(0, len(fields), 2)
    ]
    toggle = ctx._("⏸ Take off sale") if product.active else ctx._("▶️ Put on sale")
    keyboard += [
        [
            Button(toggle, AdminProductCallback(product=pid, action="toggle")),
            Button(ctx._("📥 Import codes"), ImportCallback(product=pid)),
        ],
        [Button(ctx._("« Products"), ProductListCallback(view="products", page=1))],
        [home_button(ctx)],
    ]
    await ctx.reply(text, keyboard)


@section("products")
async def products_section(ctx: Context) -> None:
    ctx.state.clear()
    await show_list(ctx, "products", 1)


# --- the steps ------------------------------------------------------------------------------


def cancel_button(ctx: Context) -> Button:
    return Button(ctx._("✖️ Cancel"), StepCallback(value="cancel"))


async def ask(ctx: Context, step: str, *, error: str | None = None) -> None:
    """Prompt for `step` (after `error` when the last answer was refused)."""
    mode = ctx.state.get("mode")
    prompt = ctx._(PROMPTS[step])
    if step == "tier_prices":
        keys = ", ".join(
            f"<code>{t.key}</code> {escape(t.name(ctx.locale))}" for t in ctx.shop.ladder.tiers
        )
        prompt = prompt.format(tiers=keys)
    if mode == "new":
        number = STEPS.index(step) + 1
        prompt = (
            ctx._("Step {number} of {total}").format(number=number, total=len(STEPS))
            + " · "
            + prompt
        )
    lines = [f"⚠️ {error}", ""] if error else []
    lines.append(prompt)
    keyboard: list[list[Button]] = []
    if step == "pool":
        keyboard = [
            [Button(pool_name(ctx, pool), StepCallback(value=pool))] for pool in sorted(POOLS)
        ]
    elif step == "category":
        categories = await all_categories(ctx)
        if not categories:
            lines.append(ctx._("There is no category yet: add one from the shell first."))
        for category in categories:
            indent = "· " if category.parent_id is not None else ""
            keyboard.append(
                [Button(indent + category.name(ctx.locale), StepCallback(value=str(category.id)))]
            )
    elif step == "active":
        keyboard = [
            [
                Button(ctx._("Yes, on sale"), StepCallback(value="1")),
                Button(ctx._("No, keep it hidden"), StepCallback(value="0")),
            ]
        ]
    elif step in SKIPPABLE:
        keyboard = [[Button(ctx._("Skip"), StepCallback(value="skip"))]]
    keyboard.append([cancel_button(ctx)])
    await ctx.reply("\n".join(lines), keyboard)


async def confirm(ctx: Context) -> None:
    draft = dict(ctx.state.get("draft", {}))
    slug = draft["category"]
    name = next((c.name(ctx.locale) for c in await all_categories(ctx) if c.slug == slug), slug)
    text = "{title}\n\n{body}".format(
        title=ctx._("Create this product?"), body=draft_text(ctx, draft, name)
    )
    keyboard: Keyboard = [
        [
            Button(ctx._("✅ Create"), StepCallback(value="create")),
            cancel_button(ctx),
        ]
    ]
    ctx.state.update(step="confirm")
    await ctx.reply(text, keyboard)


async def advance(ctx: Context, step: str, value: Any) -> None:
    """Keep the answer, then ask the next step (or apply it, when editing one field)."""
    if ctx.state.get("mode") == "edit":
        await apply_edit(ctx, int(ctx.state.get("product")), step, value)
        return
    draft = dict(ctx.state.get("draft", {}))
    draft[step] = value
    following = STEPS.index(step) + 1
    if following < len(STEPS):
        ctx.state.update(draft=draft, step=STEPS[following])
        await ask(ctx, STEPS[following])
    else:
        ctx.state.update(draft=draft)
        await confirm(ctx)


@conversation.callback(NewProductCallback)
async def new_product(ctx: Context, data: NewProductCallback) -> None:
    ctx.state.set(STATE, mode="new", step=STEPS[0], draft={})
    await ask(ctx, STEPS[0])


@conversation.state(STATE)
@admin_only
async def typed_answer(ctx: Context) -> None:
    step = str(ctx.state.get("step"))
    if step not in TYPED:
        await ask(ctx, step, error=ctx._("Please use the buttons for this step."))
        return
    try:
        value = await parse_typed(ctx, step, ctx.incoming.text)
    except InvalidStepError as invalid:
        await ask(ctx, step, error=invalid_text(ctx, invalid.field, invalid.reason))
        return
    except ShopError as error:
        if error.code is not ErrorCode.UNKNOWN_TIER:
            raise
        await ask(
            ctx,
            step,
            error=ctx._("There is no level {tier}.").format(
                tier=f"<code>{escape(str(error.params.get('tier', '')))}</code>"
            ),
        )
        return
    await advance(ctx, step, value)


@conversation.callback(StepCallback)
async def step_button(ctx: Context, data: StepCallback) -> None:
    if ctx.state.name != STATE:
        raise BadCallbackError("no product form open")
    step = str(ctx.state.get("step"))
    if data.value == "cancel":
        product = ctx.state.get("product")
        ctx.state.clear()
        await ctx.answer(ctx._("Cancelled."))
        if product is not None:
            await product_card(ctx, await ctx.shop.catalog.product(int(product)))
        else:
            await show_list(ctx, "products", 1)
        return
    if data.value == "create":
        if step != "confirm":
            raise BadCallbackError("nothing to create yet")
        await create(ctx)
        return
    await advance(ctx, step, await parse_choice(ctx, step, data.value))


async def create(ctx: Context) -> None:
    draft = dict(ctx.state.get("draft", {}))
    admin = operations(ctx).admin
    try:
        product = await admin.create_product(
            actor(ctx),
            draft["sku"],
            draft["category"],
            draft["name_zh"],
            draft["name_en"],
            draft["base_price"],
            pool=draft["pool"],
            max_per_order=draft.get("max_per_order"),
            active=draft["active"],
        )
    except ShopError as error:
        field = error.params.get("field")
        if error.code is not ErrorCode.INVALID_INPUT or field not in STEPS:
            raise
        ctx.state.update(step=field)
        await ask(
            ctx, str(field), error=invalid_text(ctx, str(field), str(error.params.get("reason")))
        )
        return
    prices = draft.get("tier_prices") or {}
    if prices:
        product = await set_tier_prices(ctx, product, prices)
    ctx.state.clear()
    await ctx.answer(ctx._("Product created."))
    await product_card(ctx, product)


async def set_tier_prices(
    ctx: Context, product: ProductView, prices: dict[str, int]
) -> ProductView:
    """Fixed level prices, audited like every other change (AdminActions has no such action)."""
    for key, price in prices.items():
        product = await ctx.shop.catalog.set_tier_price(product.sku, key, price)
    await operations(ctx).audit.log(
        actor(ctx), "set_tier_prices", f"product:{product.sku}", None, {"tier_prices": prices}
    )
    return product


# --- editing ----------------------------------------------------------------------------


@conversation.callback(AdminProductCallback)
async def product_action(ctx: Context, data: AdminProductCallback) -> None:
    product = await ctx.shop.catalog.product(data.product)
    if data.action == "toggle":
        product = await operations(ctx).admin.set_active(
            actor(ctx), product.sku, not product.active
        )
        await ctx.answer(ctx._("On sale.") if product.active else ctx._("Taken off sale."))
    ctx.state.clear()
    await product_card(ctx, product)


@conversation.callback(EditCallback)
async def edit_field(ctx: Context, data: EditCallback) -> None:
    product = await ctx.shop.catalog.product(data.product)
    ctx.state.set(STATE, mode="edit", step=data.field, product=product.id)
    await ask(ctx, data.field)


async def apply_edit(ctx: Context, product_id: int, field: str, value: Any) -> None:
    product = await ctx.shop.catalog.product(product_id)
    if field == "tier_prices":
        before = {"tier_prices": product.tier_prices}
        changes: dict[str, int | None] = dict.fromkeys(product.tier_prices)
        changes.update(value)
        for key, price in changes.items():
            product = await ctx.shop.catalog.set_tier_price(product.sku, key, price)
        await operations(ctx).audit.log(
            actor(ctx), "set_tier_prices", f"product:{product.sku}", before, {"tier_prices": value}
        )
    else:
        name = "category_slug" if field == "category" else field
        try:
            product = await operations(ctx).admin.update_product(
                actor(ctx), product.sku, **{name: value}
            )
        except ShopError as error:
            if error.code is not ErrorCode.INVALID_INPUT:
                raise
            await ask(ctx, field, error=invalid_text(ctx, field, str(error.params.get("reason"))))
            return
    ctx.state.clear()
    await ctx.answer(ctx._("Saved."))
    await product_card(ctx, product)
