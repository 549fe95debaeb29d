"""`cardshop` at the shell: refusals in the bot's words, one line for a bad database, exports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bot import cli
from core.clock import ManualClock
from core.shop import Shop
from tests.conftest import START, TEST_KEY
from tests.factories import make_member


@pytest.fixture
def shell(shop: Shop, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    """`cardshop` pointed at the test shop, from a scratch working directory."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return shop


def csv_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


async def cardshop(*argv: str) -> int:
    """`cardshop ARGS` on the tests' clock, as the shell would run it."""
    return await asyncio.to_thread(cli.main, list(argv), clock=ManualClock(START))


async def test_refusals_are_sentences_in_the_shops_language(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_member(shell.db, shell.clock, telegram_id=777)

    assert await cardshop("topup", "777", "-5", "--reason", "x") == 1
    assert capsys.readouterr().err == "金额必须大于零（收到的是 -¥5.00）。\n"
    assert await cardshop("topup", "777", "-5", "--reason", "x", "--lang", "en") == 1
    assert capsys.readouterr().err == "The amount must be more than zero, not -¥5.00.\n"

    assert await cardshop("topup", "777", "1.234", "--reason", "x", "--lang", "en") == 1
    err = capsys.readouterr().err
    assert err == "1.234 is not an amount in yuan: write it like 100 or 12.50.\n"

    assert await cardshop("topup", "@alice", "12.50", "--reason", "x", "--lang", "en") == 1
    err = capsys.readouterr().err
    assert err == "No member @alice: give a Telegram id, @username or #member-id.\n"


async def test_an_unknown_level_lists_the_levels(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_member(shell.db, shell.clock, telegram_id=777)
    assert await cardshop("set-tier", "777", "golden", "--lang", "en") == 1
    err = capsys.readouterr().err
    assert err.startswith("No level golden. The levels are: member (Member), silver (Silver),")
    assert "partner (Strategic Partner)." in err
    assert "unknown_tier" not in err

    assert await cardshop("set-tier", "777", "golden") == 1
    assert "gold (黄金会员)" in capsys.readouterr().err


async def test_a_database_without_tables_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)

    for argv in (["stats", "--lang", "en"], ["chat", "--lang", "en"]):
        assert await cardshop(*argv) == 1
        err = capsys.readouterr().err
        assert err == f"The database {url} has no shop tables yet: run cardshop migrate.\n"


async def test_a_database_that_cannot_be_reached_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Port 1 on this machine refuses at once; the password is not printed."""
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://shop:s3cret@127.0.0.1:1/shop")
    monkeypatch.setenv("CODE_ENCRYPTION_KEYS", TEST_KEY)
    monkeypatch.chdir(tmp_path)

    assert await cardshop("topup", "777", "1", "--reason", "x", "--lang", "en") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "Cannot use the database postgresql+asyncpg://shop:***@127.0.0.1:1/shop:"
    )
    assert "s3cret" not in line


async def test_a_review_of_nobody_says_why(shell: Shop, capsys: pytest.CaptureFixture[str]) -> None:
    await make_member(shell.db, shell.clock)  # on the entry level: nothing to review
    assert await cardshop("review-tiers", "--dry-run", "--lang", "en") == 0
    out = capsys.readouterr().out
    assert "0 reviewed, 0 would move" in out
    assert "No member was reviewed: the review covers members whose level was reached" in out
    assert "above Member." in out


async def test_export_defaults_to_the_data_dir(
    shell: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("export", "orders", "--from", "2026-11-01", "--to", "2026-11-30")
    assert await cardshop(*argv) == 0
    written = tmp_path / "data" / "exports" / "orders-2026-11-01-2026-11-30.csv"
    assert capsys.readouterr().out == f"wrote {written.stat().st_size} bytes to {written}\n"
    assert written.read_bytes().startswith("\ufefforder_id,".encode())
    assert csv_files(tmp_path) == [], "nothing lands in the working directory"

    assert await cardshop(*argv, "--out", "-") == 0
    assert capsys.readouterr().out.startswith("\ufefforder_id,")


async def test_refusals_name_what_to_fix(
    shell: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("AAAA-BBBB\n")
    assert await cardshop("import-codes", "NOPE", str(codes), "--lang", "en") == 1
    assert capsys.readouterr().err == "No product NOPE.\n"
    assert await cardshop("stats", "--days", "0", "--lang", "en") == 1
    assert capsys.readouterr().err == "--days must be from 1 to 366.\n"
    assert await cardshop("review-tiers", "--quarter", "2026-3", "--lang", "en") == 1
    assert capsys.readouterr().err == "No quarter 2026-3: write it like 2026Q3.\n"
    argv = ("export", "orders", "--from", "2026-11-30", "--to", "2026-11-01", "--lang", "en")
    assert await cardshop(*argv) == 1
    assert capsys.readouterr().err == "The --from date is after the --to date.\n"


async def test_api_key_issue_json_is_one_object_for_scripts(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    member = await make_member(shell.db, shell.clock, telegram_id=777, tier="platinum")

    assert await cardshop("api-key", "issue", "777", "--label", "shop site", "--json") == 0

    out = capsys.readouterr().out
    issued = json.loads(out)
    assert out == json.dumps(issued) + "\n"
    assert set(issued) == {"key_id", "secret"}
    caller = await shell.api_keys.authenticate(issued["key_id"])
    assert caller is not None
    assert (caller.member_id, caller.secret) == (member, issued["secret"])
    (entry,) = await shell.operations.audit.recent(action="api_key.issue")
    assert entry.actor.startswith("cli:")
    assert issued["secret"] not in json.dumps(entry.after)


async def test_api_keys_are_issued_listed_and_revoked_from_the_shell(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    member = await make_member(shell.db, shell.clock, telegram_id=777, tier="platinum")

    assert await cardshop("api-key", "issue", f"#{member}", "--lang", "en") == 0
    out = capsys.readouterr().out.splitlines()
    (key,) = await shell.api_keys.list(member)
    caller = await shell.api_keys.authenticate(key.key_id)
    assert caller is not None
    assert out == [
        f"API key {key.key_id} issued for member #{member}.",
        f"Secret (shown only this once, keep it safe): {caller.secret}",
    ]

    assert await cardshop("api-key", "list", "777", "--lang", "en") == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f'{key.key_id} "": created ')
    assert listed.endswith(", last used never\n1 API key\n")
    assert caller.secret not in listed
    assert await cardshop("api-key", "list", "777", "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["key_id"] == key.key_id
    assert "secret" not in shown
    assert shown["revoked_at"] is None

    assert await cardshop("api-key", "revoke", "777", key.key_id, "--lang", "en") == 0
    assert capsys.readouterr().out == f"API key {key.key_id} of member #{member} is revoked.\n"
    assert await shell.api_keys.authenticate(key.key_id) is None
    assert await cardshop("api-key", "list", "777", "--lang", "en") == 0
    assert capsys.readouterr().out == "0 API keys\n"
    assert await cardshop("api-key", "list", "777", "--all", "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["revoked_at"] is not None
    (entry,) = await shell.operations.audit.recent(action="api_key.revoke")
    assert entry.after == {"key_id": key.key_id}


async def test_api_key_refusals_are_sentences(
    shell: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    await make_member(shell.db, shell.clock, telegram_id=777, tier="gold")
    await make_member(shell.db, shell.clock, telegram_id=888, tier="platinum")

    assert await cardshop("api-key", "issue", "777", "--json", "--lang", "en") == 1
    assert capsys.readouterr() == ("", "API access is not part of Gold.\n")
    assert await cardshop("api-key", "revoke", "888", "ak_0123456789abcdef", "--lang", "en") == 1
    assert capsys.readouterr().err == "No API key ak_0123456789abcdef.\n"
    for _ in range(3):
        assert await cardshop("api-key", "issue", "888", "--json") == 0
    capsys.readouterr()
    assert await cardshop("api-key", "issue", "888", "--lang", "en") == 1
    err = capsys.readouterr().err
    assert err == "You already have 3 API keys, the most your level allows. Revoke one first.\n"
