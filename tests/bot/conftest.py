"""Fixtures shared by the bot tests."""

from __future__ import annotations

import pytest

from bot.runtime import build_runtime
from bot.settings import Settings


@pytest.fixture
async def rt(engine):
    """In-process stores and queue on the real SmolLM2, rules-only crisis screen, short greedy replies."""
    runtime = build_runtime(Settings(max_new_tokens=8, temperature=0.0, rate_limit_messages=100,
                                     safety_embedding=False), engine=engine)
    yield runtime
    await runtime.close()
