"""The README's shell block, run line by line as written on a fresh `make run` demo shop.

Each line runs in bash from a scratch directory that holds a `.venv` link to the running
virtualenv (so `.venv/bin/cardshop` is found as in the repository) and no `.env`, with
none of the shop's settings in the environment: the defaults put the database and
DATA_DIR under `data/` there, exactly where `make run` puts them. `chat` and `run` get an
empty standard input and quit at its end. `codes.txt` is the operator's file the README
names, so the test writes one first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SHELL_BLOCK = re.compile(r"^## The shell\n.*?^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
CARDSHOP = Path(sys.prefix) / "bin" / "cardshop"
#: What `make run` does before serving.
MAKE_RUN_SETUP = (".venv/bin/cardshop migrate", ".venv/bin/cardshop seed-demo --if-empty")


def shell_lines() -> list[str]:
    match = SHELL_BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match is not None, "README.md has no ```sh block under '## The shell'"
    return [line for line in match.group(1).splitlines() if line.strip()]


def clean_environment() -> dict[str, str]:
    """This process's environment without any of the shop's settings."""
    settings = {name.upper() for name in Settings.model_fields}
    return {key: value for key, value in os.environ.items() if key.upper() not in settings}


def test_the_block_is_found_and_uses_the_demo_members() -> None:
    lines = shell_lines()
    assert lines[0].startswith(".venv/bin/cardshop migrate")
    assert any("@demo_silver" in line for line in lines)
    assert not any("@alice" in line or "123456789" in line for line in lines)


@pytest.mark.skipif(not CARDSHOP.is_file(), reason="cardshop is not installed in this venv")
def test_every_readme_command_works_as_written(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (tmp_path / "codes.txt").write_text("QB10-README-0001\nQB10-README-0002\n")
    env = clean_environment()
    shown: dict[str, str] = {}
    for line in (*MAKE_RUN_SETUP, *shell_lines()):
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        shown[line] = done.stdout + done.stderr
        assert done.returncode == 0, f"{line}\n{shown[line]}"
        assert "Traceback" not in shown[line], f"{line}\n{shown[line]}"

    (imported,) = (text for line, text in shown.items() if "import-codes" in line)
    assert "added 2, duplicate 0, rejected 0" in imported
    (topped_up,) = (text for line, text in shown.items() if "topup" in line)
    assert "balance 500.00 -> 512.50" in topped_up
    assert (tmp_path / "data" / "exports" / "orders-2026-11-01-2026-11-30.csv").is_file()
