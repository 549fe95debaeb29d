"""The API's per-key rate: a sliding minute, the same in this process and in Redis."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from bot.api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from bot.app import redis_client

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_795_000_000.0


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    redis = redis_client(REDIS_URL)
    try:
        yield RedisRateLimiter(redis, namespace=f"test-{secrets.token_hex(4)}")
    finally:
        await redis.aclose()


async def test_a_burst_straddling_a_minute_boundary_cannot_double_the_rate(
    limiter: RateLimiter,
) -> None:
    key = "ak_" + secrets.token_hex(8)
    assert await limiter.admit(key, 2, T0 + 50) is None
    assert await limiter.admit(key, 2, T0 + 59) is None
    # A fixed window would start afresh at T0 + 60; the sliding minute still holds both.
    assert await limiter.admit(key, 2, T0 + 61) == 49
    assert await limiter.admit(key, 2, T0 + 110.5) is None
    assert await limiter.admit(key, 2, T0 + 111) == 8


async def test_each_key_has_its_own_minute(limiter: RateLimiter) -> None:
    first, second = ("ak_" + secrets.token_hex(8) for _ in range(2))
    assert await limiter.admit(first, 1, T0) is None
    assert await limiter.admit(first, 1, T0) == 60
    assert await limiter.admit(second, 1, T0) is None
