"""`cardshop`: the shop from the server's shell.

Every subcommand builds the shop through `core.shop.build_shop` and calls the same core
services the chat uses, so the shell and the bot can never disagree about a rule. A
refusal is told in the bot's words (its catalogs, in DEFAULT_LOCALE or `--lang`), and a
database that cannot be used in one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.adapters.screen import plain
from bot.errors import render_error
from bot.i18n import Translator
from bot.payments import refund_refusal, star_refunder
from core.api_keys import ApiKeyView
from core.clock import Clock
from core.config import Settings, SettingsError, load_settings
from core.demo import DEMO_BUYER, is_empty, seed_demo
from core.errors import ErrorCode, ShopError
from core.export import export_path
from core.ladder import SPEND_METRICS, Ladder, load_ladder
from core.members import SUPPORTED_LOCALES
from core.migrate import upgrade
from core.money import format_plain, parse_yuan
from core.payments import PaymentState
from core.payments.stars import XTR
from core.shop import Shop, build_shop
from core.tiers.rules import ReviewResult

Command = Callable[[Shop, argparse.Namespace, Translator], Awaitable[int]]
#: `--out -`: the export to standard output.
STDOUT = "-"
#: PostgreSQL's "undefined table": the schema was never migrated.
UNDEFINED_TABLE = "42P01"


async def _seed_demo(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    if args.if_empty and not await is_empty(shop.db):
        print("the shop already has products: demo seed skipped")
        return 0
    r = await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
    print(
        f"categories {r.categories_created} new, {r.categories_existing} kept; "
        f"products {r.products_created} new, {r.products_existing} kept; "
        f"codes {r.codes_added} new, {r.codes_existing} kept; "
        f"members {r.members_created} new, {r.members_existing} kept"
    )
    return 0


async def _import_codes(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    path: Path = args.file
    lines = (await asyncio.to_thread(path.read_text, encoding="utf-8-sig")).splitlines()
    report = await shop.operations.admin.import_codes(_actor(), args.sku, lines)
    print(
        f"added {report.added}, duplicate {report.duplicate}, rejected {report.rejected}; "
        f"{report.stock_after} in stock for {args.sku}"
    )
    for duplicate in report.duplicates:
        held = duplicate.held_by or "an earlier line of this file"
        print(f"  line {duplicate.line}: duplicate, held by {held}")
    return 0


def _actor() -> str:
    """Who typed the command, for the audit log."""
    return f"cli:{getpass.getuser()}"


async def _topup(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    member = await shop.members.find(args.member)
    change = await shop.operations.admin.top_up(
        _actor(), member.id, parse_yuan(args.amount), reason=args.reason
    )
    print(
        f"member #{member.id}: balance {format_plain(change.balance_before)} -> "
        f"{format_plain(change.balance_after)}"
    )
    return 0


async def _set_tier(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    member = await shop.members.find(args.member)
    change = await shop.operations.admin.set_tier(
        _actor(), member.id, args.tier, reason=args.reason
    )
    print(f"member #{member.id}: {change.from_tier} -> {change.to_tier}")
    return 0


async def _review_tiers(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    outcomes = await shop.quarterly_review.run(quarter=args.quarter, dry_run=args.dry_run)
    for outcome in outcomes:
        if outcome.outcome is ReviewResult.KEPT:
            continue
        unmet = ", ".join(
            f"{c.metric.value} {format_plain(c.current)}/{format_plain(c.required)}"
            if c.metric in SPEND_METRICS
            else f"{c.metric.value} {c.current}/{c.required}"
            for c in outcome.unmet
        )
        print(
            f"member #{outcome.member_id} {outcome.from_tier} -> {outcome.to_tier}: "
            f"{outcome.outcome.value}" + (f" ({unmet})" if unmet else "")
        )
    moved = sum(1 for o in outcomes if o.to_tier != o.from_tier)
    verb = "would move" if args.dry_run else "moved"
    print(
        f"{outcomes[0].quarter if outcomes else args.quarter or 'last quarter'}: "
        f"{len(outcomes)} reviewed, {moved} {verb}"
    )
    if not outcomes:
        entry = shop.ladder.entry.name(t.locale)
        print(
            t._(
                "No member was reviewed: the review covers members whose level was reached"
                " by the rules, above {entry}. A level set by an admin or by invitation stays"
                " until an admin changes it, and a trial ends on its own date."
            ).format(entry=entry)
        )
    if not args.dry_run:
        await shop.operations.audit.log(
            _actor(), "review_tiers", args.quarter or "", None,
            {"reviewed": len(outcomes), "moved": moved},
        )  # fmt: skip
    return 0


async def _export(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    operations = shop.operations
    exports = {
        "orders": operations.exports.orders_csv,
        "ledger": operations.exports.ledger_csv,
        "payments": operations.exports.payments_csv,
    }
    data = await exports[args.kind](args.date_from, args.date_to)
    await operations.audit.log(
        _actor(), "export", args.kind, None,
        {"from": args.date_from, "to": args.date_to, "bytes": len(data)},
    )  # fmt: skip
    if args.out == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    out = (
        Path(args.out)
        if args.out is not None
        else export_path(shop.settings.data_dir, args.kind, args.date_from, args.date_to)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(out.write_bytes, data)
    print(f"wrote {len(data)} bytes to {out}")
    return 0


async def _refund_payment(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    """Give a Stars payment back: out of the wallet first, then through Telegram.

    The bot's own client is built here as `cardshop run` builds it (the configured
    framework, TELEGRAM_API_BASE), so this works with the bot running or not.
    """
    from bot.app import build_runtime, own_transport

    settings = shop.settings
    if settings.telegram_bot_token is None:
        raise SettingsError("TELEGRAM_BOT_TOKEN: Stars are refunded through Telegram")
    runtime = build_runtime(shop)
    async with own_transport(runtime, settings) as transport:
        try:
            payment = await shop.payments.refund(
                _actor(), args.payment, star_refunder(shop, transport)
            )
        except ShopError as error:
            told = refund_refusal(t, error)
            if told is None:
                raise
            print(plain(told), file=sys.stderr)
            return 1
    print(
        f"payment #{payment.id}: refunded, {format_plain(payment.amount)} taken from the wallet,"
        f" {payment.charge_amount} Stars given back"
    )
    return 0


async def _stats(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    summary = await shop.operations.stats.summary(args.days)
    tickets = summary.tickets
    sla = "-" if tickets.sla_met_percent is None else f"{tickets.sla_met_percent:.1f}%"
    tiers = ", ".join(
        f"{tier} {count}" for tier, count in sorted(summary.tier_distribution.items())
    )
    print(f"{summary.date_from} .. {summary.date_to} (days: {summary.days})")
    print(f"revenue {format_plain(summary.revenue)}, orders {summary.orders}, "
          f"codes sold {summary.codes_sold}, refunds {summary.refunds} "
          f"({format_plain(summary.refunded)})")  # fmt: skip
    top_ups = ", ".join(
        f"{method} {format_plain(total.amount)} ({total.count})"
        for method, total in sorted(summary.top_ups.items())
    )
    print(f"top-ups: {top_ups or '-'}")
    print(f"new members {summary.new_members}, check-ins {summary.checkins}")
    print(f"tiers: {tiers or '-'}")
    print(f"tickets {tickets.opened}, answered {tickets.answered}, SLA met {sla}")
    return 0


async def _payments(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    member_id = None if args.member is None else (await shop.members.find(args.member)).id
    state = None if args.state is None else PaymentState(args.state)
    payments = await shop.payments.recent(limit=args.limit, state=state, member_id=member_id)
    zone = shop.settings.zone
    for p in payments:
        charged = (
            f"{p.charge_amount} {p.charge_currency}"
            if p.charge_currency == XTR
            else f"{format_plain(p.charge_amount)} {p.charge_currency}"
        )
        line = (
            f"#{p.id} {p.created_at.astimezone(zone):%Y-%m-%d %H:%M} member #{p.member_id} "
            f"{p.method} {format_plain(p.amount)} ({charged}) {p.state.value} {p.reference}"
        )
        if p.provider_charge_id:
            line += f" charge {p.provider_charge_id}"
        print(line + (f" - {p.note}" if p.note else ""))
    print(f"{len(payments)} payment{'' if len(payments) == 1 else 's'}")
    return 0


async def _referrals(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    """Every referrer: members joined, how many bought in the last 365 days, net commission."""
    rows = await shop.referrals.report()
    for row in rows:
        print(
            f"member #{row.member_id} {row.name}: joined {row.joined}, bought {row.bought}, "
            f"commission {format_plain(row.earned)}"
        )
    print(f"{len(rows)} referrer{'' if len(rows) == 1 else 's'}")
    return 0


async def _reservations(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    """Open stock reservations ending soonest first, or `--cancel ID` one (audited)."""
    admin = shop.operations.admin
    if args.cancel is not None:
        released = await admin.cancel_reservation(_actor(), args.cancel)
        print(
            t.ngettext(
                "Reservation #{id} cancelled: {count} code back on sale.",
                "Reservation #{id} cancelled: {count} codes back on sale.",
                released,
            ).format(id=args.cancel, count=released)
        )
        return 0
    zone = shop.settings.zone
    holds = await admin.reservations()
    for hold in holds:
        print(
            f"#{hold.id} member #{hold.member_id} {hold.sku} {hold.remaining}/{hold.quantity}"
            f" until {hold.expires_at.astimezone(zone):%Y-%m-%d %H:%M}"
        )
    print(f"{len(holds)} reservation{'' if len(holds) == 1 else 's'}")
    return 0


async def _api_key(shop: Shop, args: argparse.Namespace, t: Translator) -> int:
    """Reseller API keys of one member: issue (the secret shown this once), list, revoke.

    Issuing and revoking are audited under the shell user. `--json` prints one JSON
    value and nothing else on stdout, for scripts.
    """
    member = await shop.members.find(args.member)
    keys = shop.api_keys
    if args.action == "issue":
        issued = await keys.issue(member.id, label=args.label, actor=_actor())
        if args.json:
            print(json.dumps({"key_id": issued.key.key_id, "secret": issued.secret}))
            return 0
        print(
            t._("API key {key_id} issued for member #{member}.").format(
                key_id=issued.key.key_id, member=member.id
            )
        )
        print(
            t._("Secret (shown only this once, keep it safe): {secret}").format(
                secret=issued.secret
            )
        )
        return 0
    if args.action == "revoke":
        revoked = await keys.revoke(member.id, args.key_id, actor=_actor())
        print(
            t._("API key {key_id} of member #{member} is revoked.").format(
                key_id=revoked.key_id, member=member.id
            )
        )
        return 0
    listed = await keys.list(member.id, include_revoked=args.all)
    if args.json:
        print(json.dumps([_key_json(key) for key in listed]))
        return 0
    for key in listed:
        print(_key_line(key, t))
    print(t.ngettext("{count} API key", "{count} API keys", len(listed)).format(count=len(listed)))
    return 0


def _key_json(key: ApiKeyView) -> dict[str, object]:
    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "key_id": key.key_id,
        "label": key.label,
        "created_at": moment(key.created_at),
        "last_used_at": moment(key.last_used_at),
        "revoked_at": moment(key.revoked_at),
    }


def _key_line(key: ApiKeyView, t: Translator) -> str:
    used = t._("never") if key.last_used_at is None else t.datetime(key.last_used_at)
    line = t._("{key_id} {label}: created {created}, last used {used}").format(
        key_id=key.key_id,
        label=json.dumps(key.label or "", ensure_ascii=False),
        created=t.datetime(key.created_at),
        used=used,
    )
    if key.revoked_at is not None:
        line += t._(", revoked {revoked}").format(revoked=t.datetime(key.revoked_at))
    return line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cardshop", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--lang", choices=SUPPORTED_LOCALES, default=None, help="language (default DEFAULT_LOCALE)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, parents=[common])

    command("migrate", "bring the database schema up to date")
    seed = command("seed-demo", "stock a demo shop (safe to run twice)")
    seed.add_argument("--if-empty", action="store_true", help="only when there are no products")
    codes = command("import-codes", "add codes, one per line, to a product")
    codes.add_argument("sku")
    codes.add_argument("file", type=Path)
    command("run", "run the Telegram bot, or the terminal chat with no token")
    command("ingress", "take Telegram's webhook into Redis for several workers")
    chat = commands.add_parser("chat", help="try the shop in this terminal")
    chat.add_argument(
        "--lang",
        choices=SUPPORTED_LOCALES,
        default=None,
        help="this session's language (default: the member's own choice, else DEFAULT_LOCALE)",
    )
    chat.add_argument(
        "--user-id", type=int, default=DEMO_BUYER, help="the Telegram id to act as (a demo buyer)"
    )
    chat.add_argument("--admin", action="store_true", help="act as an admin")
    topup = command("topup", "credit a member's wallet (yuan)")
    topup.add_argument("member", help="Telegram id, @username or #member-id")
    topup.add_argument("amount", help="yuan: 100 or 12.50")
    topup.add_argument("--reason", required=True)
    tier = command("set-tier", "put a member on a tier (kept until moved)")
    tier.add_argument("member", help="Telegram id, @username or #member-id")
    tier.add_argument("tier", help="a tier key from tiers.toml")
    tier.add_argument("--reason", default="admin")
    review = command("review-tiers", "the quarterly tier review")
    review.add_argument("--dry-run", action="store_true", help="print who would move and why")
    review.add_argument("--quarter", default=None, help="e.g. 2026Q3 (default: last quarter)")
    export = command("export", "orders or the wallet ledger as CSV")
    export.add_argument("kind", choices=["orders", "ledger", "payments"])
    export.add_argument("--from", dest="date_from", type=date.fromisoformat, required=True)
    export.add_argument("--to", dest="date_to", type=date.fromisoformat, required=True)
    export.add_argument(
        "--out", default=None, help="file to write, - for stdout (default DATA_DIR/exports/)"
    )
    refund = command("refund-payment", "refund a Stars top-up (the wallet must still hold it)")
    refund.add_argument("payment", type=int, help="the payment's number (#12: 12)")
    stats = command("stats", "revenue, orders, members, tickets")
    stats.add_argument("--days", type=int, default=7, help="calendar days, today included")
    payments = command("payments", "recent wallet top-ups with their state, newest first")
    payments.add_argument("--state", choices=[state.value for state in PaymentState])
    payments.add_argument("--member", help="Telegram id, @username or #member-id")
    payments.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    command("referrals", "referrers: members joined, buying in 365 days, commission earned")
    reservations = command("reservations", "open stock reservations (held codes), or cancel one")
    reservations.add_argument("--cancel", type=int, metavar="ID", help="end reservation #ID")
    api_key = commands.add_parser(
        "api-key", help="a member's reseller API keys: issue, list, revoke"
    )
    actions = api_key.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, parents=[common])

    issue = action("issue", "a new key; its secret is shown only this once")
    issue.add_argument("member", help="Telegram id, @username or #member-id")
    issue.add_argument("--label", default=None, help="a name for the key (up to 64 characters)")
    issue.add_argument("--json", action="store_true", help='print {"key_id": ..., "secret": ...}')
    listing = action("list", "the member's keys (never their secrets)")
    listing.add_argument("member", help="Telegram id, @username or #member-id")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    revoke = action("revoke", "end a key at once")
    revoke.add_argument("member", help="Telegram id, @username or #member-id")
    revoke.add_argument("key_id", help="the key's id (ak_...)")
    return parser


SHOP_COMMANDS: dict[str, Command] = {
    "seed-demo": _seed_demo,
    "import-codes": _import_codes,
    "topup": _topup,
    "set-tier": _set_tier,
    "review-tiers": _review_tiers,
    "export": _export,
    "refund-payment": _refund_payment,
    "stats": _stats,
    "payments": _payments,
    "referrals": _referrals,
    "reservations": _reservations,
    "api-key": _api_key,
}


def refusal(error: ShopError, t: Translator, ladder: Ladder) -> str:
    """A refusal as the bot words it, with what an operator at a shell needs on top."""
    params = error.params
    match error.code:
        case ErrorCode.MEMBER_NOT_FOUND if "member" in params:
            return t._("No member {query}: give a Telegram id, @username or #member-id.").format(
                query=params["member"]
            )
        case ErrorCode.UNKNOWN_TIER:
            tiers = ", ".join(f"{tier.key} ({tier.name(t.locale)})" for tier in ladder.tiers)
            return t._("No level {tier}. The levels are: {tiers}.").format(
                tier=params.get("tier", ""), tiers=tiers
            )
        case ErrorCode.INVALID_AMOUNT if "text" in params:
            return t._("{text} is not an amount in yuan: write it like 100 or 12.50.").format(
                text=params["text"]
            )
        case ErrorCode.INVALID_AMOUNT if isinstance(amount := params.get("amount"), int) and (
            amount <= 0
        ):
            return t._("The amount must be more than zero, not {amount}.").format(
                amount=t.money(amount)
            )
        case ErrorCode.INVALID_INPUT if "quarter" in params:
            return t._("No quarter {quarter}: write it like 2026Q3.").format(
                quarter=params["quarter"]
            )
        case ErrorCode.INVALID_INPUT if params.get("reason") == "reversed":
            return t._("The --from date is after the --to date.")
        case ErrorCode.INVALID_INPUT if params.get("field") == "days":
            return t._("--days must be from 1 to {max}.").format(max=params.get("max", ""))
        case ErrorCode.INVALID_INPUT if params.get("field") == "reason":
            return t._("Give a --reason: it is kept in the ledger and the audit log.")
        case ErrorCode.PRODUCT_NOT_FOUND if "sku" in params:
            return t._("No product {sku}.").format(sku=params["sku"])
        case _:
            return plain(render_error(error, t, ladder))


def database_problem(error: DBAPIError | OSError, url: str, t: Translator) -> str:
    """One line on why the database at `url` cannot be used (its password hidden)."""
    shown = make_url(url).render_as_string(hide_password=True)
    cause = error.orig if isinstance(error, DBAPIError) else error
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if "no such table" in reason or getattr(cause, "sqlstate", None) == UNDEFINED_TABLE:
        return t._("The database {url} has no shop tables yet: run cardshop migrate.").format(
            url=shown
        )
    return t._("Cannot use the database {url}: {reason}").format(url=shown, reason=reason)


async def _with_shop(
    settings: Settings,
    command: Command,
    args: argparse.Namespace,
    t: Translator,
    clock: Clock | None,
) -> int:
    shop = build_shop(settings, clock=clock)
    try:
        return await command(shop, args, t)
    finally:
        await shop.close()


def _run(settings: Settings, args: argparse.Namespace, t: Translator, clock: Clock | None) -> int:
    if args.command == "migrate":
        asyncio.run(upgrade(settings.database_url))
        print("database is up to date")
        return 0
    if args.command == "run":
        from bot.app import main_run

        return main_run(settings)
    if args.command == "ingress":
        from bot.app import main_ingress

        return main_ingress(settings)
    if args.command == "chat":
        from bot.app import main_chat

        return main_chat(settings, user_id=args.user_id, lang=args.lang, admin=args.admin)
    return asyncio.run(_with_shop(settings, SHOP_COMMANDS[args.command], args, t, clock))


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """`cardshop ARGS`; `clock` is the shop's clock (the wall clock unless a test hands one)."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    t = Translator(
        args.lang or settings.default_locale, currency=settings.shop_currency, zone=settings.zone
    )
    try:
        return _run(settings, args, t, clock)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ShopError as error:
        print(refusal(error, t, load_ladder(settings.tiers_file)), file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(t._("No such file: {path}").format(path=exc.filename), file=sys.stderr)
        return 1
    except (DBAPIError, ConnectionError, TimeoutError, socket.gaierror) as exc:
        print(database_problem(exc, settings.database_url, t), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
