"""The payments benchmark runs end to end and measures answers and credits, not failures."""

from __future__ import annotations

from pathlib import Path

from bench.payments import (
    CONCURRENCIES,
    CREDIT_KINDS,
    FRAMEWORKS,
    PACES,
    bench_bursts,
    bench_credits,
)


async def test_bench_bursts_answer_every_pre_checkout_and_every_pay_creates_an_order(
    tmp_path: Path,
) -> None:
    results = await bench_bursts(
        f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}",
        None,
        tmp_path,
        chats=3,
        per_chat=5,
        queries=2,
        rounds=1,
    )

    assert set(results.runs) == {(f, p) for f in FRAMEWORKS for p in PACES}
    for (run,) in results.runs.values():
        assert len(run.pre_checkout) == 2
        assert len(run.ordinary) == 3 * 5
        assert run.pays == run.orders == 3
        failures = (run.refused_queries, run.late, run.unanswered, run.refused, run.errors)
        assert failures == (0, 0, 0, 0, 0)
    assert results.sound


async def test_bench_credits_credit_every_top_up_once(database_url: str, tmp_path: Path) -> None:
    results = await bench_credits(database_url, tmp_path, n=4, rounds=1)

    assert set(results.rates) == {(k, c) for k in CREDIT_KINDS for c in CONCURRENCIES}
    assert results.credited == 4 * len(CREDIT_KINDS) * len(CONCURRENCIES)
    assert results.problems == []
    assert results.sound
