"""Benchmark (not a test): what the manager + Redis + worker plumbing adds to a reply, engine time excluded.

Runs a redis-server (or uses --redis-url), worker processes on the STUB engine with zero latency
(benchmarks/stub_engine.py), and the real ConversationManager on the Redis stores in this process. Measures:
- baseline: a bare Redis round trip (PING) from this process, in the same run;
- open loop: messages sent at a fixed rate (default 200/s) by many users; latency of `manager.handle()` from the
  moment each message was due (so a stall counts against every message queued behind it);
- closed loop: N concurrent users sending back to back for a while: sustained messages/s;
- the load generator alone (the same open loop with `handle()` replaced by a no-op): what the client itself costs
  in this process, so the bot column can be read without it.
The crisis screen runs its rules only (COUNSEL_SAFETY_EMBEDDING=false; the embedding layer is measured by
benchmarks/safety.py). CPU per message is split per process: this one (manager + load generator), the workers,
redis-server. Prints a table.

    python benchmarks/bot_path.py            # or: make bench-bot
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.manager import ConversationManager, ManagerConfig  # noqa: E402
from bot.safety import embed  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.stores.redis_stores import build_redis_stores  # noqa: E402
from bot.types import IncomingMessage  # noqa: E402
from model import keys  # noqa: E402
from bot.types import Reply  # noqa: E402
from model.redis_io import connect  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

_NULL_REPLY = Reply("", kind="answer")

TEXT = "I've been feeling stressed about work and can't switch off in the evenings."


def cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU seconds of this process, then of each of `pids` (Linux /proc)."""
    out = [time.process_time()]
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return out


class CPU:
    """CPU per message, split into this process (manager), the workers and redis-server."""

    def __init__(self, workers: list[int], redis: int | None):
        self.workers, self.redis = workers, redis

    def start(self) -> None:
        self.t0 = cpu_seconds(self.workers + ([self.redis] if self.redis else []))

    def per_message(self, n: int) -> tuple[float, float, float]:
        t1 = cpu_seconds(self.workers + ([self.redis] if self.redis else []))
        d = [b - a for a, b in zip(self.t0, t1)]
        k = len(self.workers)
        return d[0] / n, sum(d[1:1 + k]) / n, (d[1 + k] if self.redis else float("nan")) / n


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def start_redis() -> tuple[subprocess.Popen, str, str]:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server), or pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


async def ping_baseline(r, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await r.ping()
        out.append(time.perf_counter() - t0)
    return out


def message(run: str, i: int, user: int) -> IncomingMessage:
    return IncomingMessage("bench", f"u{user}", TEXT, message_id=f"{run}-{i}")


class NullManager:
    """The load generator's own cost: a handle() that does nothing."""

    async def handle(self, msg):
        return _NULL_REPLY


async def open_loop(manager, rate: float, seconds: float, users: int, run: str) -> tuple[list[float], int]:
    """Messages due every 1/rate s; latency counted from when each was due. Returns (latencies, not answered)."""
    latencies: list[float] = []
    failures = 0
    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.1

    async def one(i: int) -> None:
        nonlocal failures
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        reply = await manager.handle(message(run, i, i % users))
        if reply is None or reply.kind != "answer":
            failures += 1
        latencies.append(time.perf_counter() - due)

    await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, failures


async def closed_loop(manager, concurrency: int, seconds: float, run: str) -> tuple[int, float, list[float], int]:
    """`concurrency` users each sending their next message as soon as the last is answered."""
    latencies: list[float] = []
    failures = 0
    end = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def user(u: int) -> None:
        nonlocal failures
        while time.perf_counter() < end:
            t = time.perf_counter()
            reply = await manager.handle(message(run, next(counter), 100_000 + u))
            latencies.append(time.perf_counter() - t)
            failures += reply is None or reply.kind != "answer"

    t0 = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(concurrency)))
    return len(latencies), time.perf_counter() - t0, latencies, failures


