"""The Bot API stand-in answers like Telegram, to raw HTTP and to both client libraries."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import telegram
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
    RefundedPayment,
    SuccessfulPayment,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from telegram.ext import ApplicationBuilder, CommandHandler, ContextTypes

from tests.botapi import BotApiStub, HtmlParseError, PaymentStatus, parse_html

USER_ID = 1001


@pytest.fixture
async def api() -> AsyncIterator[BotApiStub]:
    async with BotApiStub() as stub:
        yield stub


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def bot(api: BotApiStub) -> AsyncIterator[Bot]:
    """A real aiogram Bot pointed at the stand-in, as the shop wires it."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(api.base_url))
    aiogram_bot = Bot(api.token, session=session)
    yield aiogram_bot
    await aiogram_bot.session.close()


@pytest.fixture
async def ptb(api: BotApiStub, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[telegram.Bot]:
    """A real python-telegram-bot Bot; PTB_TIMEDELTA avoids its deprecation warning on 429."""
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    async with telegram.Bot(
        api.token, base_url=f"{api.base_url}/bot", base_file_url=f"{api.base_url}/file/bot"
    ) as ptb_bot:
        yield ptb_bot


async def call(
    http: aiohttp.ClientSession, api: BotApiStub, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{api.base_url}/bot{api.token}/{method}", json=params) as response:
        return response.status, await response.json()


def keyboard(*data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=d[:10] or "x", callback_data=d)] for d in data]
    )


# ---------------------------------------------------------------- raw HTTP


async def test_get_me_answers_with_the_bot_user(api: BotApiStub, http: aiohttp.ClientSession):
    status, body = await call(http, api, "getMe")

    assert status == 200
    assert body["ok"] is True
    assert body["result"]["id"] == int(api.token.split(":")[0])
    assert body["result"]["is_bot"] is True
    assert body["result"]["username"] == "cardshop_test_bot"


async def test_wrong_token_is_unauthorized_and_unknown_method_not_found(
    api: BotApiStub, http: aiohttp.ClientSession
):
    async with http.post(f"{api.base_url}/bot123:wrong/getMe") as response:
        assert response.status == 401
        assert await response.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }

    status, body = await call(http, api, "sendTelepathy", chat_id=1)

    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found: method not found"}


async def test_method_names_are_case_insensitive(api: BotApiStub, http: aiohttp.ClientSession):
    status, _ = await call(http, api, "GETME")

    assert status == 200
    assert api.calls[-1].method == "getMe"


async def test_json_urlencoded_and_multipart_bodies_decode_alike(
    api: BotApiStub, http: aiohttp.ClientSession
):
    markup = {"inline_keyboard": [[{"text": "Buy", "callback_data": "buy:1"}]]}
    url = f"{api.base_url}/bot{api.token}/sendMessage"
    await call(http, api, "sendMessage", chat_id=USER_ID, text="json", reply_markup=markup)
    form = {"chat_id": str(USER_ID), "text": "123", "reply_markup": json.dumps(markup)}
    async with http.post(url, data=form) as response:
        assert response.status == 200
    multipart = aiohttp.FormData(form)
    multipart.add_field("unused", b"bytes", filename="force-multipart.bin")
    async with http.post(url, data=multipart) as response:
        assert response.status == 200

    sent = api.sent_to(USER_ID)

    assert [m.text for m in sent] == ["json", "123", "123"]
    assert all(m.callback_data == ["buy:1"] for m in sent)
    assert [m.message_id for m in sent] == [1, 2, 3]


async def test_getupdates_long_poll_returns_an_update_injected_while_waiting(
    api: BotApiStub, http: aiohttp.ClientSession
):
    user = api.user(USER_ID, "Ann", username="ann")
    started = time.monotonic()
    poll = asyncio.create_task(call(http, api, "getUpdates", timeout=5))
    await asyncio.sleep(0.05)
    update = api.inject_message(user, "/start ref_42")

    status, body = await poll

    assert status == 200
    assert time.monotonic() - started < 1
    assert body["result"] == [update]
    message = body["result"][0]["message"]
    assert message["text"] == "/start ref_42"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert message["from"]["username"] == "ann"
    assert message["chat"] == {
        "id": USER_ID,
        "type": "private",
        "first_name": "Ann",
        "username": "ann",
    }


