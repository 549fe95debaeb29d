"""Without PostgreSQL configured, its cases are summarised in one line, not one skip each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: One SQLite case and two PostgreSQL ones.
TARGET = "tests/test_migrations.py"


def _pytest(*args: str, database_url: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    if database_url is not None:
        env["TEST_DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, TARGET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_postgres_cases_are_one_line_when_not_configured() -> None:
    out = _pytest(database_url=None)
    assert "SKIPPED" not in out
    assert out.count("PostgreSQL") == 1
    assert "2 PostgreSQL cases deselected: set TEST_DATABASE_URL to run them" in out
    assert "1 passed, 2 deselected" in out


def test_nothing_is_left_out_when_configured() -> None:
    """Collection only: the URL is never connected to."""
    out = _pytest("--collect-only", "-q", database_url="postgresql+asyncpg://x@127.0.0.1:1/x")
    assert "test_models_and_migrations_do_not_drift[postgres]" in out
    assert "deselected" not in out
