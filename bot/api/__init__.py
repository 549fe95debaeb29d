"""The reseller API (API接口对接): signed JSON over the shop's one HTTP server.

Why aiohttp and pydantic, not FastAPI: the shop already runs exactly one HTTP server,
aiohttp's (`bot.http`: Telegram's webhook, 易支付's callbacks), inside `cardshop run`'s
event loop, with its stopping worked out (SIGTERM, `STOP_GRACE_SECONDS` shared with
the updates in flight). FastAPI would bring Starlette and uvicorn: a second server
stack with its own signal handling and lifespan, or an ASGI bridge inside aiohttp,
for what it mostly gives here, validation and an OpenAPI document from typed models.
Both come from pydantic v2 directly: the route table (`routes.ROUTES`) names each
endpoint's models, which validate requests (`mount`) and give `openapi.json` its
schemas (`openapi`), so the document cannot drift. As for speed, a request's time goes
to the database (shared/perf-facts.md: statements per purchase dominate), not to the
HTTP layer, so a framework swap would win nothing measurable.

Modules: `signing` (the HMAC formula), `guard` (timestamp, key, signature, nonce, tier,
rate), `nonces` and `ratelimit` (in the database / this process, or Redis), `models`,
`routes` (the table and its handlers), `openapi`, `docs` (the page with runnable
examples), `errors` (the one refusal shape), `mount` (the table on aiohttp).
"""

from bot.api.mount import ResellerApi

__all__ = ["ResellerApi"]