async def test_offset_confirms_updates_and_ids_increase(
    api: BotApiStub, http: aiohttp.ClientSession
):
    user = api.user(USER_ID)
    first = api.inject_message(user, "one")
    second = api.inject_message(user, "two")
    assert second["update_id"] == first["update_id"] + 1
    assert second["message"]["message_id"] == first["message"]["message_id"] + 1

    _, delivered = await call(http, api, "getUpdates")
    _, again = await call(http, api, "getUpdates", offset=second["update_id"] + 1)

    assert [u["update_id"] for u in delivered["result"]] == [
        first["update_id"],
        second["update_id"],
    ]
    assert again["result"] == []
    assert api.pending_updates == []


async def test_redelivered_update_keeps_its_update_id(api: BotApiStub, http: aiohttp.ClientSession):
    update = api.inject_message(api.user(USER_ID), "pay")
    await call(http, api, "getUpdates")
    await call(http, api, "getUpdates", offset=update["update_id"] + 1)

    api.redeliver(update)
    _, body = await call(http, api, "getUpdates", offset=update["update_id"] + 1)

    assert body["result"] == [update]


async def test_allowed_updates_drops_other_types(api: BotApiStub, http: aiohttp.ClientSession):
    user = api.user(USER_ID)
    sent = await call(
        http,
        api,
        "sendMessage",
        chat_id=USER_ID,
        text="menu",
        reply_markup={"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]},
    )
    await call(http, api, "getUpdates", allowed_updates=["message"])

    api.inject_callback(user, sent[1]["result"]["message_id"], "a")
    api.inject_message(user, "hello")
    _, body = await call(http, api, "getUpdates")

    assert [list(u)[1] for u in body["result"]] == ["message"]
    assert [list(u)[1] for u in api.dropped_updates] == ["callback_query"]


async def test_a_second_poller_terminates_the_first(api: BotApiStub, http: aiohttp.ClientSession):
    first = asyncio.create_task(call(http, api, "getUpdates", timeout=5))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(call(http, api, "getUpdates", timeout=0))

    status, body = await first
    await second

    assert status == 409
    assert body["description"].startswith("Conflict: terminated by other getUpdates request")


async def test_set_webhook_ends_a_waiting_poll(api: BotApiStub, http: aiohttp.ClientSession):
    poll = asyncio.create_task(call(http, api, "getUpdates", timeout=5))
    await asyncio.sleep(0.05)
    await call(http, api, "setWebhook", url="http://127.0.0.1:9/hook")

    status, body = await poll

    assert status == 409
    assert body["description"] == "Conflict: terminated by setWebhook request"


async def test_fail_next_forces_429_then_recovers(api: BotApiStub, http: aiohttp.ClientSession):
    api.fail_next("sendMessage", 2, retry_after=3)

    results = [await call(http, api, "sendMessage", chat_id=USER_ID, text="x") for _ in range(3)]

    assert [status for status, _ in results] == [429, 429, 200]
    assert results[0][1] == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }


async def test_wait_for_times_out_with_a_readable_error(api: BotApiStub):
    with pytest.raises(AssertionError, match="a new message from the bot in chat 5"):
        await api.next_sent(5, timeout=0.05)


# --------------------------------------------------------------- aiogram


async def test_aiogram_send_edit_and_not_modified(api: BotApiStub, bot: Bot):
    sent = await bot.send_message(
        USER_ID, "<b>库存</b> 3", parse_mode="HTML", reply_markup=keyboard("a")
    )
    edited = await bot.edit_message_text(
        "<i>库存</i> 2",
        chat_id=USER_ID,
        message_id=sent.message_id,
        parse_mode="HTML",
        reply_markup=keyboard("b"),
    )
    assert isinstance(edited, Message)

    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "<i>库存</i> 2",
            chat_id=USER_ID,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=keyboard("b"),
        )

    (message,) = api.sent_to(USER_ID)
    assert message.text == "库存 2"
    assert message.entities == [{"offset": 0, "length": 2, "type": "italic"}]
    assert message.callback_data == ["b"]
    assert [v["text"] for v in message.versions] == ["库存 3"]
    assert edited.edit_date is not None


async def test_edit_without_markup_removes_the_keyboard(api: BotApiStub, bot: Bot):
    sent = await bot.send_message(USER_ID, "pick", reply_markup=keyboard("a"))

    await bot.edit_message_text("pick", chat_id=USER_ID, message_id=sent.message_id)

    assert api.message(USER_ID, sent.message_id).callback_data == []
    assert "reply_markup" not in api.message(USER_ID, sent.message_id).message


