"""Bad input through the real manager (in-process stores, real SmolLM2): clear replies, no crash, nothing stored
that should not be."""

from __future__ import annotations

import pytest

from bot import texts
from bot.types import IncomingMessage


def msg(text: str, user: str = "u1") -> IncomingMessage:
    return IncomingMessage(platform="test", user_id=user, text=text)


@pytest.mark.parametrize("text", ["", "   \n\t ", "\x00\x01\x07\x1b\x7f\x9b", "\u200b\u200d\ufeff\u2060",
                                  "\u0301\u0302\u0303\u0336" * 50, "\u202e\u202d"])
async def test_empty_or_invisible_messages_get_a_clear_reply_and_are_not_stored(rt, text):
    reply = await rt.manager.handle(msg(text))
    assert reply.kind == "invalid" and reply.text == texts.EMPTY
    assert await rt.history.load("test:u1") == []
    assert await rt.state.get_field("test:u1", "seen") is None  # not even the first-contact mark


async def test_a_50_kb_message_is_read_in_part_and_stored_cut(rt):
    text = ("I keep replaying the argument with my sister and I can't focus at work. " * 700)[:50_000]
    reply = await rt.manager.handle(msg(text))
    assert reply.kind == "answer" and reply.text.startswith(texts.TRUNCATED_NOTE)
    stored = await rt.history.load("test:u1")
    assert len(stored) == 2 and stored[0].content == text[: rt.manager.cfg.max_message_chars]


async def test_a_crisis_at_the_end_of_a_50_kb_message_is_still_a_crisis(rt):
    text = "Work has been long and the commute is tiring. " * 1000 + "Tonight I am going to kill myself."
    reply = await rt.manager.handle(msg(text))
    assert reply.kind == "crisis" and reply.category == "suicide"


async def test_control_characters_are_removed_before_the_model_and_history(rt):
    reply = await rt.manager.handle(msg("I feel\x00 a bit\x1b[31m low\u200b today\x07"))
    assert reply.kind == "answer"
    stored = await rt.history.load("test:u1")
    assert stored[0].content == "I feel a bit[31m low today"


async def test_zalgo_text(rt):
    zalgo = "".join(c + "\u0336\u0337\u0338\u0301\u0302" for c in "I want to die")
    crisis = await rt.manager.handle(msg(zalgo))
    assert crisis.kind == "crisis" and crisis.category == "suicide"
    calm = "".join(c + "\u0301\u0302\u0303" for c in "hello there, rough week")
    reply = await rt.manager.handle(msg(calm, user="u2"))
    assert reply.kind == "answer" and reply.text.strip()


@pytest.mark.parametrize("text", ["أشعر بالحزن اليوم ولا أعرف لماذا", "我最近压力很大，睡不好。", "最近とても疲れています",
                                  "😔😔😔", "💔", "Мне грустно", "עצוב לי היום", "😂" * 40])
async def test_other_scripts_and_emoji_are_answered_and_stored(rt, text):
    reply = await rt.manager.handle(msg(text))
    assert reply.kind == "answer" and reply.text.strip()
    stored = await rt.history.load("test:u1")
    assert stored[0].content == text[: rt.manager.cfg.max_message_chars]


async def test_invalid_surrogates_do_not_crash(rt):
    reply = await rt.manager.handle(msg("broken \ud800 text"))
    assert reply.kind == "answer"