async def main(a) -> None:
    load0 = os.getloadavg()[0]
    redis_proc = workdir = None
    url = a.redis_url
    if url is None:
        redis_proc, url, workdir = start_redis()
    workers = [subprocess.Popen([sys.executable, "-m", "benchmarks.stub_engine", "--redis-url", url,
                                 "--name", f"bench-w{i}", "--latency-ms", "0", "--batch-size", str(a.batch_size),
                                 "--batch-wait-ms", "0"], cwd=REPO) for i in range(a.workers)]
    embed.configure(False)
    s = Settings(redis_url=url, rate_limit_messages=10**6, request_timeout_s=60)
    history, state, queue = build_redis_stores(s)
    manager = ConversationManager(history, state, queue, ManagerConfig.from_settings(s))
    r = connect(url)
    try:
        for i in range(a.workers):  # workers up
            while not await r.exists(keys.worker_heartbeat(f"bench-w{i}")):
                await asyncio.sleep(0.05)
        await open_loop(manager, 100, 1.0, 100, "warmup")  # connections, scripts, thread pool
        cpu = CPU([w.pid for w in workers], redis_proc.pid if redis_proc else None)
        cpu.start()
        ping = await ping_baseline(r, 2000)
        rows = [("bare Redis round trip (PING), baseline", len(ping), None, ping, 0, cpu.per_message(len(ping)))]
        for rate in a.rates:
            cpu.start()
            lat, fail = await open_loop(manager, rate, a.seconds, a.users, f"open{rate}")
            rows.append((f"open loop {rate:.0f} msg/s ({a.users} users)", len(lat), len(lat) / a.seconds, lat, fail,
                         cpu.per_message(len(lat))))
        cpu.start()
        n, took, lat, fail = await closed_loop(manager, a.concurrency, a.seconds, "closed")
        rows.append((f"closed loop, {a.concurrency} users back to back", n, n / took, lat, fail, cpu.per_message(n)))
        rate = max(a.rates)
        cpu.start()
        lat, fail = await open_loop(NullManager(), rate, a.seconds, a.users, "null")
        rows.append((f"load generator alone, open loop {rate:.0f} msg/s (no-op handle)", len(lat), len(lat) / a.seconds,
                     lat, fail, cpu.per_message(len(lat))))
        beats = [json.loads(await r.get(keys.worker_heartbeat(f"bench-w{i}")) or "{}") for i in range(a.workers)]
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(10)
        await queue.close()
        await r.aclose()
        if redis_proc:
            redis_proc.terminate()
            redis_proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()
    batches = sum(b.get("batches", 0) for b in beats)
    print(f"\nbot path plumbing: manager + Redis + {a.workers} stub worker(s) (engine time excluded), "
          f"{os.cpu_count()} CPUs, load average {load0:.2f} at the start, {load[0]:.2f} at the end; batch size "
          f"{a.batch_size} (mean over the run {sum(b.get('requests', 0) for b in beats) / max(1, batches):.1f}); "
          f"Redis reply parser: {'hiredis' if HIREDIS_AVAILABLE else 'pure Python'}\n")
    print("| what | messages | messages/s | p50 ms | p99 ms | max ms | not answered "
          "| CPU ms/message: bot / workers / redis |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, rate, lat, fail, (bot, wk, rd) in rows:
        print(f"| {name} | {n} | {'' if rate is None else f'{rate:.0f}'} | {pct(lat, 50) * 1e3:.2f} | "
              f"{pct(lat, 99) * 1e3:.2f} | {max(lat) * 1e3:.2f} | {fail} | {bot * 1e3:.2f} / {wk * 1e3:.2f} / "
              f"{rd * 1e3:.2f} |")

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", default=None, help="use this Redis instead of starting one (it gets written!)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rates", type=float, nargs="+", default=[100.0, 200.0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args))