async def test_edits_of_missing_or_foreign_messages_are_refused(api: BotApiStub, bot: Bot):
    user_message = api.inject_message(api.user(USER_ID), "hi")["message"]

    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER_ID, message_id=99)
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=USER_ID, message_id=user_message["message_id"])
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER_ID, 99)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("x" * 4097, "Bad Request: message is too long"),
        ("", "Bad Request: message text is empty"),
        (" \n ", "Bad Request: message text is empty"),
    ],
)
async def test_text_length_limits(bot: Bot, text: str, error: str):
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.send_message(USER_ID, text)

    assert refused.value.message == error


async def test_length_is_counted_after_stripping_tags(api: BotApiStub, bot: Bot):
    await bot.send_message(USER_ID, "<b>" + "字" * 4096 + "</b>", parse_mode="HTML")

    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER_ID, "<b>" + "字" * 4097 + "</b>", parse_mode="HTML")
    assert len(api.sent_to(USER_ID)) == 1


@pytest.mark.parametrize(
    ("html", "error"),
    [
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<br>", 'Unsupported start tag "br" at byte offset 0'),
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("AT&T", 'Unsupported HTML entity "&T" at byte offset 2'),
        ("&nbsp;", 'Unsupported HTML entity "&nbsp;" at byte offset 0'),
    ],
)
async def test_bad_html_is_refused_with_telegrams_wording(bot: Bot, html: str, error: str):
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.send_message(USER_ID, html, parse_mode="HTML")

    assert refused.value.message.startswith(f"Bad Request: can't parse entities: {error}")


def test_valid_html_yields_text_and_utf16_entities():
    formatted = parse_html(
        '😀<b>a<i>b</i></b> <a href="https://t.me/x?a=1&amp;b=2">l</a> &lt;&#35;&#x41;&quot;'
        '<blockquote expandable>q</blockquote><span class="tg-spoiler">s</span>'
        '<pre><code class="language-py">c</code></pre>'
    )

    assert formatted.text == '😀ab l <#A"qsc'
    assert formatted.entities == [
        {"offset": 2, "length": 2, "type": "bold"},
        {"offset": 3, "length": 1, "type": "italic"},
        {"offset": 5, "length": 1, "type": "text_link", "url": "https://t.me/x?a=1&b=2"},
        {"offset": 11, "length": 1, "type": "expandable_blockquote"},
        {"offset": 12, "length": 1, "type": "spoiler"},
        {"offset": 13, "length": 1, "type": "pre", "language": "py"},
    ]
    with pytest.raises(HtmlParseError, match="surrogate"):
        parse_html("&#xD800;")


async def test_callback_data_is_limited_to_64_bytes(api: BotApiStub, bot: Bot):
    await bot.send_message(USER_ID, "ok", reply_markup=keyboard("x" * 64))

    for data in ("x" * 65, "码" * 22):  # 65 and 66 UTF-8 bytes
        with pytest.raises(TelegramBadRequest) as refused:
            await bot.send_message(USER_ID, "too long", reply_markup=keyboard(data))
        assert refused.value.message == "Bad Request: BUTTON_DATA_INVALID"
    assert [m.text for m in api.sent_to(USER_ID)] == ["ok"]


async def test_per_chat_flood_limit_answers_retry_after():
    now = [1000.0]
    async with BotApiStub(clock=lambda: now[0]) as api:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api.base_url))
        bot = Bot(api.token, session=session)
        try:
            api.limits.per_chat_burst = 2
            await bot.send_message(USER_ID, "1")
            await bot.send_message(USER_ID, "2")
            with pytest.raises(TelegramRetryAfter) as refused:
                await bot.send_message(USER_ID, "3")
            assert refused.value.retry_after == 1
            await bot.send_message(USER_ID + 1, "other chat")
            now[0] += 1.0
            await bot.send_message(USER_ID, "3 after waiting")
        finally:
            await bot.session.close()

    assert [m.text for m in api.sent_to(USER_ID)] == ["1", "2", "3 after waiting"]


async def test_global_flood_limit_spans_chats(api: BotApiStub, http: aiohttp.ClientSession):
    api.limits.global_burst = 3
    api.limits.global_per_second = 0.5

    statuses = [
        (await call(http, api, "sendMessage", chat_id=chat, text="hi"))[0] for chat in range(1, 5)
    ]

    assert statuses == [200, 200, 200, 429]
    assert api.calls[-1].response["parameters"] == {"retry_after": 2}


