"""Worker processes on the STUB engine (benchmarks/stub_engine.py) for the plumbing fault and load tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from model import keys
from tests.conftest import REPO


class StubWorkers:
    def __init__(self, redis_url: str):
        self.url, self.procs = redis_url, {}

    def start(self, name: str, latency_ms: float = 0, claim_idle_ms: int = 60_000, batch_size: int = 8,
              batch_wait_ms: int = 0) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stub_engine", "--redis-url", self.url, "--name", name,
             "--latency-ms", str(latency_ms), "--claim-idle-ms", str(claim_idle_ms), "--batch-size", str(batch_size),
             "--batch-wait-ms", str(batch_wait_ms)], cwd=REPO)
        self.procs[name] = proc
        return proc

    async def wait_ready(self, redis, *names: str, timeout_s: float = 60) -> None:
        """Until each worker wrote its first heartbeat (it is reading the stream)."""
        async with asyncio.timeout(timeout_s):
            for name in names:
                while not await redis.exists(keys.worker_heartbeat(name)):
                    assert self.procs[name].poll() is None, f"worker {name} exited"
                    await asyncio.sleep(0.05)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
