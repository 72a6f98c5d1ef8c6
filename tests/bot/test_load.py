"""Load: 200 simulated users x 5 messages through the manager, Redis and two worker processes (stub engine).

Each user sends the next message while the previous one is still in flight (submitted, not yet answered): the
per-conversation lock must hold it back, so replies come in order, each to its own message, exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest

from benchmarks.stub_engine import stub_reply
from bot.manager import ConversationManager, ManagerConfig
from bot.settings import Settings
from bot.stores.redis_stores import build_redis_stores
from bot.types import IncomingMessage
from model import keys
from model.redis_io import connect, decode_outbox_entry
from model.schema import GenerationRequest, GenerationResult
from tests.bot.stub_workers import StubWorkers

USERS, MESSAGES = 200, 5


class SubmitWatch:
    """The Redis queue, plus an event per message text set once its request is in the stream (in flight)."""

    def __init__(self, queue):
        self.queue = queue
        self.submitted: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.requests: dict[str, GenerationRequest] = {}

    async def submit(self, request: GenerationRequest) -> None:
        await self.queue.submit(request)
        self.requests[request.message] = request
        self.submitted[request.message].set()

    def events(self, request_id: str, timeout_s: float):
        return self.queue.events(request_id, timeout_s)

    async def close(self) -> None:
        await self.queue.close()


@pytest.fixture
def workers(redis_url):
    w = StubWorkers(redis_url)
    yield w
    w.stop_all()


async def test_200_users_x_5_messages_two_workers(redis_url, workers, monkeypatch):
    from bot.safety import embed

    monkeypatch.setattr(embed, "ENABLED", False)  # the screen's embedding layer has its own tests and benchmark
    r = connect(redis_url, 2.0)
    for name in ("w1", "w2"):
        workers.start(name, latency_ms=20, batch_size=16, batch_wait_ms=5)
    await workers.wait_ready(r, "w1", "w2")
    s = Settings(redis_url=redis_url, request_timeout_s=120)
    history, state, queue = build_redis_stores(s)
    watch = SubmitWatch(queue)
    manager = ConversationManager(history, state, watch, ManagerConfig.from_settings(s))

    async def user(u: int) -> list:
        turns = []
        for k in range(MESSAGES):
            msg = IncomingMessage("test", f"u{u}", f"user {u} message {k}", message_id=f"{u}:{k}")
            turns.append((msg, asyncio.create_task(manager.handle(msg))))
            waiting = asyncio.create_task(watch.submitted[msg.text].wait())
            await asyncio.wait({waiting, turns[-1][1]}, return_when=asyncio.FIRST_COMPLETED)  # now in flight
            waiting.cancel()
        return [(msg, await task) for msg, task in turns]

    results = await asyncio.wait_for(asyncio.gather(*(user(u) for u in range(USERS))), 240)

    request_ids = set()
    for u, turns in enumerate(results):
        for k, (msg, reply) in enumerate(turns):
            assert reply.kind == "answer" and reply.text == stub_reply(msg.text)  # its own reply
            request_ids.add(reply.request_id)
            # handled after the previous message: the model saw the previous turn in its history
            seen = [t.content for t in watch.requests[msg.text].history]
            assert seen == [x for m, rep in turns[:k] for x in (m.text, rep.text)]
        stored = [t.content for t in await history.load(f"test:u{u}")]
        assert stored == [x for msg, reply in turns for x in (msg.text, reply.text)]  # order preserved
    assert len(request_ids) == USERS * MESSAGES

    async with r.pipeline(transaction=False) as p:  # no duplicates: one result per request, nothing left over
        for rid in request_ids:
            p.xrange(keys.outbox(rid))
        outboxes = await p.execute()
    for entries in outboxes:
        assert sum(isinstance(decode_outbox_entry(f)[1], GenerationResult) for _, f in entries) == 1
    assert await r.xlen(keys.REQUESTS_STREAM) == 0
    async with asyncio.timeout(10):  # both workers took part (their heartbeats count what they generated)
        while True:
            beats = [json.loads(await r.get(keys.worker_heartbeat(n)) or "{}").get("requests", 0) for n in ("w1", "w2")]
            if sum(beats) >= USERS * MESSAGES:
                break
            await asyncio.sleep(0.2)
    assert min(beats) > 0 and sum(beats) == USERS * MESSAGES
    await watch.close()
    await r.aclose()


async def test_near_simultaneous_messages_of_one_person_keep_their_order(redis_url, workers, monkeypatch):
    """The rough edge of the old design (claim and rate limit passed before the lock was queued for): a person's
    messages arriving at once, in one process and across two processes, are answered one at a time, in arrival
    order within each process (admission = claim + rate limit + place in the queue, one script), and each request
    saw exactly the turns stored before it."""
    from bot.safety import embed

    monkeypatch.setattr(embed, "ENABLED", False)
    r = connect(redis_url, 2.0)
    for name in ("w1", "w2"):
        workers.start(name, latency_ms=15, batch_size=16, batch_wait_ms=2)
    await workers.wait_ready(r, "w1", "w2")
    s = Settings(redis_url=redis_url, request_timeout_s=120)
    managers, watches = [], []
    for _ in range(2):  # two bot processes on one Redis
        history, state, queue = build_redis_stores(s)
        watches.append(SubmitWatch(queue))
        managers.append(ConversationManager(history, state, watches[-1], ManagerConfig.from_settings(s)))

    async def person(u: int) -> None:
        msgs = [IncomingMessage("test", f"p{u}", f"person {u} line {k}", message_id=f"p{u}:{k}") for k in range(6)]
        # all at once, nothing awaited in between: lines 0-3 to one process, 4-5 to the other
        replies = await asyncio.gather(*(managers[k // 4].handle(m) for k, m in enumerate(msgs)))
        assert all(rep.kind == "answer" and rep.text == stub_reply(m.text) for m, rep in zip(msgs, replies))
        stored = [t.content for t in await managers[0].history.load(f"test:p{u}")]
        order = [int(text.rsplit(" ", 1)[1]) for text in stored[::2]]
        assert sorted(order) == list(range(6))
        assert [k for k in order if k < 4] == [0, 1, 2, 3] and [k for k in order if k >= 4] == [4, 5]
        for i, k in enumerate(order):  # one at a time: each request saw all the turns answered before it
            text = msgs[k].text
            request = next(w.requests[text] for w in watches if text in w.requests)
            assert [t.content for t in request.history] == stored[:2 * i]
            assert stored[2 * i:2 * i + 2] == [text, stub_reply(text)]

    await asyncio.wait_for(asyncio.gather(*(person(u) for u in range(20))), 120)
    for watch in watches:
        await watch.close()
    await r.aclose()