async def test_blocked_user_gets_403(api: BotApiStub, bot: Bot):
    api.block(USER_ID)

    with pytest.raises(TelegramForbiddenError, match="Forbidden: bot was blocked by the user"):
        await bot.send_message(USER_ID, "promo")
    api.unblock(USER_ID)
    await bot.send_message(USER_ID, "back")

    assert [m.text for m in api.sent_to(USER_ID)] == ["back"]


async def test_callback_query_can_be_answered_once(api: BotApiStub, bot: Bot):
    user = api.user(USER_ID)
    sent = await bot.send_message(USER_ID, "buy?", reply_markup=keyboard("buy:7"))
    update = api.inject_callback(user, sent.message_id, "buy:7")
    query = update["callback_query"]
    assert query["message"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "buy:7"

    await bot.answer_callback_query(query["id"], text="已下单", show_alert=True)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query["id"])
    with pytest.raises(LookupError, match="no button"):
        api.inject_callback(user, sent.message_id, "forged")

    answer = api.answered_callbacks[query["id"]]
    assert (answer.text, answer.show_alert) == ("已下单", True)


async def test_staff_reply_in_a_group_quotes_the_bot_message(api: BotApiStub, bot: Bot):
    group = -1001234567890
    api.group(group, "客服")
    ticket = await bot.send_message(group, "Ticket #7")

    update = api.inject_reply(api.user(2002, "Staff"), group, "refunded", ticket.message_id)

    message = update["message"]
    assert message["chat"]["type"] == "supergroup"
    assert message["reply_to_message"]["message_id"] == ticket.message_id
    assert message["reply_to_message"]["from"]["is_bot"] is True


async def test_commands_are_kept_per_scope_and_language(api: BotApiStub, bot: Bot):
    await bot.set_my_commands([BotCommand(command="start", description="开始")])
    await bot.set_my_commands(
        [BotCommand(command="shop", description="Shop")],
        scope=BotCommandScopeAllPrivateChats(),
        language_code="en",
    )

    default = await bot.get_my_commands()
    english = await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats(), language_code="en")
    private = await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats())

    assert [c.command for c in default] == ["start"]
    assert [c.command for c in english] == ["shop"]
    assert private == []


async def test_copy_forward_and_harmless_calls(api: BotApiStub, bot: Bot):
    user = api.user(USER_ID)
    source = api.inject_message(user, "receipt")["message"]

    copied = await bot.copy_message(-100777, USER_ID, source["message_id"])
    forwarded = await bot.forward_message(-100777, USER_ID, source["message_id"])
    await bot.send_chat_action(USER_ID, "typing")
    assert await bot.close() is True

    staff = api.sent_to(-100777)
    assert [m.message_id for m in staff] == [copied.message_id, forwarded.message_id]
    assert [m.text for m in staff] == ["receipt", "receipt"]
    assert forwarded.forward_origin is not None
    assert "forward_origin" not in staff[0].message


async def test_document_upload_file_id_reuse_and_download(api: BotApiStub, bot: Bot):
    sent = await bot.send_document(
        USER_ID,
        BufferedInputFile(b"CODE-1\nCODE-2\n", filename="codes.txt"),
        caption="<b>2</b> codes",
        parse_mode="HTML",
    )
    assert sent.document is not None
    again = await bot.send_document(USER_ID + 1, sent.document.file_id)
    file = await bot.get_file(sent.document.file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)

    (message,) = api.sent_to(USER_ID)
    assert message.text == "2 codes"
    assert message.file is not None
    assert (message.file.filename, message.file.content) == ("codes.txt", b"CODE-1\nCODE-2\n")
    assert again.document is not None
    assert again.document.file_id == sent.document.file_id
    assert isinstance(downloaded, io.BytesIO)
    assert downloaded.getvalue() == b"CODE-1\nCODE-2\n"
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_document(USER_ID, sent.document.file_id, caption="x" * 1025)


async def test_webhook_posts_with_secret_and_retries_until_2xx(api: BotApiStub, bot: Bot):
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        api.webhook_retry_delay = 0.01
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        await bot.set_webhook(url, secret_token="s3cret_-X")
        update = api.inject_message(api.user(USER_ID), "via webhook")

        await api.wait_for(lambda: not api.pending_updates, timeout=2)
        info = await bot.get_webhook_info()
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates()
    finally:
        await runner.cleanup()

    assert received == [("s3cret_-X", update), ("s3cret_-X", update)]
    assert [a.status for a in api.webhook_attempts] == [500, 200]
    assert info.url == url
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"


