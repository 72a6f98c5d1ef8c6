"""The turn gate composed of the store protocols' calls (in-process stores, or any stores without a gate of their
own): the reference behaviour that the Redis gate (bot/stores/redis_turns.py) does in one script per step."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Literal

from bot.stores import HistoryStore, StateStore, TurnContext
from model.schema import Turn


class StoreAdmission:
    def __init__(self, gate: StoreTurnGate | None, outcome: Literal["admitted", "duplicate", "rate_limited"],
                 user_key: str = "", conversation: str = "", hold_s: float = 0.0, history_turns: int = 0):
        self.gate, self.outcome = gate, outcome
        self.user_key, self.conversation, self.hold_s, self.history_turns = user_key, conversation, hold_s, \
            history_turns
        self._held: AbstractAsyncContextManager | None = None

    async def enter(self, timeout_s: float) -> TurnContext:
        state, history = self.gate.state, self.gate.history
        lock = state.lock(self.conversation, timeout_s)
        await lock.__aenter__()
        self._held = lock
        first = await state.get_field(self.user_key, "seen") is None
        if first:
            await state.set_field(self.user_key, "seen", "1")
        careful = await state.get_field(self.user_key, "careful") is not None
        turns = (await history.load(self.conversation))[-self.history_turns:]
        return TurnContext(first_contact=first, careful=careful, history=turns)

    async def finish(self, *turns: Turn) -> None:
        try:
            await self.gate.history.append(self.conversation, *turns)
        finally:
            await self.release()

    async def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.__aexit__(None, None, None)


class StoreTurnGate:
    def __init__(self, history: HistoryStore, state: StateStore):
        self.history, self.state = history, state

    async def admit(self, *, dedupe_key: str | None, dedupe_ttl_s: float, rate_key: str, rate_limit: int,
                    rate_window_s: float, user_key: str, conversation: str, hold_s: float,
                    history_turns: int) -> StoreAdmission:
        if dedupe_key and not await self.state.claim(dedupe_key, dedupe_ttl_s):
            return StoreAdmission(None, "duplicate")
        if not await self.state.allow(rate_key, rate_limit, rate_window_s):
            return StoreAdmission(None, "rate_limited")
        return StoreAdmission(self, "admitted", user_key, conversation, hold_s, history_turns)
