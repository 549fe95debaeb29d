"""`cardshop run` with the flood pace lifted, for `bench.workers`: it measures the
workers, not Telegram's 28 requests a second. Everything else is the shipped command."""

from __future__ import annotations

import sys

from redis.asyncio import Redis

import bot.app
from bot.cli import main
from bot.flood import FloodControl
from bot.framework import Runtime
from core.shop import Shop

shipped = bot.app.build_runtime


def lifted(shop: Shop, redis: Redis | None = None) -> Runtime:
    runtime = shipped(shop, redis)
    runtime.flood = FloodControl(per_second=1e9)
    return runtime


if __name__ == "__main__":
    bot.app.build_runtime = lifted
    sys.exit(main())