async def test_aiogram_webhook_answer_is_executed(api: BotApiStub, bot: Bot):
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def pong(message: Message) -> Any:
        return message.answer("pong")

    app = web.Application()
    SimpleRequestHandler(
        dispatcher, bot, secret_token="hook_secret", handle_in_background=False
    ).register(app, path="/hook")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await bot.set_webhook(
            f"http://127.0.0.1:{runner.addresses[0][1]}/hook", secret_token="hook_secret"
        )
        api.inject_message(api.user(USER_ID), "ping")

        reply = await api.next_sent(USER_ID, timeout=2)
    finally:
        await runner.cleanup()

    assert reply.text == "pong"
    assert api.calls_to("sendMessage")[0].ok


async def test_aiogram_dispatcher_polls_a_conversation(api: BotApiStub, bot: Bot):
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def menu(message: Message) -> None:
        await message.answer(f"<b>menu</b> for {message.text}", parse_mode="HTML")

    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    try:
        user = api.user(USER_ID)
        api.inject_message(user, "/start")
        first = await api.next_sent(USER_ID)
        api.inject_message(user, "/shop")
        second = await api.next_sent(USER_ID)
    finally:
        await dispatcher.stop_polling()
        await polling

    assert [first.text, second.text] == ["menu for /start", "menu for /shop"]
    assert all(c.ok for c in api.calls_to("getUpdates"))


# -------------------------------------------------------- python-telegram-bot


async def test_ptb_send_edit_and_not_modified(api: BotApiStub, ptb: telegram.Bot):
    markup = telegram.InlineKeyboardMarkup(
        [[telegram.InlineKeyboardButton("买", callback_data="b")]]
    )
    sent = await ptb.send_message(USER_ID, "<b>hi</b>", parse_mode="HTML", reply_markup=markup)
    await ptb.edit_message_text("bye", chat_id=USER_ID, message_id=sent.message_id)

    with pytest.raises(telegram.error.BadRequest, match="Message is not modified"):
        await ptb.edit_message_text("bye", chat_id=USER_ID, message_id=sent.message_id)

    (message,) = api.sent_to(USER_ID)
    assert message.text == "bye"
    assert message.reply_markup is None
    assert sent.entities[0].type == "bold"


