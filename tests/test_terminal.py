"""The terminal chat as its user meets it: typed numbers, taps, files, whose chat, who one is."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.adapters.terminal import TerminalChat, open_session
from bot.app import build_runtime
from bot.framework import Runtime
from core.config import Settings
from core.demo import seed_demo
from core.shop import Shop, build_shop
from core.uow import Database
from tests.conftest import TEST_KEY

ADMIN = 10001
SILVER, GOLD = 10002, 10003


@pytest.fixture
async def demo(shop: Shop) -> Shop:
    await seed_demo(shop.db, shop.vault, shop.clock, shop.ladder)
    return shop


@pytest.fixture
def admin_runtime(demo: Shop, settings: Settings, db: Database) -> Runtime:
    """The demo shop with its first demo member as an admin (`cardshop chat --admin`)."""
    admin_settings = settings.model_copy(update={"admin_ids": [ADMIN]})
    return build_runtime(build_shop(admin_settings, db=db, clock=demo.clock))


class Screen:
    """One terminal session: type lines, tap buttons by their label, read what was shown."""

    def __init__(self, session: TerminalChat, out: io.StringIO) -> None:
        self.session = session
        self._out = out
        self._read = 0

    @classmethod
    async def open(cls, runtime: Runtime, user_id: int, lang: str | None = None) -> Screen:
        out = io.StringIO()
        return cls(await open_session(runtime, user_id=user_id, lang=lang, out=out), out)

    async def type(self, *lines: str) -> str:
        """Send each line; what the screen showed since the last call."""
        for line in lines:
            await self.session.send(line)
        shown = self._out.getvalue()[self._read :]
        self._read = len(self._out.getvalue())
        return shown

    async def tap(self, label: str) -> str:
        """Tap the last keyboard's button whose text contains `label`, by typing `/N`."""
        texts = [button.text for button in self.session.transport.last_buttons]
        number = next(i for i, text in enumerate(texts, 1) if label in text)
        return await self.type(f"/{number}")


async def to_quantity(screen: Screen) -> str:
    await screen.type("/start")
    for label in ("Shop", "Game cards", "Tencent", "Q-Coins ¥10"):
        shown = await screen.tap(label)
    return shown


async def test_a_typed_number_is_a_quantity_and_slash_n_taps(demo: Shop) -> None:
    screen = await Screen.open(build_runtime(demo), GOLD, "en")
    assert "type /1 to tap the first" in await screen.type()
    shown = await to_quantity(screen)
    assert "[/1] 1   [/2] 2   [/3] 5   [/4] 10" in shown

    shown = await screen.type("3")
    assert "Tencent Q-Coins ¥10 × 3" in shown
    assert "no button" not in shown
    assert "to tap a button" not in shown, "the quantity was asked for"

    assert await screen.type("/99") == "(no button /99: the buttons are /1 to /3)\n"
    assert "Order #1: Tencent Q-Coins ¥10 × 3" in await screen.tap("Pay")


async def test_a_number_nobody_asked_for_gets_a_hint_how_to_tap(demo: Shop) -> None:
    screen = await Screen.open(build_runtime(demo), GOLD, "en")
    await screen.type("/start")
    shown = await screen.type("3")
    assert "Please use the buttons below" in shown
    assert shown.endswith(
        "(a number you type is sent as a message; to tap a button, type its /N, e.g. /1)\n"
    )


async def test_a_long_number_is_a_message_not_a_missing_button(demo: Shop) -> None:
    screen = await Screen.open(build_runtime(demo), GOLD, "en")
    await to_quantity(screen)
    shown = await screen.type("99999999999999999999999")
    assert "no button" not in shown
    assert "Please send the quantity as a whole number" in shown


async def test_the_admin_looks_a_member_up_by_typing_their_id(admin_runtime: Runtime) -> None:
    screen = await Screen.open(admin_runtime, ADMIN, "en")
    assert "an admin: /admin opens the admin menu" in await screen.type()
    await screen.type("/admin")
    await screen.tap("Members")
    shown = await screen.type(str(SILVER))
    assert "Demo Silver @demo_silver · Telegram id 10002" in shown
    await screen.tap("Top up")
    assert "¥12.50: and the reason?" in await screen.type("12.50")


