"""How a worker learns which adapter to serve (the contract with training's retrain/promote step).

A new adapter path is announced by PUBLISHing it on `keys.ADAPTER_RELOAD_CHANNEL` (instant) and SETting it in
`keys.ADAPTER_CURRENT` (read every `poll_s`; it also reaches a worker that was restarting when the message went
out). Workers check between batches and reload through their engine factory (model/worker.py).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time

from model import keys

log = logging.getLogger(__name__)


class AdapterAnnouncements:
    def __init__(self, redis, poll_s: float = 1.0):
        self.r, self.poll_s = redis, poll_s
        self._pubsub = None
        self._next_poll = 0.0

    async def check(self) -> tuple[str | None, bool]:
        """(path, fresh): the newest path published on the channel (fresh=True), else ADAPTER_CURRENT when it is
        time to read it (fresh=False), else (None, False)."""
        latest = None
        try:
            if self._pubsub is None:
                self._pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(keys.ADAPTER_RELOAD_CHANNEL)
            while (msg := await self._pubsub.get_message(timeout=0)) is not None:
                if msg.get("type") == "message":
                    latest = msg["data"].decode()
        except Exception as e:  # Redis away: resubscribe next time; ADAPTER_CURRENT covers what was missed
            log.debug("reload channel unavailable: %s", e)
            await self.close()
        if latest is not None:
            return latest, True
        now = time.monotonic()
        if now < self._next_poll:
            return None, False
        self._next_poll = now + self.poll_s
        current = await self.r.get(keys.ADAPTER_CURRENT)
        return (current.decode() if current else None), False

    async def close(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            try:
                await pubsub.aclose()
            except Exception:
                pass


def same_path(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def free_accelerator_memory() -> None:
    """After dropping an engine: collect it, and give its GPU memory back (only if torch is already loaded)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
