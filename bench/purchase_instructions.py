"""Instructions per purchase under callgrind: `make bench`'s comparison without the noise.

`make bench` times purchases on a shared 2-core machine, whose speed drifts by half
between runs; a change worth 10 % hides in that. Valgrind's callgrind counts the
instructions a process executes instead, the same count run after run whatever else the
machine does, so a change to the purchase path can be judged on one run.

Each measure is a process of its own under `valgrind --tool=callgrind`, counting only
while the purchases run (`--instr-atstart=no`; the process switches counting on and
off around them with `callgrind_control`): the setup (migrations, stocking a product)
is not counted. The measures are those of `bench.purchase` on SQLite: the plain
`sqlite3` baseline doing the same statements and decrypt, and `Orders.place` 1 and 20 at
once. Valgrind runs the threads one at a time, so the count is the work of both the
event loop and the writer thread; time spent waiting for each other is not in it.

Run: `python -m bench.purchase_instructions --n 500` (needs valgrind; about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.purchase import CROWD, SamePurchase, _open, _stock, baseline_sqlite3, shop_purchases

MEASURES = ("plain", "place1", f"place{CROWD}")
LABELS = {
    "plain": "plain sqlite3, same statements + decrypt",
    "place1": "Orders.place,  1 at once",
    f"place{CROWD}": f"Orders.place, {CROWD} at once",
}
_COLLECTED = re.compile(r"Collected : (\d+)")


@contextmanager
def _counted() -> Iterator[None]:
    """Callgrind counts this process's instructions inside the block only."""
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "--instr=on", pid], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["callgrind_control", "--instr=off", pid], check=True, capture_output=True)


async def _measure(measure: str, n: int) -> None:
    """One measure's purchases, counted (in the process valgrind runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        shop = await _open(f"sqlite+aiosqlite:///{path}", Path(tmp))
        same = SamePurchase.build(shop, shop.db.engine.dialect)
        if measure == "plain":
            product, plan = await _stock(shop, n)
            with _counted():
                baseline_sqlite3(path, same, shop, product, plan)
        else:
            crowd = int(measure.removeprefix("place"))
            product, plan = await _stock(shop, CROWD + n)
            # The first purchases compile the statements and start the writer thread.
            await shop_purchases(shop, product, plan[:CROWD], crowd)
            with _counted():
                await shop_purchases(shop, product, plan[CROWD:], crowd)
        await shop.close()


def count(measure: str, n: int) -> int:
    """Instructions `measure` executes for `n` purchases, under callgrind."""
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.purchase_instructions", "--child", measure, "--n", str(n),
    ]  # fmt: skip
    env = os.environ | {"PYTHONHASHSEED": "0"}  # the same dict layouts, run after run
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{measure} under callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(n: int) -> dict[str, float]:
    """Each measure's instructions per purchase, printed with its ratio to the baseline."""
    per_purchase = {measure: count(measure, n) / n for measure in MEASURES}
    base = per_purchase["plain"]
    for measure in MEASURES:
        print(
            f"sqlite     {LABELS[measure]:44} {per_purchase[measure] / 1000:8.0f}k"
            f" instructions/purchase {base / per_purchase[measure]:6.2f}x"
        )
    return per_purchase


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="purchases per measure")
    parser.add_argument("--child", choices=MEASURES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_measure(args.child, args.n))
    else:
        main(args.n)
