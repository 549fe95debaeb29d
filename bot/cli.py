"""`cardshop`: the shop from the server's shell.

Every subcommand builds the shop through `core.shop.build_shop` and calls the same core
services the chat uses, so the shell and the bot can never disagree about a rule.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from core.config import Settings, SettingsError, load_settings
from core.demo import is_empty, seed_demo
from core.errors import ShopError
from core.migrate import upgrade
from core.shop import Shop, build_shop
from core.stock import StockService

Command = Callable[[Shop, argparse.Namespace], Awaitable[int]]


async def _seed_demo(shop: Shop, args: argparse.Namespace) -> int:
    if args.if_empty and not await is_empty(shop.db):
        print("the shop already has products: demo seed skipped")
        return 0
    report = await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
    print(report)
    return 0


async def _import_codes(shop: Shop, args: argparse.Namespace) -> int:
    path: Path = args.file
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    report = await StockService(shop.db, shop.vault, shop.clock).import_codes(args.sku, lines)
    print(
        f"added {report.added}, duplicate {report.duplicate}, rejected {report.rejected}; "
        f"{report.stock_after} in stock for {args.sku}"
    )
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
    chat.add_argument("--user-id", type=int, default=1, help="the Telegram id to act as")
    chat.add_argument("--lang", choices=["zh_CN", "en"], default=None)
    chat.add_argument("--admin", action="store_true", help="act as an admin")
    return parser


SHOP_COMMANDS: dict[str, Command] = {
    "seed-demo": _seed_demo,
    "import-codes": _import_codes,
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
