"""Several workers: updates per second and CPU-seconds per update, 1 worker against 2.

What is measured: the real layout (`bot.workers`): `cardshop ingress` on the webhook of
the Bot API stand-in (`tests.botapi`, its flood limits lifted) and N `cardshop run`
workers (UPDATES_FROM=redis), each a process of its own on PostgreSQL + Redis. A burst
of updates from many chats (/start, /checkin, /level, /help) is posted to the webhook
by the stand-in as Telegram would, and the clock runs from the first post until every
update has a row in `processed_updates`. CPU-seconds are read from /proc for every
worker and for the ingress, so the figure per update holds however the machine's
cores are shared. Rounds alternate 1 and 2 workers.

The shop's flood pace (28 requests/s, shared by the workers through Redis) would
measure Telegram's limit, not the workers: the workers here are `cardshop run` with
the pace lifted (`bench.workers_main`), everything else as shipped.

Why: on a 2-core machine that also runs PostgreSQL, Redis, the ingress and the stand-in,
a second worker can add little wall-clock throughput; CPU-seconds per update show what
one worker costs, and so how many updates/s each further core would carry.

Run: `BENCH_DATABASE_URL=postgresql+asyncpg://… BENCH_REDIS_URL=redis://…/N python -m
bench.workers --updates 600 --rounds 2` (both are WIPED first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import func, select

from bot.workers import UpdateStreams
from core.models import ProcessedUpdate
from core.uow import Database
from tests.botapi import BotApiStub
from tests.factories import tiers_file_with

#: Ticks per second of /proc's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WEBHOOK_SECRET = "bench-secret"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the name: state is field 3, utime 14 and stime 15 (1-based, man proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """The ingress and the workers, each a `cardshop` process of its own."""

    env: dict[str, str]
    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @classmethod
    def configured(
        cls,
        folder: Path,
        *,
        database_url: str,
        redis_url: str,
        api: BotApiStub,
        partitions: int = 16,
        extra: dict[str, str] | None = None,
    ) -> Cluster:
        """Settings for every process, in the environment, with no .env in reach."""
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "BENCH_"))},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TELEGRAM_BOT_TOKEN": api.token,
            "TELEGRAM_API_BASE": api.base_url,
            "CODE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATA_DIR": str(folder / "data"),
            "TIERS_FILE": str(tiers_file_with(folder, max_orders=10**6, max_failures=10**6)),
            # The checkout, for `bench.workers_main` (the shop's own packages are installed).
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "UPDATES_FROM": "redis",
            "UPDATE_PARTITIONS": str(partitions),
            "WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/webhook",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "HTTP_LISTEN": f"127.0.0.1:{port}",
            **(extra or {}),
        }
        return cls(env, folder)

    def start(
        self, name: str, *command: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`command` (a `cardshop` command line) as process `name`, its log in the folder."""
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *command],
                env={**self.env, **(env or {})},
                cwd=self.folder,
                stdout=log,
                stderr=log,
            )
        self.processes[name] = process
        return process

    def start_ingress(self) -> None:
        self.start("ingress", "-m", "bot.cli", "ingress")

    def start_worker(self, name: str, module: str = "bot.cli") -> None:
        """A worker; its HTTP server (the reseller API, 易支付) on a port of its own."""
        self.start(name, "-m", module, "run", env={"HTTP_LISTEN": f"127.0.0.1:{free_port()}"})

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def workers(self) -> Iterator[str]:
        return (name for name in self.processes if name != "ingress")

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye, leases and unacknowledged entries left behind."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    async def stop(self) -> None:
        """SIGTERM to every process still running (each stops gracefully), then wait.

        The wait runs in a thread: the Bot API stand-in lives on this event loop, and a
        worker finishing its updates in flight needs it to answer them.
        """
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self._reap)

    def _reap(self) -> None:
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid) for name, p in self.processes.items() if p.poll() is None}


async def wait_until_ready(cluster: Cluster, api: BotApiStub, redis: Redis, workers: int) -> None:
    """The ingress has set the webhook; `workers` workers hold every partition."""
    partitions = int(cluster.env["UPDATE_PARTITIONS"])
    streams = UpdateStreams(redis, partitions)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{cluster.log(name)}")
        holders = await redis.mget([streams.lease(p) for p in range(partitions)])
        present = await redis.zcard(streams.workers_key)
        spread = len(set(holders)) == min(workers, partitions)
        if api.calls_to("setWebhook") and None not in holders and present == workers and spread:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the cluster did not come up within 60 s")


async def wipe(database_url: str, redis_url: str) -> None:
    from core.migrate import migrate_afresh

    await migrate_afresh(database_url)
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


