"""A STUB ENGINE FOR TESTS AND BENCHMARKS ONLY: it does not run a model.

It answers every request with a fixed echo after a latency you set, streaming the reply in a few pieces, so the
plumbing around the engine (manager, Redis, worker) can be tested under faults and load, and benchmarked with the
engine's time excluded. The real engine (model.engine.Engine on SmolLM2) is covered by tests/model.

Run a stub worker process (used by the fault tests and benchmarks/bot_path.py):
    python -m benchmarks.stub_engine --redis-url redis://127.0.0.1:6379/0 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import threading
import time
from collections.abc import Sequence

from model.schema import GenerationRequest, GenerationResult


def stub_reply(message: str) -> str:
    return f"I hear you saying: {message}"


class StubEngine:
    """`generate()` like model.engine.Engine: sleeps `latency_s` per batch, then echoes each message."""

    def __init__(self, latency_s: float = 0.0, pieces: int = 3):
        self.latency_s, self.pieces = latency_s, pieces
        self.batches: list[list[str]] = []  # request ids of every batch, for tests
        self.seen: list[GenerationRequest] = []
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest], on_delta=None) -> list[GenerationResult]:
        with self._lock:
            self.batches.append([r.request_id for r in requests])
            self.seen.extend(requests)
        t0 = time.perf_counter()
        texts = {r.request_id: stub_reply(r.message) for r in requests}
        for k in range(self.pieces):
            if self.latency_s:
                time.sleep(self.latency_s / self.pieces)
            if on_delta is not None:
                for rid, text in texts.items():
                    step = -(-len(text) // self.pieces)
                    if piece := text[k * step:(k + 1) * step]:
                        on_delta(rid, piece)
        elapsed = time.perf_counter() - t0
        return [GenerationResult(request_id=r.request_id, text=texts[r.request_id], completion_tokens=len(
            texts[r.request_id].split()), generation_seconds=elapsed) for r in requests]


def main() -> None:
    from model.redis_io import connect
    from model.worker import InferenceWorker, WorkerConfig

    ap = argparse.ArgumentParser(description="A worker process on the STUB engine (tests and benchmarks only).")
    ap.add_argument("--redis-url", required=True)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=int, default=0)
    ap.add_argument("--claim-idle-ms", type=int, default=60_000)
    ap.add_argument("--name", default=None)
    ap.add_argument("--log-level", default="WARNING")
    a = ap.parse_args()
    logging.basicConfig(level=a.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = WorkerConfig(batch_size=a.batch_size, batch_wait_ms=a.batch_wait_ms, claim_idle_ms=a.claim_idle_ms,
                       block_ms=200, heartbeat_s=1.0)
    if a.name:
        cfg.name = a.name

    async def run() -> None:
        worker = InferenceWorker(connect(a.redis_url, 2.0), StubEngine(a.latency_ms / 1000), config=cfg)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
