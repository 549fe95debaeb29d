"""The update benchmark runs end to end and measures purchases, not apologies."""

from __future__ import annotations

from pathlib import Path

from bench.updates import FLOOR_REPEATS, FRAMEWORKS, bench_database


async def test_bench_updates_completes_and_every_pay_creates_an_order(tmp_path: Path) -> None:
    results = await bench_database(
        f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", None, 40, 1, tmp_path
    )

    for framework in FRAMEWORKS:
        (run,) = results.bot[framework]
        assert run.pays > 0
        assert run.orders == run.pays
        assert not run.refused, run.refused
        assert not run.errors, run.errors
        assert results.floor[framework][0].updates == FLOOR_REPEATS * run.updates
    assert results.sound