async def test_ptb_long_poll_and_limits(api: BotApiStub, ptb: telegram.Bot):
    user = api.user(USER_ID, language_code="en")
    poll = asyncio.create_task(ptb.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    api.inject_message(user, "/help")
    (update,) = await poll
    assert update.message is not None
    assert update.message.text == "/help"
    assert update.message.entities[0].type == "bot_command"

    api.fail_next("sendMessage")
    with pytest.raises(telegram.error.RetryAfter):
        await ptb.send_message(USER_ID, "x")
    with pytest.raises(telegram.error.BadRequest, match="Can't parse entities: unsupported"):
        await ptb.send_message(USER_ID, "<foo>", parse_mode="HTML")
    long_data = telegram.InlineKeyboardButton("x", callback_data="x" * 65)
    with pytest.raises(telegram.error.BadRequest, match="Button_data_invalid"):
        await ptb.send_message(
            USER_ID, "x", reply_markup=telegram.InlineKeyboardMarkup([[long_data]])
        )
    api.block(USER_ID)
    with pytest.raises(telegram.error.Forbidden, match="blocked by the user"):
        await ptb.send_message(USER_ID, "x")


async def test_ptb_downloads_a_document_the_user_sent(api: BotApiStub, ptb: telegram.Bot):
    update = api.inject_document(api.user(USER_ID), "stock.csv", b"sku,code\n1,AAA\n", "补货")
    document = update["message"]["document"]

    file = await ptb.get_file(document["file_id"])
    content = await file.download_as_bytearray()
    uploaded = await ptb.send_document(USER_ID, b"report", filename="report.txt")

    assert bytes(content) == b"sku,code\n1,AAA\n"
    assert update["message"]["caption"] == "补货"
    assert api.downloads == [api.files[document["file_id"]].file_path]
    assert uploaded.document is not None
    assert api.files[uploaded.document.file_id].content == b"report"

    photo = await ptb.send_photo(USER_ID + 1, b"\x89PNG fake", caption="card")
    with pytest.raises(telegram.error.BadRequest, match=r"(?i)file of type document as photo"):
        await ptb.send_photo(USER_ID + 1, uploaded.document.file_id)
    (sent_photo,) = api.sent_to(USER_ID + 1)
    assert sent_photo.file is not None
    assert (sent_photo.file.kind, sent_photo.file.content) == ("photo", b"\x89PNG fake")
    assert photo.photo[-1].file_id == sent_photo.file.file_id


async def test_ptb_application_polls_a_conversation(api: BotApiStub, ptb: telegram.Bot):
    async def start(update: telegram.Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "welcome")

    application = ApplicationBuilder().bot(ptb).build()
    application.add_handler(CommandHandler("start", start))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.updater.start_polling(poll_interval=0, timeout=1)
        api.inject_message(api.user(USER_ID), "/start")
        reply = await api.next_sent(USER_ID)
        await application.updater.stop()
        await application.stop()

    assert reply.text == "welcome"
    assert api.calls_to("deleteWebhook")[0].ok


# ---------------------------------------------------------- Stars payments

STARS = [{"label": "¥10 top-up", "amount": 75}]


async def send_stars_invoice(
    http: aiohttp.ClientSession, api: BotApiStub, **changes: Any
) -> tuple[int, dict[str, Any]]:
    params: dict[str, Any] = {
        "chat_id": USER_ID,
        "title": "Top up ¥10",
        "description": "Wallet top-up of ¥10.00",
        "payload": "Tq3v9XkZ",
        "currency": "XTR",
        "prices": STARS,
        **changes,
    }
    return await call(
        http, api, "sendInvoice", **{k: v for k, v in params.items() if v is not None}
    )


class Poller:
    """getUpdates through a real client, confirming what it has read, as a bot's loop does."""

    def __init__(self, get_updates: Any) -> None:
        self._get_updates = get_updates
        self._offset: int | None = None

    async def next(self) -> Any:
        (update,) = await self._get_updates(offset=self._offset, timeout=5, limit=1)
        self._offset = update.update_id + 1
        return update

    async def rest(self) -> list[Any]:
        """Whatever else is queued, without waiting."""
        return list(await self._get_updates(offset=self._offset, timeout=0))


async def pre_checkout_query(api: BotApiStub, *, besides: str | None = None) -> dict[str, Any]:
    """The first pre-checkout query queued for the bot, other than the one with id `besides`."""
    queries = await api.wait_for(
        lambda: [
            u["pre_checkout_query"]
            for u in api.pending_updates
            if "pre_checkout_query" in u and u["pre_checkout_query"]["id"] != besides
        ],
        what="a pre-checkout query",
    )
    return queries[0]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"provider_token": "284685063:TEST:abc"}, "STARS_INVOICE_INVALID"),
        ({"prices": [*STARS, {"label": "fee", "amount": 5}]}, "STARS_INVOICE_INVALID"),
        ({"prices": []}, "there must be at least one price"),
        ({"prices": None}, 'parameter "prices" is required'),
        ({"prices": [{"label": "x", "amount": 0}]}, "total price must be positive"),
        ({"prices": [{"label": "x", "amount": 1.5}]}, 'Field "amount" must be of type Number'),
        ({"prices": [{"label": "", "amount": 5}]}, "LabeledPrice label must be non-empty"),
        ({"payload": ""}, 'parameter "payload" is required'),
        ({"payload": "码" * 43}, "INVOICE_PAYLOAD_INVALID"),  # 129 bytes
        ({"title": None}, 'parameter "title" is required'),
        ({"title": "x" * 33}, "TITLE_INVALID"),
        ({"description": "x" * 256}, "DESCRIPTION_INVALID"),
        (
            {"currency": "CNY", "prices": [{"label": "x", "amount": 1000}]},
            "PAYMENT_PROVIDER_INVALID",
        ),
        (
            {"reply_markup": {"inline_keyboard": [[{"text": "Back", "callback_data": "b"}]]}},
            "REPLY_MARKUP_BUY_EMPTY",
        ),
    ],
)
async def test_send_invoice_is_checked_as_telegram_checks_it(
    api: BotApiStub, http: aiohttp.ClientSession, changes: dict[str, Any], error: str
):
    status, body = await send_stars_invoice(http, api, **changes)

    assert status == 400
    assert body["description"].startswith("Bad Request: ")
    assert error in body["description"]
    assert api.sent_to(USER_ID) == []
    assert api.invoices == []


async def test_stars_invoice_limits_are_inclusive(api: BotApiStub, http: aiohttp.ClientSession):
    status, body = await send_stars_invoice(
        http,
        api,
        title="标" * 32,
        description="述" * 255,
        payload="码" * 42 + "xy",  # 128 bytes
        provider_token="",
        reply_markup={"inline_keyboard": [[{"text": "Pay ⭐️75", "pay": True}]]},
    )

    assert status == 200, body
    assert body["result"]["invoice"] == {
        "title": "标" * 32,
        "description": "述" * 255,
        "start_parameter": "",
        "currency": "XTR",
        "total_amount": 75,
    }
    assert "payload" not in json.dumps(body["result"])
    (invoice,) = api.invoices
    assert (invoice.payload, invoice.total_amount) == ("码" * 42 + "xy", 75)


