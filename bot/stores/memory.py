"""In-process stores for the embedded default (`make chat` with no Redis): same behaviour as the Redis ones."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from bot.stores import TurnContext
from model.schema import Turn


class MemoryHistoryStore:
    def __init__(self, max_turns: int = 40, ttl_s: float = 7 * 86400, clock=time.monotonic):
        self.max_turns, self.ttl_s, self.clock = max_turns, ttl_s, clock
        self._turns: dict[str, list[Turn]] = {}
        self._expires: dict[str, float] = {}

    def _expire(self, conversation: str) -> None:
        if self._expires.get(conversation, float("inf")) <= self.clock():
            self._turns.pop(conversation, None)
            self._expires.pop(conversation, None)

    async def load(self, conversation: str) -> list[Turn]:
        self._expire(conversation)
        return list(self._turns.get(conversation, []))

    async def append(self, conversation: str, *turns: Turn) -> None:
        self._expire(conversation)
        kept = (self._turns.get(conversation, []) + list(turns))[-self.max_turns:]
        self._turns[conversation] = kept
        self._expires[conversation] = self.clock() + self.ttl_s

    async def forget(self, user_key: str) -> int:
        doomed = [c for c in self._turns if c == user_key or c.startswith(user_key + ":")]
        for c in doomed:
            self._turns.pop(c, None)
            self._expires.pop(c, None)
        return len(doomed)


class MemoryStateStore:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._claims: dict[str, float] = {}
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._fields: dict[str, dict[str, tuple[str, float]]] = defaultdict(dict)
        self._queues: dict[str, list[asyncio.Event]] = {}  # per conversation: tickets, the head holds it

    async def claim(self, key: str, ttl_s: float) -> bool:
        now = self.clock()
        if self._claims.get(key, 0.0) > now:
            return False
        self._claims[key] = now + ttl_s
        if len(self._claims) > 100_000:  # keep memory bounded in a long-running chat
            self._claims = {k: v for k, v in self._claims.items() if v > now}
        return True

    async def allow(self, key: str, limit: int, window_s: float) -> bool:
        now, hits = self.clock(), self._hits[key]
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) >= limit:
            return False
        hits.append(now)
        return True

    async def get_field(self, user_key: str, name: str) -> str | None:
        value = self._fields.get(user_key, {}).get(name)
        if value is None or value[1] <= self.clock():
            return None
        return value[0]

    async def set_field(self, user_key: str, name: str, value: str, ttl_s: float | None = None) -> None:
        self._fields[user_key][name] = (value, self.clock() + ttl_s if ttl_s else float("inf"))

    # A fair lock per conversation: a queue of tickets whose head holds it (like the Redis one). A ticket's place
    # is taken when it joins (`_join`, no waiting), so the turn gate orders turns by admission.
    def _join(self, conversation: str) -> asyncio.Event:
        ticket = asyncio.Event()
        queue = self._queues.setdefault(conversation, [])
        queue.append(ticket)
        if len(queue) == 1:
            ticket.set()
        return ticket

    async def _wait(self, conversation: str, ticket: asyncio.Event, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await ticket.wait()
        except TimeoutError:
            self._leave(conversation, ticket)
            raise TimeoutError(f"lock of a conversation not granted within {timeout_s:.0f}s") from None

    def _leave(self, conversation: str, ticket: asyncio.Event) -> None:
        queue = self._queues.get(conversation)
        if not queue or ticket not in queue:
            return
        head = queue[0] is ticket
        queue.remove(ticket)
        if not queue:
            del self._queues[conversation]
        elif head:
            queue[0].set()

    @asynccontextmanager
    async def lock(self, conversation: str, timeout_s: float) -> AsyncIterator[None]:
        ticket = self._join(conversation)
        try:
            await self._wait(conversation, ticket, timeout_s)
            yield
        finally:
            self._leave(conversation, ticket)

    def turn_gate(self, history: MemoryHistoryStore) -> MemoryTurnGate:
        return MemoryTurnGate(history, self)

    async def forget(self, user_key: str) -> int:
        n = len(self._fields.pop(user_key, {}))
        for k in [k for k in self._hits if k.endswith(user_key)]:
            del self._hits[k]
        return n


class MemoryAdmission:
    def __init__(self, gate: MemoryTurnGate | None, outcome: Literal["admitted", "duplicate", "rate_limited"],
                 user_key: str = "", conversation: str = "", history_turns: int = 0):
        self.gate, self.outcome = gate, outcome
        self.user_key, self.conversation, self.history_turns = user_key, conversation, history_turns
        self._ticket = gate.state._join(conversation) if outcome == "admitted" else None

    async def enter(self, timeout_s: float) -> TurnContext:
        state, history = self.gate.state, self.gate.history
        await state._wait(self.conversation, self._ticket, timeout_s)
        first = await state.get_field(self.user_key, "seen") is None
        if first:
            await state.set_field(self.user_key, "seen", "1")
        careful = await state.get_field(self.user_key, "careful") is not None
        return TurnContext(first_contact=first, careful=careful,
                           history=(await history.load(self.conversation))[-self.history_turns:])

    async def finish(self, *turns: Turn) -> None:
        try:
            await self.gate.history.append(self.conversation, *turns)
        finally:
            await self.release()

    async def release(self) -> None:
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            self.gate.state._leave(self.conversation, ticket)


class MemoryTurnGate:
    """The in-process turn gate: claim, rate limit and a place in the conversation's queue, in one step (nothing
    in it waits, so nothing else runs in between)."""

    def __init__(self, history: MemoryHistoryStore, state: MemoryStateStore):
        self.history, self.state = history, state

    async def admit(self, *, dedupe_key: str | None, dedupe_ttl_s: float, rate_key: str, rate_limit: int,
                    rate_window_s: float, user_key: str, conversation: str, hold_s: float,
                    history_turns: int) -> MemoryAdmission:
        if dedupe_key and not await self.state.claim(dedupe_key, dedupe_ttl_s):
            return MemoryAdmission(None, "duplicate")
        if not await self.state.allow(rate_key, rate_limit, rate_window_s):
            return MemoryAdmission(None, "rate_limited")
        return MemoryAdmission(self, "admitted", user_key, conversation, history_turns)
