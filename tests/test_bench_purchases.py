"""The purchase and flash-sale benchmarks run end to end, small, and check what they sold."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.flash_sale import flash_sale
from bench.purchase import CROWD, sqlite_bench
from bench.purchase_instructions import count


async def test_bench_purchase_completes_with_its_same_work_baseline(tmp_path: Path) -> None:
    # Every round asserts one code sold and one charge per purchase, the baseline too.
    rates = await sqlite_bench(30, 2)

    assert set(rates) == {
        "plain sqlite3, same statements + decrypt",
        "Orders.place,  1 at once",
        "Orders.place, 20 at once",
    }
    assert all(len(each) == 2 and min(each) > 0 for each in rates.values())


async def test_flash_sale_sells_each_code_once_and_answers_everyone(tmp_path: Path) -> None:
    sale = await flash_sale(
        f"sqlite+aiosqlite:///{tmp_path / 'flash.db'}", None, 30, 5, seed=1, data_dir=tmp_path
    )

    assert sale.problems == []
    assert (sale.paid, sum(sale.refused.values()), sale.unanswered) == (5, 25, 0)
    assert (sale.sold, sale.buyers, sale.charged, sale.debited) == (5, 5, 5, 5)
    assert len(sale.latencies) == 30


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_leave_the_setup_out() -> None:
    """Counted from the first purchase to the last: migrating and stocking a shop take
    billions of instructions, ten purchases a few million at most."""
    for measure in ("plain", f"place{CROWD}"):
        per_purchase = count(measure, 10) / 10
        assert 100_000 < per_purchase < 5_000_000, (measure, per_purchase)
