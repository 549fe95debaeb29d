"""Several workers behind Telegram's one webhook: the ingress, and workers fed by Redis.

Telegram posts every update to one URL. `cardshop ingress` owns it: it checks the
secret, refuses what is no update (400), appends the raw update to a Redis stream and
answers 200 only once the append succeeded, so a Redis failure makes Telegram send the
update again. Streams are partitioned by chat (`<ns>:updates:<chat id mod P>`,
UPDATE_PARTITIONS); an update without a chat (a pre-checkout query) goes by its user,
whose private chat is the same number.

Workers are `cardshop run` with UPDATES_FROM=redis. A chat's updates must be handled
one at a time and in order, so each partition is read by one worker at a time: the
worker holds the partition's lease (`SET NX PX`, renewed every `HEARTBEAT`, given up
by compare-and-delete) and reads its stream through the consumer group `GROUP`. Within
a batch, different chats run concurrently and one chat's entries in order; an entry is
acknowledged (and deleted) once handled. Every live worker takes its fair share of the
partitions (P / live workers, rounded up), giving extras back after the batch in hand,
so a new worker gets work and a dead one's partitions are taken over once its lease
expires. The new owner first claims the partition's pending entries (`XAUTOCLAIM`:
taken by the dead worker, never acknowledged) and handles them before anything newer.

Exactly once: an entry handled but not yet acknowledged when its worker died is
handled again by the next owner. Its effects are not applied twice because workers
keep chat state and handled update ids in the database (`bot.state.DbChatStore`),
where the update's claim commits in the same transaction as its first write
(`core.chat_state`): a redelivered update finds its claim and is skipped, and an update
cut off before its write commits is handled afresh. Only replies sent between the
last write and the claim of a message-only update (a menu, say) can be sent twice, and
only for the updates in the dead worker's hands (logged as redelivered).

Handling goes through the configured adapter (`bot.adapters.telegram.take_updates`),
the same reading and `Runtime.handle` that polling and the webhook use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from datetime import timedelta
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.framework import STOP_GRACE_SECONDS
from bot.http import HttpServer
from bot.incoming import UPDATE_TYPES, BadUpdateError
from core.config import Settings, SettingsError
from core.jobs import worker_name

log = logging.getLogger(__name__)

NAMESPACE = "cardshop"
#: The consumer group every worker reads through.
GROUP = "workers"
#: A partition's lease lasts this long without renewal: a dead worker's chats wait at
#: most this long before another worker takes them over.
LEASE = timedelta(seconds=5)
#: How often a worker renews its leases, announces itself and rebalances.
HEARTBEAT = timedelta(seconds=1)
#: Entries read from a stream at once.
BATCH = 32
#: How long one read waits for new entries before the worker looks at its leases again.
BLOCK_MS = 1000
#: The entry field holding the update's JSON.
FIELD = "u"

# Leases are compared before they are renewed or given up, so a worker that stalled
# past its lease never renews or deletes the next owner's.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Announce this worker (score: Redis's clock in ms), forget silent ones, count the live.
_PRESENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""

#: Hands one update, as the adapter's framework parsed it, on; returns once it is handled.
Handle = Callable[[Any], Awaitable[object]]


def update_chat(update: dict[str, Any]) -> int:
    """The chat an update belongs to, for ordering: its chat, else its sender.

    Messages, edits, taps on a message and membership changes carry a chat; a
    pre-checkout query (or a tap on an inline message) only its sender, whose private
    chat has the same id. BadUpdateError when the update carries neither.
    """
    for kind in UPDATE_TYPES:
        body = update.get(kind)
        if body is None:
            continue
        if not isinstance(body, dict):
            break
        holder = body.get("message") if kind == "callback_query" else body
        chat = holder.get("chat") if isinstance(holder, dict) else None
        if isinstance(chat, dict) and _is_id(chat.get("id")):
            return int(chat["id"])
        sender = body.get("from")
        if isinstance(sender, dict) and _is_id(sender.get("id")):
            return int(sender["id"])
        break
    raise BadUpdateError("an update with no chat and no sender")


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class UpdateStreams:
    """The partitioned streams the ingress writes and the workers read."""

    def __init__(self, redis: Redis, partitions: int, namespace: str = NAMESPACE) -> None:
        self.redis = redis
        self.partitions = partitions
        self._ns = namespace
        self.workers_key = f"{namespace}:workers"

    def stream(self, partition: int) -> str:
        return f"{self._ns}:updates:{partition}"

    def lease(self, partition: int) -> str:
        return f"{self._ns}:updates:{partition}:lease"

    def partition(self, update: dict[str, Any]) -> int:
        return update_chat(update) % self.partitions

    async def publish(self, update: dict[str, Any]) -> None:
        """Append the update to its chat's stream (the ingress's one write)."""
        await self.redis.xadd(self.stream(self.partition(update)), {FIELD: json.dumps(update)})

    async def ensure_groups(self) -> None:
        """The consumer group on every stream, created with the stream when missing."""
        for partition in range(self.partitions):
            try:
                await self.redis.xgroup_create(self.stream(partition), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


# --- the ingress ---------------------------------------------------------------------------


def checked_update(update: dict[str, Any]) -> dict[str, Any]:
    """The webhook's reading in the ingress: an update the streams can place, kept raw."""
    update_chat(update)
    return update