async def test_messages_to_other_chats_say_whose_chat(admin_runtime: Runtime) -> None:
    shop = admin_runtime.shop
    member = await shop.members.by_telegram(SILVER)
    assert member is not None
    await shop.tickets.open(member.id, "other", "My code says already used")
    screen = await Screen.open(admin_runtime, ADMIN, "en")
    await screen.type("/admin")
    await screen.tap("Tickets")
    await screen.tap("#1")
    await screen.tap("Take and reply")
    shown = await screen.type("Sorry! Here is a new code.")

    to_member = shown.index("──── to Demo Silver (@demo_silver, 10002) ────")
    back_home = shown.index("──── your chat ────")
    assert to_member < shown.index("Sorry! Here is a new code.") < back_home
    assert shown.index("Sent to the member", back_home)
    texts = [button.text for button in screen.session.transport.last_buttons]
    assert "✍️ Write more" not in texts, "the member's buttons are not the admin's to tap"


async def test_the_stats_chart_is_saved_as_a_png(
    admin_runtime: Runtime, settings: Settings
) -> None:
    screen = await Screen.open(admin_runtime, ADMIN, "zh_CN")
    await screen.type("/admin")
    await screen.tap("数据统计")
    shown = await screen.tap("7 天")
    (saved,) = (settings.data_dir / "chat-files").iterdir()
    assert f"（图片已保存：{saved}）" in shown
    assert saved.name == "photo-1.png"
    assert saved.read_bytes().startswith(b"\x89PNG")

    await screen.tap("30 天")
    assert (settings.data_dir / "chat-files" / "photo-2.png").is_file()


async def test_chatting_as_a_demo_member_keeps_their_name(demo: Shop) -> None:
    screen = await Screen.open(build_runtime(demo), SILVER)
    assert "cardshop chat as Demo Silver (@demo_silver, 10002)." in await screen.type("/start")
    member = await demo.members.by_telegram(SILVER)
    assert member is not None
    assert (member.display_name, member.username) == ("Demo Silver", "demo_silver")


async def test_lang_given_wins_for_the_session_until_the_member_chooses(demo: Shop) -> None:
    member = await demo.members.by_telegram(SILVER)
    assert member is not None
    assert member.locale == "en"
    screen = await Screen.open(build_runtime(demo), SILVER, "zh_CN")
    assert "欢迎光临" in await screen.type("/start")
    assert (await demo.members.get(member.id)).locale == "en", "the stored choice is kept"

    await screen.tap("Language")
    assert "Welcome" in await screen.tap("English")
    assert "Welcome" in await screen.type("/start")
    assert "Welcome" in await (await Screen.open(build_runtime(demo), SILVER)).type("/start")


def test_ctrl_c_quits_the_chat(database_url: str, tmp_path: Path) -> None:
    """The line being read must not keep the process alive after Ctrl-C (SIGINT)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CODE_ENCRYPTION_KEYS": TEST_KEY,
        "DATA_DIR": str(tmp_path / "data"),
    }
    cardshop = Path(sys.prefix) / "bin" / "cardshop"
    with subprocess.Popen(
        [str(cardshop), "chat", "--lang", "en"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as chat:
        assert chat.stdin is not None
        assert chat.stdout is not None
        chat.stdin.write("/start\n")
        chat.stdin.flush()
        for line in chat.stdout:  # the greeting: the chat now waits for the next line
            if line.startswith("Welcome"):
                break
        chat.send_signal(signal.SIGINT)
        try:
            chat.wait(timeout=60)  # standard input stays open, as a terminal's does
        except subprocess.TimeoutExpired:
            chat.kill()
            raise
        assert chat.stderr is not None
        err = chat.stderr.read()
    assert chat.returncode == 0
    assert "Traceback" not in err
