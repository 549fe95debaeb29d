"""The route table served by aiohttp: each request guarded, parsed, handled, answered.

For every route of `ROUTES` one aiohttp handler reads the body, asks the guard who is
calling (`bot.api.guard`), checks the route's tier capability, validates the body or
query with the route's model, runs the handler and writes its model as JSON. Every
refusal, the shop's or the API's, leaves as the one error shape (`bot.api.errors`);
anything unexpected is logged with its traceback and answered 500 without details.
Unknown paths and methods under /api/v1/ are a JSON 404, before any signature check.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from redis.asyncio import Redis

from bot.api import docs, openapi
from bot.api.errors import (
    BAD_REQUEST,
    INTERNAL,
    INVALID_INPUT,
    NOT_FOUND,
    ApiError,
    dumps,
    from_shop,
)
from bot.api.guard import Guard
from bot.api.models import ID_MAX
from bot.api.nonces import DbNonces, NonceStore, RedisNonces
from bot.api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from bot.api.routes import PREFIX, ROUTES, Call, Route
from bot.i18n import Translator
from core.errors import ShopError
from core.shop import Shop

log = logging.getLogger(__name__)

#: A body larger than this is refused unread: the biggest real one is a few hundred bytes.
BODY_MAX = 16 * 1024
#: An `{id}` in a path: a positive integer a database id can be.
_ID = r"[1-9][0-9]{0,18}"


class ResellerApi:
    """The API over one shop; Redis (when given) shares nonces and rate limits."""

    def __init__(self, shop: Shop, redis: Redis | None = None) -> None:
        settings = shop.settings
        self._shop = shop
        self._english = Translator("en", currency=settings.shop_currency, zone=settings.zone)
        nonces: NonceStore
        limiter: RateLimiter
        if redis is None:
            nonces, limiter = DbNonces(shop.api_keys), MemoryRateLimiter()
        else:
            nonces, limiter = RedisNonces(redis, shop.api_keys, shop.clock), RedisRateLimiter(redis)
        self._guard = Guard(shop.api_keys, shop.clock, nonces, limiter, self._english, shop.ladder)
        self._openapi = dumps(openapi.document(settings.public_url))
        self._docs = docs.page()

    def mount(self, router: web.UrlDispatcher) -> None:
        """Add every route, the document and the docs page, and the JSON 404."""
        for route in ROUTES:
            path = route.path
            for name in route.ids:
                path = path.replace(f"{{{name}}}", f"{{{name}:{_ID}}}")
            router.add_route(route.method, path, self._serving(route))
        router.add_get(f"{PREFIX}/openapi.json", self._document)
        router.add_get(f"{PREFIX}/docs", self._page)
        router.add_route("*", PREFIX + "/{tail:.*}", self._not_found)

    async def _document(self, request: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=self._docs, content_type="text/html")

    async def _not_found(self, request: web.Request) -> web.Response:
        return ApiError(404, NOT_FOUND, f"No {request.method} {request.path} here.").response()

    def _serving(self, route: Route) -> Any:
        async def serve(request: web.Request) -> web.Response:
            try:
                return await self._answer(route, request)
            except ApiError as refusal:
                return refusal.response()
            except ShopError as refusal:
                return from_shop(refusal, self._english, self._shop.ladder).response()
            except Exception:
                log.exception("api: %s %s failed", request.method, request.path)
                message = "Something went wrong on our side; nothing was charged twice. Retry."
                return ApiError(500, INTERNAL, message).response()

        return serve

    async def _answer(self, route: Route, request: web.Request) -> web.Response:
        if (request.content_length or 0) > BODY_MAX:
            raise ApiError(400, BAD_REQUEST, f"The body is larger than {BODY_MAX} bytes.")
        raw = await request.read()
        caller = await self._guard.caller(request, raw)
        if route.capability is not None:
            self._shop.tiers.require(caller.tier_key, route.capability)
        ids = {name: int(request.match_info[name]) for name in route.ids}
        if any(value > ID_MAX for value in ids.values()):
            raise ApiError(404, NOT_FOUND, "No such id.")
        call = Call(
            shop=self._shop,
            caller=caller,
            body=None if route.body is None else _body(route.body, raw),
            query=None if route.query is None else _query(route.query, request),
            ids=ids,
        )
        reply = await route.handler(call)
        body = reply.answer.model_dump(mode="json")
        return web.json_response(body, status=reply.status, dumps=dumps)


def _body(model: type[Any], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise ApiError(400, BAD_REQUEST, "The body is not valid JSON.") from None
        raise _invalid(exc) from None


def _query(model: type[Any], request: web.Request) -> Any:
    query = request.query
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    if repeated:
        raise ApiError(422, INVALID_INPUT, f"{repeated[0]} is given twice.", {"field": repeated[0]})
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> ApiError:
    """A 422 naming each field the model refused and why (pydantic's words)."""
    errors = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body", "reason": error["msg"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = errors[0]
    message = f"{first['field']}: {first['reason']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ApiError(422, INVALID_INPUT, message, {"field": first["field"], "errors": errors})