async def set_webhook(settings: Settings, secret: str) -> None:
    """Point Telegram at the ingress, asking for exactly the updates the bot reads."""
    from bot.adapters.telegram import ALLOWED_UPDATES, TOKEN, api_roots

    assert settings.telegram_bot_token is not None
    assert settings.webhook_url is not None
    token = settings.telegram_bot_token.get_secret_value()
    requests, _ = api_roots(settings.telegram_api_base or "https://api.telegram.org")
    body = {"url": settings.webhook_url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{requests.replace(TOKEN, token)}/setWebhook", json=body) as reply,
    ):
        answer = await reply.json()
    if not answer.get("ok"):
        raise RuntimeError(f"setWebhook refused: {answer.get('description')}")


def ingress_settings_problem(settings: Settings) -> str | None:
    """What the ingress lacks to run, in the settings' own names; None when complete."""
    missing = [
        name
        for name, value in (
            ("TELEGRAM_BOT_TOKEN", settings.telegram_bot_token),
            ("WEBHOOK_URL", settings.webhook_url),
            ("WEBHOOK_SECRET", settings.webhook_secret),
            ("REDIS_URL", settings.redis_url),
        )
        if value is None
    ]
    return f"the ingress needs {', '.join(missing)}" if missing else None


async def ingress(settings: Settings) -> None:
    """`cardshop ingress`: Telegram's webhook into the streams, until cancelled."""
    from bot.app import redis_client

    problem = ingress_settings_problem(settings)
    if problem is not None:
        raise SettingsError(problem)
    assert settings.redis_url is not None
    redis = redis_client(settings.redis_url)
    try:
        streams = UpdateStreams(redis, settings.update_partitions)
        await streams.ensure_groups()
        http = HttpServer(settings)
        secret = http.add_webhook(checked_update, streams.publish, answer_after=True)
        async with http.serving():
            await set_webhook(settings, secret)
            log.info("ingress: updates go to %s partitions", streams.partitions)
            await asyncio.Event().wait()
    finally:
        await redis.aclose()


# --- the workers ---------------------------------------------------------------------------