async def test_aiogram_stars_payment_pre_checkout_success_and_refund(api: BotApiStub, bot: Bot):
    user = api.user(USER_ID, "Ann")
    sent = await bot.send_invoice(
        USER_ID,
        title="Top up ¥10",
        description="Wallet top-up of ¥10.00",
        payload="Tq3v9XkZ",
        currency="XTR",
        prices=[LabeledPrice(label="¥10", amount=75)],
    )
    assert sent.invoice is not None
    assert (sent.invoice.currency, sent.invoice.total_amount) == ("XTR", 75)
    assert api.sent_to(USER_ID)[0].invoice == sent.invoice.model_dump()
    updates = Poller(bot.get_updates)

    paying = asyncio.create_task(api.pay_invoice(user, api.sent_to(USER_ID)[0]))
    query = (await updates.next()).pre_checkout_query
    assert isinstance(query, PreCheckoutQuery)
    assert (query.from_user.id, query.currency, query.total_amount) == (USER_ID, "XTR", 75)
    assert query.invoice_payload == "Tq3v9XkZ"
    assert await bot.answer_pre_checkout_query(query.id, ok=True)
    outcome = await paying
    paid = (await updates.next()).message

    assert outcome.status is PaymentStatus.PAID
    assert outcome.charge is not None
    assert isinstance(paid, Message)
    assert paid.from_user is not None
    assert paid.from_user.id == USER_ID
    payment = paid.successful_payment
    assert isinstance(payment, SuccessfulPayment)
    charge_id = payment.telegram_payment_charge_id
    assert charge_id == outcome.charge.telegram_payment_charge_id
    assert len(charge_id) > 128  # as long as real Stars charge ids get
    assert (payment.currency, payment.total_amount, payment.invoice_payload) == (
        "XTR",
        75,
        "Tq3v9XkZ",
    )
    assert api.pre_checkout_answers[query.id].ok
    with pytest.raises(LookupError, match="already paid"):
        await api.pay_invoice(user, sent.message_id)

    with pytest.raises(TelegramBadRequest, match="USER_ID_INVALID"):
        await bot.refund_star_payment(USER_ID + 1, charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_NOT_FOUND"):
        await bot.refund_star_payment(USER_ID, "stx-unknown")
    assert await bot.refund_star_payment(USER_ID, charge_id)
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(USER_ID, charge_id)
    refunded = (await updates.next()).message

    assert isinstance(refunded, Message)
    assert isinstance(refunded.refunded_payment, RefundedPayment)
    assert refunded.refunded_payment.telegram_payment_charge_id == charge_id
    assert refunded.refunded_payment.total_amount == 75
    assert refunded.refunded_payment.invoice_payload == "Tq3v9XkZ"
    assert api.charges[charge_id].refunded_by == "bot"


async def test_declined_pre_checkout_cancels_the_payment(api: BotApiStub, bot: Bot):
    user = api.user(USER_ID)
    sent = await bot.send_invoice(
        USER_ID, "Top up", "¥10", "Tq3v9XkZ", "XTR", [LabeledPrice(label="¥10", amount=75)]
    )
    updates = Poller(bot.get_updates)

    paying = asyncio.create_task(api.pay_invoice(user, sent.message_id))
    query = (await updates.next()).pre_checkout_query
    assert query is not None
    with pytest.raises(TelegramBadRequest, match='parameter "error_message" is required'):
        await bot.answer_pre_checkout_query(query.id, ok=False)
    await bot.answer_pre_checkout_query(query.id, ok=False, error_message="充值单已过期")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(query.id, ok=True)
    outcome = await paying

    assert outcome.status is PaymentStatus.DECLINED
    assert outcome.error_message == "充值单已过期"
    assert (outcome.charge, outcome.update) == (None, None)
    assert api.charges == {}
    assert await updates.rest() == []


async def test_unanswered_pre_checkout_times_out_and_a_late_answer_is_too_old(
    api: BotApiStub, bot: Bot
):
    api.pre_checkout_window = 0.05
    user = api.user(USER_ID)
    sent = await bot.send_invoice(
        USER_ID, "Top up", "¥10", "Tq3v9XkZ", "XTR", [LabeledPrice(label="¥10", amount=75)]
    )

    outcome = await api.pay_invoice(user, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_pre_checkout_query(outcome.query_id, ok=True)

    assert outcome.status is PaymentStatus.TIMED_OUT
    assert api.charges == {}
    # A cancelled payment leaves the invoice payable: the user may try again.
    again = asyncio.create_task(api.pay_invoice(user, sent.message_id))
    query = await pre_checkout_query(api, besides=outcome.query_id)
    await bot.answer_pre_checkout_query(query["id"], ok=True)
    assert (await again).paid


async def test_a_bot_not_asking_for_pre_checkout_queries_never_sees_them(
    api: BotApiStub, http: aiohttp.ClientSession
):
    api.pre_checkout_window = 0.05
    user = api.user(USER_ID)
    await call(http, api, "getUpdates", allowed_updates=["message", "callback_query"])
    _, sent = await send_stars_invoice(http, api)

    outcome = await api.pay_invoice(user, sent["result"]["message_id"])

    assert outcome.status is PaymentStatus.TIMED_OUT
    assert [list(u)[1] for u in api.dropped_updates] == ["pre_checkout_query"]


async def test_refund_honours_fail_next_and_support_refunds_reach_the_bot(
    api: BotApiStub, http: aiohttp.ClientSession
):
    user = api.user(USER_ID)
    charges: list[str] = []
    query: dict[str, Any] = {"id": None}
    for _ in range(2):
        _, sent = await send_stars_invoice(http, api)
        paying = asyncio.create_task(api.pay_invoice(user, sent["result"]["message_id"]))
        query = await pre_checkout_query(api, besides=query["id"])
        await call(http, api, "answerPreCheckoutQuery", pre_checkout_query_id=query["id"], ok=True)
        outcome = await paying
        assert outcome.charge is not None
        charges.append(outcome.charge.telegram_payment_charge_id)
    api.fail_next("refundStarPayment", error_code=400, description="Bad Request: BALANCE_TOO_LOW")

    refused = await call(
        http, api, "refundStarPayment", user_id=USER_ID, telegram_payment_charge_id=charges[0]
    )
    assert refused == (
        400,
        {"ok": False, "error_code": 400, "description": "Bad Request: BALANCE_TOO_LOW"},
    )
    assert not api.charges[charges[0]].refunded
    update = api.support_refund(charges[1])
    with pytest.raises(LookupError, match="no refundable charge"):
        api.support_refund(charges[1])
    status, body = await call(
        http, api, "refundStarPayment", user_id=USER_ID, telegram_payment_charge_id=charges[1]
    )

    assert update["message"]["refunded_payment"]["telegram_payment_charge_id"] == charges[1]
    assert update["message"]["from"]["id"] == USER_ID
    assert (status, body["description"]) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    assert api.charges[charges[1]].refunded_by == "support"


async def test_ptb_parses_the_payment_updates(api: BotApiStub, ptb: telegram.Bot):
    user = api.user(USER_ID, language_code="en")
    sent = await ptb.send_invoice(
        USER_ID, "Top up", "¥10", "Tq3v9XkZ", "XTR", [telegram.LabeledPrice("¥10", 75)]
    )
    assert sent.invoice is not None
    assert sent.invoice.total_amount == 75
    updates = Poller(ptb.get_updates)

    paying = asyncio.create_task(api.pay_invoice(user, sent.message_id))
    query = (await updates.next()).pre_checkout_query
    assert isinstance(query, telegram.PreCheckoutQuery)
    assert (query.from_user.id, query.invoice_payload, query.total_amount) == (
        USER_ID,
        "Tq3v9XkZ",
        75,
    )
    assert await ptb.answer_pre_checkout_query(query.id, ok=True)
    outcome = await paying
    paid = (await updates.next()).message
    assert outcome.charge is not None
    assert paid is not None
    assert paid.successful_payment is not None
    charge_id = paid.successful_payment.telegram_payment_charge_id
    assert charge_id == outcome.charge.telegram_payment_charge_id
    assert await ptb.refund_star_payment(USER_ID, charge_id)
    refunded = (await updates.next()).message

    assert refunded is not None
    assert isinstance(refunded.refunded_payment, telegram.RefundedPayment)
    assert refunded.refunded_payment.telegram_payment_charge_id == charge_id
    api.redeliver(outcome.update or {})
    replayed = (await updates.next()).message
    assert replayed is not None
    assert replayed.successful_payment == paid.successful_payment
