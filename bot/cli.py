"""`cardshop`: the shop from the server's shell.

Every subcommand builds the shop through `core.shop.build_shop` and calls the same core
services the chat uses, so the shell and the bot can never disagree about a rule.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from pathlib import Path

from core.config import Settings, SettingsError, load_settings
from core.demo import DEMO_BUYER, is_empty, seed_demo
from core.errors import ShopError
from core.ladder import SPEND_METRICS
from core.migrate import upgrade
from core.money import format_plain, parse_yuan
from core.shop import Shop, build_shop
from core.tiers import ReviewResult

Command = Callable[[Shop, argparse.Namespace], Awaitable[int]]


async def _seed_demo(shop: Shop, args: argparse.Namespace) -> int:
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


async def _import_codes(shop: Shop, args: argparse.Namespace) -> int:
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


async def _topup(shop: Shop, args: argparse.Namespace) -> int:
    member = await shop.members.find(args.member)
    change = await shop.operations.admin.top_up(
        _actor(), member.id, parse_yuan(args.amount), reason=args.reason
    )
    print(
        f"member #{member.id}: balance {format_plain(change.balance_before)} -> "
        f"{format_plain(change.balance_after)}"
    )
    return 0


async def _set_tier(shop: Shop, args: argparse.Namespace) -> int:
    member = await shop.members.find(args.member)
    change = await shop.operations.admin.set_tier(
        _actor(), member.id, args.tier, reason=args.reason
    )
    print(f"member #{member.id}: {change.from_tier} -> {change.to_tier}")
    return 0


async def _review_tiers(shop: Shop, args: argparse.Namespace) -> int:
    outcomes = await shop.tiers.review(quarter=args.quarter, dry_run=args.dry_run)
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
    if not args.dry_run:
        await shop.operations.audit.log(
            _actor(), "review_tiers", args.quarter or "", None,
            {"reviewed": len(outcomes), "moved": moved},
        )  # fmt: skip
    return 0


async def _export(shop: Shop, args: argparse.Namespace) -> int:
    operations = shop.operations
    export = (
        operations.exports.orders_csv if args.kind == "orders" else operations.exports.ledger_csv
    )
    data = await export(args.date_from, args.date_to)
    await operations.audit.log(
        _actor(), "export", args.kind, None,
        {"from": args.date_from, "to": args.date_to, "bytes": len(data)},
    )  # fmt: skip
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.out.write_bytes(data)
        print(f"wrote {len(data)} bytes to {args.out}")
    return 0


async def _stats(shop: Shop, args: argparse.Namespace) -> int:
    summary = await shop.operations.stats.summary(args.days)
    tickets = summary.tickets
    sla = "-" if tickets.sla_met_percent is None else f"{tickets.sla_met_percent:.1f}%"
    tiers = ", ".join(
        f"{tier} {count}" for tier, count in sorted(summary.tier_distribution.items())
    )
    print(f"{summary.date_from} .. {summary.date_to} ({summary.days} days)")
    print(f"revenue {format_plain(summary.revenue)}, orders {summary.orders}, "
          f"codes sold {summary.codes_sold}, refunds {summary.refunds} "
          f"({format_plain(summary.refunded)})")  # fmt: skip
    print(f"new members {summary.new_members}, check-ins {summary.checkins}")
    print(f"tiers: {tiers or '-'}")
    print(f"tickets {tickets.opened}, answered {tickets.answered}, SLA met {sla}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cardshop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("migrate", help="bring the database schema up to date")
    seed = commands.add_parser("seed-demo", help="stock a demo shop (safe to run twice)")
    seed.add_argument("--if-empty", action="store_true", help="only when there are no products")
    codes = commands.add_parser("import-codes", help="add codes, one per line, to a product")
    codes.add_argument("sku")
    codes.add_argument("file", type=Path)
    commands.add_parser("run", help="run the Telegram bot, or the terminal chat with no token")
    chat = commands.add_parser("chat", help="try the shop in this terminal")
    chat.add_argument(
        "--user-id", type=int, default=DEMO_BUYER, help="the Telegram id to act as (a demo buyer)"
    )
    chat.add_argument("--lang", choices=["zh_CN", "en"], default=None)
    chat.add_argument("--admin", action="store_true", help="act as an admin")
    topup = commands.add_parser("topup", help="credit a member's wallet (yuan)")
    topup.add_argument("member", help="Telegram id, @username or #member-id")
    topup.add_argument("amount", help="yuan: 100 or 12.50")
    topup.add_argument("--reason", required=True)
    tier = commands.add_parser("set-tier", help="put a member on a tier (kept until moved)")
    tier.add_argument("member", help="Telegram id, @username or #member-id")
    tier.add_argument("tier", help="a tier key from tiers.toml")
    tier.add_argument("--reason", default="admin")
    review = commands.add_parser("review-tiers", help="the quarterly tier review")
    review.add_argument("--dry-run", action="store_true", help="print who would move and why")
    review.add_argument("--quarter", default=None, help="e.g. 2026Q3 (default: last quarter)")
    export = commands.add_parser("export", help="orders or the wallet ledger as CSV")
    export.add_argument("kind", choices=["orders", "ledger"])
    export.add_argument("--from", dest="date_from", type=date.fromisoformat, required=True)
    export.add_argument("--to", dest="date_to", type=date.fromisoformat, required=True)
    export.add_argument("--out", type=Path, default=None, help="file to write (default stdout)")
    stats = commands.add_parser("stats", help="revenue, orders, members, tickets")
    stats.add_argument("--days", type=int, default=7, help="calendar days, today included")
    return parser


SHOP_COMMANDS: dict[str, Command] = {
    "seed-demo": _seed_demo,
    "import-codes": _import_codes,
    "topup": _topup,
    "set-tier": _set_tier,
    "review-tiers": _review_tiers,
    "export": _export,
    "stats": _stats,
}


async def _with_shop(settings: Settings, command: Command, args: argparse.Namespace) -> int:
    shop = build_shop(settings)
    try:
        return await command(shop, args)
    finally:
        await shop.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "migrate":
            asyncio.run(upgrade(settings.database_url))
            print("database is up to date")
            return 0
        if args.command == "run":
            from bot.app import main_run

            return main_run(settings)
        if args.command == "chat":
            from bot.terminal import main_chat

            return main_chat(settings, user_id=args.user_id, lang=args.lang, admin=args.admin)
        return asyncio.run(_with_shop(settings, SHOP_COMMANDS[args.command], args))
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except ShopError as exc:
        print(f"refused: {exc.code.value} {exc.params or ''}".rstrip(), file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"no such file: {exc.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