class PartitionWorker:
    """Takes a fair share of the partitions under leases and handles their streams."""

    def __init__(
        self,
        streams: UpdateStreams,
        handle: Handle,
        parse: Callable[[dict[str, Any]], Any],
        *,
        name: str | None = None,
        lease: timedelta = LEASE,
        heartbeat: timedelta = HEARTBEAT,
    ) -> None:
        self.streams = streams
        self.redis = streams.redis
        self.name = name or worker_name()
        self._handle = handle
        self._parse = parse
        self._lease_ms = int(lease.total_seconds() * 1000)
        self._heartbeat = heartbeat.total_seconds()
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._present = self.redis.register_script(_PRESENT)
        #: The partitions held, each with its reading task and the event that stops it.
        self._held: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}

    async def run(self) -> None:
        """Hold, read and hand on partitions until cancelled; then let go of them.

        Cancelled, each partition finishes the batch in hand (`STOP_GRACE_SECONDS` in
        all) before its lease is given up, as the adapters let updates in flight finish.
        """
        await self.streams.ensure_groups()
        log.info("worker %s: reading %s partitions", self.name, self.streams.partitions)
        try:
            while True:
                try:
                    await self._rebalance()
                except RedisError:
                    log.warning("worker %s: Redis unavailable; retrying", self.name, exc_info=True)
                await asyncio.sleep(self._heartbeat)
        finally:
            await self._stop_all()

    async def _rebalance(self) -> None:
        """Renew what is held, drop what was lost, and take or give back to a fair share."""
        for partition in [p for p, (task, _) in self._held.items() if task.done()]:
            await self._let_go(partition)
        for partition in list(self._held):
            renewed = await self._renew(
                keys=[self.streams.lease(partition)], args=[self.name, self._lease_ms]
            )
            if not renewed:
                log.error("worker %s: lease of partition %s lost", self.name, partition)
                self._held[partition][1].set()
        live = int(
            await self._present(keys=[self.streams.workers_key], args=[self.name, self._lease_ms])
        )
        share = math.ceil(self.streams.partitions / max(live, 1))
        holding = [p for p, (_, stop) in self._held.items() if not stop.is_set()]
        for partition in sorted(holding, reverse=True)[: max(len(holding) - share, 0)]:
            self._held[partition][1].set()  # gives it back once its batch is done
        wanted = share - min(len(holding), share)
        for partition in self._free_order():
            if wanted <= 0:
                break
            if partition in self._held:
                continue
            taken = await self.redis.set(
                self.streams.lease(partition), self.name, nx=True, px=self._lease_ms
            )
            if taken:
                wanted -= 1
                stop = asyncio.Event()
                task = asyncio.create_task(
                    self._serve(partition, stop), name=f"partition-{partition}"
                )
                self._held[partition] = (task, stop)

    def _free_order(self) -> Iterable[int]:
        """Partitions to try, starting at one of this worker's own so workers spread out."""
        count = self.streams.partitions
        start = sum(self.name.encode()) % count
        return ((start + i) % count for i in range(count))

    async def _let_go(self, partition: int) -> None:
        task, _ = self._held.pop(partition)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "worker %s: partition %s stopped", self.name, partition, exc_info=task.exception()
            )
        with suppress(RedisError):
            await self._release(keys=[self.streams.lease(partition)], args=[self.name])

    async def _stop_all(self) -> None:
        for _, stop in self._held.values():
            stop.set()
        tasks = [task for task, _ in self._held.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for partition in list(self._held):
            await self._let_go(partition)
        with suppress(RedisError):
            await self.redis.zrem(self.streams.workers_key, self.name)

    # --- one partition --------------------------------------------------------------------

    async def _serve(self, partition: int, stop: asyncio.Event) -> None:
        """A held partition: first what a dead owner left, then new entries, in order."""
        stream = self.streams.stream(partition)
        claimed = await self._claim_pending(stream)
        if claimed:
            log.warning(
                "worker %s: partition %s: redelivering update(s) %s left unacknowledged",
                self.name,
                partition,
                ",".join(str(u) for u in claimed),
            )
        backlog = True
        while not stop.is_set():
            # "0": entries delivered to this consumer and not acknowledged (the claimed
            # ones, and any of an earlier run under this name) before anything new.
            start = "0" if backlog else ">"
            block = None if backlog else BLOCK_MS
            replies: Any = await self.redis.xreadgroup(
                GROUP, self.name, {stream: start}, count=BATCH, block=block
            )
            entries: list[tuple[Any, dict[Any, Any]]] = replies[0][1] if replies else []
            if backlog and not entries:
                backlog = False
                continue
            await self._handle_batch(stream, entries)

    async def _claim_pending(self, stream: str) -> list[int]:
        """Take every entry another consumer read and never acknowledged; their update ids."""
        claimed: list[int] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                stream, GROUP, self.name, min_idle_time=0, start_id=cursor, count=100
            )
            cursor, entries = reply[0], reply[1]
            claimed.extend(_update_id(fields) for _, fields in entries)
            if cursor in (b"0-0", "0-0"):
                break
        await self._forget_consumers(stream)
        return claimed

    async def _forget_consumers(self, stream: str) -> None:
        """Drop the group's other consumers on this stream that hold nothing: every
        worker that ever ran would otherwise stay listed (one that reads again is
        simply listed anew)."""
        consumers: Any = await self.redis.xinfo_consumers(stream, GROUP)
        for consumer in consumers:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != self.name and int(consumer["pending"]) == 0:
                await self.redis.xgroup_delconsumer(stream, GROUP, name)

    async def _handle_batch(self, stream: str, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        """Each chat's entries in order, the chats at once; each acknowledged when done.

        A pre-checkout query waits for nothing (Telegram wants its answer within 10 s
        and it changes nothing; the runtime answers it outside the chat's lock too).
        """
        by_chat: dict[object, list[tuple[Any, dict[str, Any] | None]]] = {}
        for entry_id, fields in entries:
            update = _decoded(fields)
            chat: object = _chat_or_none(update)
            if update is not None and "pre_checkout_query" in update:
                chat = entry_id
            by_chat.setdefault(chat, []).append((entry_id, update))

        async def one_chat(queue: list[tuple[Any, dict[str, Any] | None]]) -> None:
            for entry_id, update in queue:
                if update is not None:
                    await self._handle_one(update)
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(stream, GROUP, entry_id)
                    pipe.xdel(stream, entry_id)
                    await pipe.execute()

        await asyncio.gather(*(one_chat(queue) for queue in by_chat.values()))

    async def _handle_one(self, update: dict[str, Any]) -> None:
        """Through the adapter; a failure is logged and the entry counts as handled (the
        runtime answers its own failures, so one reaching here would fail every retry)."""
        try:
            parsed = self._parse(update)
        except Exception as exc:
            log.warning("update %s: not readable (%s); dropped", update.get("update_id"), exc)
            return
        try:
            await self._handle(parsed)
        except Exception:
            log.exception("update %s failed", update.get("update_id"))


def _decoded(fields: dict[Any, Any]) -> dict[str, Any] | None:
    raw: Any = fields.get(FIELD.encode(), fields.get(FIELD))
    try:
        update = json.loads(raw)
    except (TypeError, ValueError):
        log.warning("a stream entry that is no update: dropped")
        return None
    return update if isinstance(update, dict) else None


def _chat_or_none(update: dict[str, Any] | None) -> int | None:
    if update is None:
        return None
    try:
        return update_chat(update)
    except BadUpdateError:
        return None


def _update_id(fields: dict[Any, Any]) -> int:
    update = _decoded(fields)
    value = update.get("update_id") if update is not None else None
    return value if isinstance(value, int) else -1


async def consume(
    settings: Settings, parse: Callable[[dict[str, Any]], Any], handle: Handle
) -> None:
    """UPDATES_FROM=redis: this worker's share of the streams, until cancelled."""
    from bot.app import redis_client

    if settings.redis_url is None:
        raise SettingsError("UPDATES_FROM=redis needs REDIS_URL")
    # Every held partition keeps one read waiting: a pool of its own, sized for them all.
    redis = redis_client(settings.redis_url, max_connections=settings.update_partitions + 8)
    try:
        streams = UpdateStreams(redis, settings.update_partitions)
        await PartitionWorker(streams, handle, parse).run()
    finally:
        await redis.aclose()
