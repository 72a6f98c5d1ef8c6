"""The conversation manager with in-process stores and the real SmolLM2 engine."""

from __future__ import annotations

import asyncio

import pytest

from bot import texts
from bot.runtime import build_runtime
from bot.settings import Settings
from bot.types import IncomingMessage


@pytest.fixture
async def rt(engine):
    runtime = build_runtime(Settings(max_new_tokens=8, temperature=0.0, rate_limit_messages=100), engine=engine)
    yield runtime
    await runtime.close()


def msg(text: str, user: str = "u1", **kw) -> IncomingMessage:
    return IncomingMessage(platform="test", user_id=user, text=text, **kw)


async def test_first_contact_notice_once_then_history_is_kept(rt):
    first = await rt.manager.handle(msg("I have been feeling low lately."))
    assert first.kind == "answer" and first.text and first.notice == texts.FIRST_CONTACT
    second = await rt.manager.handle(msg("It is worse in the mornings."))
    assert second.notice is None
    turns = await rt.history.load("test:u1")
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0].content == "I have been feeling low lately." and turns[1].content == first.text


async def test_streaming_partials_build_up_to_the_reply(rt):
    partials: list[str] = []

    async def on_partial(text: str) -> None:
        partials.append(text)

    reply = await rt.manager.handle(msg("How do I relax?"), on_partial=on_partial)
    assert len(partials) >= 2 and all(b.startswith(a) for a, b in zip(partials, partials[1:]))
    assert reply.text.startswith(partials[-1].strip()[:10])


async def test_commands(rt):
    await rt.manager.handle(msg("hello"))
    assert (await rt.manager.handle(msg("/help"))).text == texts.HELP
    assert "988" in (await rt.manager.handle(msg("/resources"))).text
    assert (await rt.manager.handle(msg("/nope"))).text == texts.UNKNOWN_COMMAND
    assert (await rt.manager.handle(msg("/forget"))).text == texts.FORGOTTEN
    assert await rt.history.load("test:u1") == []
    again = await rt.manager.handle(msg("hi again"))
    assert again.notice == texts.FIRST_CONTACT  # forgotten means forgotten, the notice too


async def test_duplicate_delivery_gets_no_second_reply(rt):
    a = await rt.manager.handle(msg("hello", message_id="m-1"))
    b = await rt.manager.handle(msg("hello", message_id="m-1"))
    assert a is not None and b is None
    assert len(await rt.history.load("test:u1")) == 2


async def test_users_and_threads_are_separate(rt):
    await rt.manager.handle(msg("mine", user="a"))
    await rt.manager.handle(msg("in a thread", user="a", thread_id="t1"))
    await rt.manager.handle(msg("theirs", user="b"))
    assert [t.content for t in await rt.history.load("test:a")][0] == "mine"
    assert [t.content for t in await rt.history.load("test:a:t:t1")][0] == "in a thread"
    await rt.manager.handle(msg("/forget", user="a"))
    assert await rt.history.load("test:a") == [] and await rt.history.load("test:a:t:t1") == []
    assert await rt.history.load("test:b") != []


async def test_one_users_messages_are_answered_in_order(rt):
    replies = await asyncio.gather(*(rt.manager.handle(msg(f"message {i}")) for i in range(3)))
    assert all(r.kind == "answer" for r in replies)
    turns = await rt.history.load("test:u1")
    assert [t.content for t in turns if t.role == "user"] == ["message 0", "message 1", "message 2"]


async def test_crisis_is_answered_without_the_model_and_stays_careful(rt):
    calls = []
    rt.manager.on_crisis = lambda m, s: calls.append(s.category) or asyncio.sleep(0)
    reply = await rt.manager.handle(msg("I want to kill myself tonight"))
    assert reply.crisis and reply.kind == "crisis" and reply.category == "suicide" and "988" in reply.text
    assert calls == ["suicide"]
    check = await rt.manager.handle(msg("never mind, you misunderstood"))
    assert check.kind == "check_in" and "safe" in check.text


async def test_timeout_gives_a_kind_fallback_and_the_late_result_is_not_delivered(engine):
    rt = build_runtime(Settings(max_new_tokens=8, request_timeout_s=0.001), engine=engine)
    try:
        reply = await rt.manager.handle(msg("hello"))
        assert reply.kind == "fallback" and "988" in reply.text
        await asyncio.sleep(1.5)  # the late result arrives and is dropped
        assert rt.queue._outboxes == {}
        assert await rt.history.load("test:u1") == []
    finally:
        await rt.close()


async def test_rate_limit_is_friendly(engine):
    rt = build_runtime(Settings(max_new_tokens=4, rate_limit_messages=2, rate_limit_window_s=3600), engine=engine)
    try:
        kinds = [(await rt.manager.handle(msg(f"m{i}"))).kind for i in range(3)]
        assert kinds == ["answer", "answer", "rate_limited"]
        crisis = await rt.manager.handle(msg("i want to die"))
        assert crisis.crisis  # a crisis is never rate limited
    finally:
        await rt.close()


async def test_empty_and_too_long_messages(rt):
    assert (await rt.manager.handle(msg("  \x00\x07 "))).kind == "invalid"
    long = await rt.manager.handle(msg("word " * 3000))
    assert long.kind == "answer" and long.text.startswith(texts.TRUNCATED_NOTE)
    stored = await rt.history.load("test:u1")
    assert len(stored[0].content) == rt.manager.cfg.max_message_chars


async def test_notice_callback_comes_before_the_streamed_reply(rt):
    events: list[tuple[str, str]] = []

    async def on_notice(text: str) -> None:
        events.append(("notice", text))

    async def on_partial(text: str) -> None:
        events.append(("partial", text))

    reply = await rt.manager.handle(msg("Hello there."), on_partial=on_partial, on_notice=on_notice)
    assert events[0] == ("notice", texts.FIRST_CONTACT) and events[1][0] == "partial"
    assert reply.notice is None
    again = await rt.manager.handle(msg("Still here."), on_partial=on_partial, on_notice=on_notice)
    assert [e for e in events if e[0] == "notice"] == [("notice", texts.FIRST_CONTACT)] and again.notice is None
