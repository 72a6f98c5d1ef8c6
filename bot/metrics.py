"""Prometheus metrics of conversation turns, recorded around `ConversationManager.handle` by one decorator.

What a person experiences: replies by kind, reply latency, time to the first streamed text, crisis screens by
category, fallbacks and errors. Generation-side series (tokens/s, batch sizes) live in model/metrics.py; queue depth
and the HTTP endpoint in bot/ops.py. Labels are bounded (kinds, categories), never user ids or text.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)

REPLIES = Counter("counsel_replies", "Replies by kind (answer, crisis, command, fallback, rate_limited, ...)", ["kind"])
REPLY_SECONDS = Histogram("counsel_reply_seconds", "From a message's arrival to its complete reply, by kind", ["kind"],
                          buckets=_LATENCY)
FIRST_TOKEN_SECONDS = Histogram("counsel_time_to_first_token_seconds",
                                "From a message's arrival to the first streamed text shown to the person",
                                buckets=_LATENCY)
CRISIS_SCREENS = Counter("counsel_crisis_screens", "Messages the crisis screen flagged, by category", ["category"])
DUPLICATES = Counter("counsel_duplicate_deliveries", "Redeliveries recognised and not answered twice")
ERRORS = Counter("counsel_errors", "Errors: fallback = a person got the kind fallback message instead of an answer; "
                                   "turn = handling a message raised", ["where"])


def record_reply(reply, seconds: float) -> None:
    if reply is None:
        DUPLICATES.inc()
        return
    REPLIES.labels(reply.kind).inc()
    REPLY_SECONDS.labels(reply.kind).observe(seconds)
    if reply.crisis:
        CRISIS_SCREENS.labels(reply.category or "unspecified").inc()
    if reply.kind == "fallback":
        ERRORS.labels("fallback").inc()


def observed_turn(handle: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """Decorate `handle(self, msg, on_partial=None, ...)`: time it, count its reply, time the first partial text."""

    @functools.wraps(handle)
    async def wrapper(self, msg, on_partial=None, *args, **kwargs):
        t0 = time.perf_counter()
        partial = on_partial
        if on_partial is not None:  # keep None as None: the manager streams only when a callback is given
            shown = False

            async def partial(text: str) -> None:
                nonlocal shown
                if not shown:
                    shown = True
                    FIRST_TOKEN_SECONDS.observe(time.perf_counter() - t0)
                await on_partial(text)

        try:
            reply = await handle(self, msg, partial, *args, **kwargs)
        except Exception:
            ERRORS.labels("turn").inc()
            raise
        record_reply(reply, time.perf_counter() - t0)
        return reply

    return wrapper
