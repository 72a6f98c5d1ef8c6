"""Faults on the production path: a worker killed mid-batch, Redis restarted mid-run.

Manager + Redis stores in this process, worker PROCESSES on the stub engine (benchmarks/stub_engine.py: the
plumbing is under test here; the real engine is covered by tests/model).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from benchmarks.stub_engine import stub_reply
from bot.runtime import build_runtime
from bot.settings import Settings
from bot.types import IncomingMessage
from model import keys
from model.redis_io import connect, decode_outbox_entry
from model.schema import GenerationResult
from tests.bot.stub_workers import StubWorkers
from tests.conftest import RedisServer


@pytest.fixture(autouse=True)
def rules_only_screen(monkeypatch):
    """The crisis screen's embedding layer is tested with the screen; here it would only slow the plumbing."""
    from bot.safety import embed

    monkeypatch.setattr(embed, "ENABLED", embed.ENABLED)  # restored after the test (build_runtime sets it)


@pytest.fixture
def workers(redis_url):
    w = StubWorkers(redis_url)
    yield w
    w.stop_all()


def runtime_for(url: str):
    return build_runtime(Settings(redis_url=url, redis_timeout_s=2.0, request_timeout_s=90, rate_limit_messages=100,
                                  safety_embedding=False))


async def results_published(r, request_id: str) -> int:
    entries = await r.xrange(keys.outbox(request_id))
    return sum(isinstance(decode_outbox_entry(f)[1], GenerationResult) for _, f in entries)


async def test_worker_killed_mid_batch_its_requests_are_finished_by_another(redis_url, workers):
    r = connect(redis_url, 2.0)
    workers.start("doomed", latency_ms=4000, claim_idle_ms=1500, batch_size=64)
    await workers.wait_ready(r, "doomed")
    rt = runtime_for(redis_url)
    partials: dict[str, list[str]] = {}

    async def send(i: int):
        msg = IncomingMessage("test", f"u{i}", f"message number {i}", message_id=f"m{i}")
        partials[msg.text] = []

        async def on_partial(text: str) -> None:
            partials[msg.text].append(text)

        return msg, await rt.manager.handle(msg, on_partial=on_partial if i % 2 else None)

    turns = [asyncio.create_task(send(i)) for i in range(12)]
    async with asyncio.timeout(30):  # the doomed worker has taken requests and is generating
        while not (await r.xpending(keys.REQUESTS_STREAM, keys.WORKER_GROUP))["pending"]:
            await asyncio.sleep(0.02)
    await asyncio.sleep(1.5)  # mid-batch: the stub has streamed a first piece of some replies
    workers.procs["doomed"].send_signal(signal.SIGKILL)
    workers.procs["doomed"].wait()
    stranded = (await r.xpending(keys.REQUESTS_STREAM, keys.WORKER_GROUP))["pending"]
    assert stranded > 0  # it died holding requests it had not acknowledged

    workers.start("rescuer", latency_ms=100, claim_idle_ms=1500, batch_size=64)
    done = await asyncio.wait_for(asyncio.gather(*turns), 90)

    for msg, reply in done:
        assert reply.kind == "answer" and reply.text == stub_reply(msg.text)
        assert await results_published(r, reply.request_id) == 1  # exactly one reply per accepted message
        for text in partials[msg.text]:  # streamed text only ever showed the start of that same reply
            assert reply.text.startswith(text)
        assert await rt.manager.handle(msg) is None  # a redelivery is not answered again
    assert await r.xlen(keys.REQUESTS_STREAM) == 0
    assert (await r.xpending(keys.REQUESTS_STREAM, keys.WORKER_GROUP))["pending"] == 0
    await rt.close()
    await r.aclose()


async def test_redis_restart_mid_run_loses_no_accepted_message(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    workers = StubWorkers(server.url)
    rt = runtime_for(server.url)
    r = connect(server.url, 2.0)
    try:
        workers.start("w1", latency_ms=30, claim_idle_ms=2000)
        await workers.wait_ready(r, "w1")
        answered = 0
        users, per_user = 20, 4

        async def user(u: int) -> list:
            nonlocal answered
            out = []
            for k in range(per_user):
                msg = IncomingMessage("test", f"u{u}", f"user {u} says {k}", message_id=f"{u}-{k}")
                out.append((msg, await rt.manager.handle(msg)))
                answered += 1
            return out

        tasks = [asyncio.create_task(user(u)) for u in range(users)]
        async with asyncio.timeout(60):
            while answered < users:  # mid-run
                await asyncio.sleep(0.01)
        await asyncio.to_thread(server.restart)
        done = await asyncio.wait_for(asyncio.gather(*tasks), 120)

        for u, turns in enumerate(done):
            for msg, reply in turns:
                assert reply.kind == "answer" and reply.text == stub_reply(msg.text)
                assert await results_published(r, reply.request_id) == 1
            history = await rt.history.load(f"test:u{u}")
            assert [t.content for t in history] == [x for msg, reply in turns for x in (msg.text, reply.text)]
        async with asyncio.timeout(10):
            while await r.xlen(keys.REQUESTS_STREAM):
                await asyncio.sleep(0.05)
    finally:
        workers.stop_all()
        await rt.close()
        await r.aclose()
        server.stop()
