"""Who is calling, or a refusal: the checks every signed request passes, in this order.

1. the four headers are there and well-formed;
2. `X-Timestamp` is within `REPLAY_WINDOW` seconds of the shop's clock;
3. `X-Api-Key` names a live key, and `X-Signature` is that key's (`bot.api.signing`);
4. `X-Nonce` is new for the key (remembered until the timestamp leaves the window);
5. the key's member still has a tier with `api` (else 403, saying why);
6. the key is under its tier's requests per minute (else 429 with `Retry-After`).

Steps 1-4 answer 401 with nothing changed and one log line: the nonce is the first
thing written, and only for a request whose signature checked out, so a forged or
replayed request leaves no trace but the log. Unknown key and wrong signature read the
same to the caller, so key ids cannot be probed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

from bot.api.errors import RATE_LIMITED, UNAUTHORIZED, ApiError, from_shop
from bot.api.nonces import NonceStore
from bot.api.ratelimit import RateLimiter
from bot.api.signing import verify
from bot.i18n import Translator
from core.api_keys import NONCE_MAX, ApiCaller, ApiKeys
from core.clock import Clock
from core.errors import ErrorCode, ShopError
from core.ladder import Ladder

log = logging.getLogger(__name__)

#: How far a request's timestamp may be from the shop's clock, either way (seconds).
REPLAY_WINDOW = 300
KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER = (
    "X-Api-Key", "X-Timestamp", "X-Nonce", "X-Signature"
)  # fmt: skip
SIGNED_HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: Visible ASCII, no spaces, as long as the nonce store keeps.
NONCE = re.compile(rf"[\x21-\x7e]{{1,{NONCE_MAX}}}")


@dataclass(frozen=True, slots=True)
class Guard:
    keys: ApiKeys
    clock: Clock
    nonces: NonceStore
    limiter: RateLimiter
    english: Translator
    ladder: Ladder

    async def caller(self, request: web.Request, body: bytes) -> ApiCaller:
        """The caller behind a signed request, or the ApiError that answers it."""
        headers = {name: request.headers.get(name, "") for name in SIGNED_HEADERS}
        key_id, stamp, nonce = headers[KEY_HEADER], headers[TIMESTAMP_HEADER], headers[NONCE_HEADER]
        missing = [name for name, value in headers.items() if not value]
        if missing:
            raise self._refuse(
                request, key_id, "missing_header",
                f"The request is not signed: header {missing[0]} is missing.",
                header=missing[0],
            )  # fmt: skip
        if not TIMESTAMP.fullmatch(stamp):
            raise self._refuse(
                request, key_id, "timestamp", "X-Timestamp must be whole unix seconds."
            )
        now = self.clock.now().timestamp()
        if abs(int(stamp) - now) > REPLAY_WINDOW:
            raise self._refuse(
                request, key_id, "timestamp",
                f"X-Timestamp is more than {REPLAY_WINDOW} seconds away from the server's"
                " time: check your clock.",
                server_time=int(now),
            )  # fmt: skip
        if not NONCE.fullmatch(nonce):
            raise self._refuse(
                request, key_id, "nonce",
                f"X-Nonce must be 1 to {NONCE_MAX} visible ASCII characters.",
            )  # fmt: skip
        caller = await self.keys.authenticate(key_id)
        if caller is None or not verify(
            caller.secret, headers[SIGNATURE_HEADER], stamp, nonce,
            request.method, request.raw_path, body,
        ):  # fmt: skip
            raise self._refuse(
                request, key_id, "signature",
                "The key or the signature is not valid (revoked keys stop at once).",
            )  # fmt: skip
        expires_at = datetime.fromtimestamp(int(stamp) + REPLAY_WINDOW + 1, UTC)
        if not await self.nonces.remember(key_id, nonce, expires_at):
            raise self._refuse(
                request, key_id, "nonce",
                "This X-Nonce was used before with this key: send a new one with every request.",
            )  # fmt: skip
        if not caller.allowed:
            log.info("api: %s refused, tier %s lacks api", key_id, caller.tier_key)
            raise from_shop(
                ShopError(ErrorCode.API_NOT_ALLOWED, tier=caller.tier_key),
                self.english,
                self.ladder,
            )
        wait = await self.limiter.admit(key_id, caller.requests_per_minute, now)
        if wait is not None:
            raise ApiError(
                429, RATE_LIMITED,
                f"Too many requests: this key may make {caller.requests_per_minute} a minute."
                f" Try again in {wait} s.",
                {"limit": caller.requests_per_minute, "retry_after": wait},
                retry_after=wait,
            )  # fmt: skip
        return caller

    def _refuse(
        self, request: web.Request, key_id: str, reason: str, message: str, **params: object
    ) -> ApiError:
        """A 401, logged in one line (the key id is public; never the signature)."""
        log.warning(
            "api: refused %s %s from %s: %s (key %r)",
            request.method, request.raw_path[:200], request.remote, reason, key_id[:40],
        )  # fmt: skip
        return ApiError(401, UNAUTHORIZED, message, {"reason": reason, **params})
