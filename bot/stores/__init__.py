"""Stores behind small protocols: Redis in production, in-process for the embedded default.

Same behaviour, same tests (tests/bot/test_stores.py runs against both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

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

    def turn_gate(self, history: HistoryStore) -> TurnGate:
        """The manager's steps before and after the model on these stores (see `TurnGate`)."""

    async def forget(self, user_key: str) -> int:
        """Erase every key of this user (all conversations, state, flags). Returns how many were removed."""


@runtime_checkable
class RequestQueue(Protocol):
    async def submit(self, request: GenerationRequest) -> None: ...

    def events(self, request_id: str, timeout_s: float) -> AsyncIterator[StreamChunk | GenerationResult]:
        """Streamed chunks, then the result, for a submitted request. Raises TimeoutError past `timeout_s`."""

    async def close(self) -> None: ...


@dataclass
class TurnContext:
    """What a turn learns once it holds its conversation: read in the same step that granted it."""

    first_contact: bool  # this person's first turn ever (or since /forget): the notice goes with the reply
    careful: bool  # careful mode is on (a crisis was screened recently)
    history: list[Turn] = field(default_factory=list)  # the conversation's newest turns, oldest first


@runtime_checkable
class Admission(Protocol):
    """One message let into its conversation's queue (`TurnGate.admit`)."""

    outcome: Literal["admitted", "duplicate", "rate_limited"]

    async def enter(self, timeout_s: float) -> TurnContext:
        """Wait for this message's turn (messages of a conversation go in admission order); TimeoutError after
        `timeout_s` (the message then leaves the queue)."""

    async def finish(self, *turns: Turn) -> None:
        """Store the turn's messages in the history and let the next message of the conversation in."""

    async def release(self) -> None:
        """Let the next message in without storing anything (idempotent; nothing to do after `finish`)."""


@runtime_checkable
class TurnGate(Protocol):
    """The pre-model checks of a message and its place in the conversation, as one step.

    `admit` = dedupe claim + rate limit + a place in the conversation's FIFO queue, atomically with Redis (one
    script); `enter` then yields the first-contact mark, careful mode and the history when the turn comes.
    """

    async def admit(self, *, dedupe_key: str | None, dedupe_ttl_s: float, rate_key: str, rate_limit: int,
                    rate_window_s: float, user_key: str, conversation: str, hold_s: float,
                    history_turns: int) -> Admission: ...


def turn_gate(history: HistoryStore, state: StateStore) -> TurnGate:
    """The gate of a pair of stores of one kind (in-process: bot/stores/memory.py; Redis: bot/stores/redis_turns.py)."""
    return state.turn_gate(history)
