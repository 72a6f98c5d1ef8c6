"""In-process stores for the embedded default (`make chat` with no Redis): same behaviour as the Redis ones."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = defaultdict(int)

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

    @asynccontextmanager
    async def lock(self, conversation: str, timeout_s: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(conversation, asyncio.Lock())
        self._waiters[conversation] += 1
        try:
            await asyncio.wait_for(lock.acquire(), timeout_s)
            try:
                yield
            finally:
                lock.release()
        finally:
            self._waiters[conversation] -= 1
            if not self._waiters[conversation]:
                self._waiters.pop(conversation, None)
                self._locks.pop(conversation, None)

    async def forget(self, user_key: str) -> int:
        n = len(self._fields.pop(user_key, {}))
        for k in [k for k in self._hits if k.endswith(user_key)]:
            del self._hits[k]
        return n
