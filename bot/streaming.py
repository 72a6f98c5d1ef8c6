"""A throttle for streamed replies: platforms get at most one edit per `interval_s` while tokens arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class ThrottledEditor:
    """Calls `push(text)` with the latest partial text at most once per `interval_s`; `flush()` sends the rest.

    Adapters use it for Discord message edits and Slack `chat.update`: the first push happens at once (so the
    person sees the reply begin), later ones are coalesced.
    """

    def __init__(self, push: Callable[[str], Awaitable[None]], interval_s: float = 1.0, clock=time.monotonic):
        self.push, self.interval_s, self.clock = push, interval_s, clock
        self._last_push = float("-inf")
        self._latest: str | None = None
        self._sent: str | None = None
        self._lock = asyncio.Lock()

    async def update(self, text: str) -> None:
        self._latest = text
        if self.clock() - self._last_push >= self.interval_s:
            await self._send()

    async def flush(self) -> None:
        if self._latest is not None and self._latest != self._sent:
            await self._send()

    async def _send(self) -> None:
        async with self._lock:
            text = self._latest
            if text is None or text == self._sent:
                return
            self._last_push = self.clock()
            self._sent = text
            await self.push(text)
