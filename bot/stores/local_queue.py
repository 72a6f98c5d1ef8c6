"""The in-process request queue: batches requests to an engine running in a thread of this process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from model.batching import Generator, OutputGuard, run_batch
from model.schema import GenerationRequest, GenerationResult, StreamChunk, error_result

log = logging.getLogger(__name__)


class LocalQueue:
    def __init__(self, engine: Generator, guard: OutputGuard | None = None, batch_size: int = 8,
                 batch_wait_ms: int = 20):
        self.engine, self.guard = engine, guard
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_ms / 1000
        self._pending: asyncio.Queue[GenerationRequest] | None = None
        self._outboxes: dict[str, asyncio.Queue] = {}
        self._chunk_index: dict[str, int] = {}
        self._task: asyncio.Task | None = None
        self._generating = 0

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._pending = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="local-inference")

    def depth(self) -> tuple[int, int]:
        """(waiting, being generated): the queue depth for /metrics."""
        return (self._pending.qsize() if self._pending is not None else 0), self._generating

    async def submit(self, request: GenerationRequest) -> None:
        self._ensure_started()
        self._outboxes.setdefault(request.request_id, asyncio.Queue())
        await self._pending.put(request)

    async def events(self, request_id: str, timeout_s: float) -> AsyncIterator[StreamChunk | GenerationResult]:
        box = self._outboxes.setdefault(request_id, asyncio.Queue())
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(request_id)
                item = await asyncio.wait_for(box.get(), left)
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            self._outboxes.pop(request_id, None)  # a late result for an abandoned request is dropped

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._pending.get()]
            end = loop.time() + self.batch_wait_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), max(0.0, end - loop.time())))
                except TimeoutError:
                    break
            now = time.time()
            live = [r for r in batch if r.deadline is None or r.deadline > now]
            for r in batch:
                if r not in live:
                    self._deliver(error_result(r.request_id, "expired", finish_reason="expired"))

            def on_delta(request_id: str, delta: str) -> None:
                loop.call_soon_threadsafe(self._chunk, request_id, delta)

            self._generating = len(live)
            try:
                results = await asyncio.to_thread(run_batch, self.engine, live, on_delta, self.guard) if live else []
            except Exception as e:  # never a dead queue
                log.exception("in-process batch failed")
                results = [error_result(r.request_id, type(e).__name__) for r in live]
            finally:
                self._generating = 0
            for res in results:
                res.queue_seconds = max(0.0, now - next(r.created_at for r in live if r.request_id == res.request_id))
                self._deliver(res)

    def _chunk(self, request_id: str, delta: str) -> None:
        box = self._outboxes.get(request_id)
        if box is not None:
            i = self._chunk_index.get(request_id, 0)
            self._chunk_index[request_id] = i + 1
            box.put_nowait(StreamChunk(request_id=request_id, index=i, delta=delta))

    def _deliver(self, result: GenerationResult) -> None:
        self._chunk_index.pop(result.request_id, None)
        box = self._outboxes.get(result.request_id)
        if box is not None:
            box.put_nowait(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
