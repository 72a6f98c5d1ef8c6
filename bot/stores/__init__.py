"""Stores behind small protocols: Redis in production, in-process for the embedded default.

Same behaviour, same tests (tests/bot/test_stores.py runs against both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from model.schema import GenerationRequest, GenerationResult, StreamChunk, Turn


@runtime_checkable
class HistoryStore(Protocol):
    async def load(self, conversation: str) -> list[Turn]:
        """The conversation's recent turns, oldest first."""

    async def append(self, conversation: str, *turns: Turn) -> None:
        """Add turns, keep the newest `max_turns`, and refresh the conversation's expiry."""

    async def forget(self, user_key: str) -> int:
        """Erase every conversation of this user. Returns how many conversations were removed."""


@runtime_checkable
class StateStore(Protocol):
    async def claim(self, key: str, ttl_s: float) -> bool:
        """True the first time `key` is claimed within `ttl_s` (dedupe of redeliveries across processes)."""

    async def allow(self, key: str, limit: int, window_s: float) -> bool:
        """Rate limit: True while `key` has been hit fewer than `limit` times in the last `window_s`."""

    async def get_field(self, user_key: str, name: str) -> str | None: ...

    async def set_field(self, user_key: str, name: str, value: str, ttl_s: float | None = None) -> None: ...

    def lock(self, conversation: str, timeout_s: float) -> AbstractAsyncContextManager[None]:
        """Per-conversation ordering: one turn at a time per conversation, across processes."""

    async def forget(self, user_key: str) -> int:
        """Erase every key of this user (all conversations, state, flags). Returns how many were removed."""


@runtime_checkable
class RequestQueue(Protocol):
    async def submit(self, request: GenerationRequest) -> None: ...

    def events(self, request_id: str, timeout_s: float) -> AsyncIterator[StreamChunk | GenerationResult]:
        """Streamed chunks, then the result, for a submitted request. Raises TimeoutError past `timeout_s`."""

    async def close(self) -> None: ...