async def handled(db: Database) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedUpdate)) or 0)


@dataclass(frozen=True)
class Round:
    workers: int
    updates: int
    seconds: float
    cpu: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.updates / self.seconds

    @property
    def worker_busy(self) -> float:
        """The workers' CPU time over their wall time: how much of a core each really got."""
        spent = sum(v for k, v in self.cpu.items() if k != "ingress")
        return spent / (self.seconds * self.workers)

    @property
    def worker_cpu_per_update_ms(self) -> float:
        spent = sum(v for k, v in self.cpu.items() if k != "ingress")
        return spent / self.updates * 1000


COMMANDS = ("start", "checkin", "level", "help")


async def one_round(
    database_url: str, redis_url: str, workers: int, updates: int, folder: Path
) -> Round:
    """A fresh shop, the cluster with `workers` workers, `updates` updates through it."""
    from core.config import load_settings
    from core.demo import seed_demo
    from core.shop import build_shop

    await wipe(database_url, redis_url)
    redis = Redis.from_url(redis_url)
    async with BotApiStub() as api:
        api.limits.enabled = False
        api.webhook_timeout = 60.0
        cluster = Cluster.configured(
            folder,
            database_url=database_url,
            redis_url=redis_url,
            api=api,
        )
        settings = load_settings(
            database_url=database_url,
            code_encryption_keys=cluster.env["CODE_ENCRYPTION_KEYS"],
            data_dir=folder / "data",
            _env_file=None,
        )
        shop = build_shop(settings)
        try:
            await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
            cluster.start_ingress()
            for index in range(workers):
                cluster.start_worker(f"worker{index}", "bench.workers_main")
            await wait_until_ready(cluster, api, redis, workers)
            before = cluster.cpu()
            chats = [api.user(7_000_000 + i, language_code="en") for i in range(updates // 4)]
            started = time.perf_counter()
            for turn in range(updates):
                api.inject_message(chats[turn % len(chats)], f"/{COMMANDS[turn % 4]}")
            deadline = time.monotonic() + 600
            while await handled(shop.db) < updates:
                if time.monotonic() > deadline:
                    raise RuntimeError("not every update was handled within 600 s")
                await asyncio.sleep(0.1)
            seconds = time.perf_counter() - started
            after = cluster.cpu()
            cpu = {name: after[name] - before.get(name, 0.0) for name in after}
        finally:
            await cluster.stop()
            await shop.close()
            await redis.aclose()
    return Round(workers, updates, seconds, cpu)


def report(rounds: list[Round]) -> None:
    print("workers updates  upd/s  worker CPU ms/upd  core/worker  ingress CPU s")
    for r in rounds:
        print(
            f"{r.workers:7d} {r.updates:7d} {r.per_second:6.1f} {r.worker_cpu_per_update_ms:18.2f}"
            f" {r.worker_busy:12.2f} {r.cpu.get('ingress', 0.0):14.2f}"
        )
    by = {n: [r for r in rounds if r.workers == n] for n in (1, 2)}
    if by[1] and by[2]:
        one = sum(r.per_second for r in by[1]) / len(by[1])
        two = sum(r.per_second for r in by[2]) / len(by[2])
        cost = sum(r.worker_cpu_per_update_ms for r in rounds) / len(rounds)
        cores = os.cpu_count() or 1
        print(f"\n2 workers / 1 worker: {two / one:.2f}× updates/s")
        print(
            f"one worker spends {cost:.2f} CPU-ms per update: a core of its own carries"
            f" ~{1000 / cost:.0f} updates/s; this machine has {cores} core(s), shared with"
            " PostgreSQL, Redis, the ingress and the stand-in (and whatever else runs:"
            " 'core/worker' is the share of a core each worker got), so it cannot show"
            " that per-core figure added up"
        )


async def main(updates: int, rounds: int) -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL", "")
    redis_url = os.environ.get("BENCH_REDIS_URL", "")
    if not database_url.startswith("postgresql") or not redis_url:
        raise SystemExit("set BENCH_DATABASE_URL (PostgreSQL) and BENCH_REDIS_URL: both are wiped")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(rounds * 2):
            workers = 1 + index % 2
            folder = Path(tmp) / f"round{index}"
            folder.mkdir()
            results.append(await one_round(database_url, redis_url, workers, updates, folder))
            print(f"round {index + 1}: {workers} worker(s), {results[-1].per_second:.1f} upd/s")
    print()
    report(results)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=600, help="updates per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each worker count")
    args = parser.parse_args()
    asyncio.run(main(args.updates, args.rounds))
