"""The same behavioural tests for the in-process stores and the Redis stores (a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from bot.stores import HistoryStore, StateStore
from bot.stores.memory import MemoryHistoryStore, MemoryStateStore
from bot.stores.redis_stores import RedisHistoryStore, RedisStateStore
from model.redis_io import connect
from model.schema import Turn


class Stores:
    """Makes history and state stores of one kind; `other_process()` gives a second view of the same data (for
    Redis a second client, as another process would have; in process the same objects)."""

    def __init__(self, kind: str, redis_url: str | None):
        self.kind, self.url, self.clients = kind, redis_url, []
        self._memory_state = MemoryStateStore()

    def _client(self):
        c = connect(self.url, 2.0)
        self.clients.append(c)
        return c

    def history(self, max_turns: int = 40, ttl_s: float = 3600) -> HistoryStore:
        if self.kind == "memory":
            return MemoryHistoryStore(max_turns, ttl_s)
        return RedisHistoryStore(self._client(), max_turns, ttl_s)

    def state(self) -> StateStore:
        return self._memory_state if self.kind == "memory" else RedisStateStore(self._client())

    async def close(self) -> None:
        for c in self.clients:
            await c.aclose()


@pytest.fixture(params=["memory", "redis"])
async def stores(request):
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = Stores(request.param, url)
    yield s
    await s.close()


def turns(*texts: str) -> list[Turn]:
    return [Turn(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts)]


# --- history ----------------------------------------------------------------------------------------------------
async def test_history_keeps_order_and_caps_at_max_turns(stores):
    h = stores.history(max_turns=4)
    assert isinstance(h, HistoryStore)
    assert await h.load("test:u1") == []
    await h.append("test:u1", *turns("a", "b"))
    await h.append("test:u1", *turns("c", "d"))
    await h.append("test:u1", Turn(role="user", content="e"))
    assert [t.content for t in await h.load("test:u1")] == ["b", "c", "d", "e"]
    assert [t.role for t in await h.load("test:u1")] == ["assistant", "user", "assistant", "user"]


async def test_history_expires_after_ttl_and_append_refreshes_it(stores):
    h = stores.history(ttl_s=0.6)
    await h.append("test:u1", *turns("first", "reply"))
    await asyncio.sleep(0.4)
    await h.append("test:u1", *turns("second", "reply"))  # refreshes the expiry of the whole conversation
    await asyncio.sleep(0.4)
    assert [t.content for t in await h.load("test:u1")] == ["first", "reply", "second", "reply"]
    await asyncio.sleep(0.5)
    assert await h.load("test:u1") == []


async def test_forget_erases_every_conversation_of_the_user_only(stores):
    h = stores.history()
    await h.append("slack:U1", *turns("main"))
    await h.append("slack:U1:t:123.456", *turns("thread"))
    await h.append("slack:U12", *turns("another user whose id starts the same"))
    await h.append("discord:U1", *turns("same id, other platform"))
    assert await h.forget("slack:U1") == 2
    assert await h.load("slack:U1") == []
    assert await h.load("slack:U1:t:123.456") == []
    assert [t.content for t in await h.load("slack:U12")] == ["another user whose id starts the same"]
    assert [t.content for t in await h.load("discord:U1")] == ["same id, other platform"]
    assert await h.forget("slack:U1") == 0


async def test_history_is_shared_between_processes(stores):
    a, b = stores.history(), stores.history()
    if stores.kind == "memory":
        b = a  # one process: one store
    await a.append("test:u1", *turns("hello"))
    assert [t.content for t in await b.load("test:u1")] == ["hello"]


# --- state ------------------------------------------------------------------------------------------------------
async def test_claim_is_true_once_until_it_expires(stores):
    s = stores.state()
    assert isinstance(s, StateStore)
    assert await s.claim("slack:Ev1", 0.5)
    assert not await s.claim("slack:Ev1", 0.5)
    assert not await stores.state().claim("slack:Ev1", 0.5)  # another process sees the claim too
    assert await s.claim("slack:Ev2", 0.5)
    await asyncio.sleep(0.7)
    assert await s.claim("slack:Ev1", 0.5)


async def test_claim_race_has_exactly_one_winner(stores):
    views = [stores.state() for _ in range(4)]
    wins = await asyncio.gather(*(v.claim("discord:m42", 60) for v in views for _ in range(5)))
    assert sum(wins) == 1


async def test_allow_limits_hits_in_a_sliding_window(stores):
    s = stores.state()
    assert [await s.allow("rate:test:u1", 3, 0.6) for _ in range(4)] == [True, True, True, False]
    assert await s.allow("rate:test:u2", 3, 0.6)  # per key
    await asyncio.sleep(0.8)
    assert await s.allow("rate:test:u1", 3, 0.6)


async def test_fields_with_and_without_ttl(stores):
    s = stores.state()
    assert await s.get_field("test:u1", "seen") is None
    await s.set_field("test:u1", "seen", "1")
    await s.set_field("test:u1", "careful", "self_harm", ttl_s=0.5)
    assert await s.get_field("test:u1", "seen") == "1"
    assert await s.get_field("test:u1", "careful") == "self_harm"
    assert await s.get_field("test:u2", "seen") is None
    await asyncio.sleep(0.7)
    assert await s.get_field("test:u1", "careful") is None
    assert await s.get_field("test:u1", "seen") == "1"
    await s.set_field("test:u1", "seen", "2")
    assert await s.get_field("test:u1", "seen") == "2"


async def test_state_forget_erases_fields_and_rate_limit_of_the_user_only(stores):
    s = stores.state()
    await s.set_field("test:u1", "seen", "1")
    await s.set_field("test:u1", "careful", "abuse", ttl_s=60)
    await s.set_field("test:u2", "seen", "1")
    assert await s.allow("rate:test:u1", 1, 60)
    assert not await s.allow("rate:test:u1", 1, 60)
    assert await s.forget("test:u1") == 2
    assert await s.get_field("test:u1", "seen") is None
    assert await s.get_field("test:u1", "careful") is None
    assert await s.get_field("test:u2", "seen") == "1"
    assert await s.allow("rate:test:u1", 1, 60)


# --- the per-conversation lock ----------------------------------------------------------------------------------
async def test_lock_serializes_turns_and_grants_in_arrival_order(stores):
    views = [stores.state() for _ in range(3)]  # for Redis: three clients, as three processes
    inside, order, peak = 0, [], 0
    first_in = asyncio.Event()

    async def turn(i: int) -> None:
        nonlocal inside, peak
        async with views[i % 3].lock("test:u1", 10):
            inside += 1
            peak = max(peak, inside)
            order.append(i)
            first_in.set()
            await asyncio.sleep(0.05)
            inside -= 1

    tasks = [asyncio.create_task(turn(0))]
    await first_in.wait()
    for i in range(1, 6):  # each arrives while the others wait
        tasks.append(asyncio.create_task(turn(i)))
        await asyncio.sleep(0.03)
    await asyncio.gather(*tasks)
    assert peak == 1
    assert order == [0, 1, 2, 3, 4, 5]


async def test_locks_of_different_conversations_are_independent(stores):
    s = stores.state()
    async with s.lock("test:u1", 5):
        async with asyncio.timeout(2):
            async with stores.state().lock("test:u2", 5):
                pass


async def test_lock_wait_times_out_and_leaves_the_queue(stores):
    holder, waiter = stores.state(), stores.state()
    async with holder.lock("test:u1", 10):
        with pytest.raises(TimeoutError):
            async with waiter.lock("test:u1", 0.3):
                pytest.fail("entered a held lock")
    # the timed-out waiter does not block the next turn
    async with asyncio.timeout(2):
        async with waiter.lock("test:u1", 5):
            pass


async def test_lock_of_a_dead_holder_frees_after_its_lease(redis_url):
    dead, alive = RedisStateStore(connect(redis_url, 2.0)), RedisStateStore(connect(redis_url, 2.0))
    held = dead.lock("test:u1", 0.5)
    await held.__aenter__()  # a process that dies holding the lock: never released
    async with asyncio.timeout(5):
        async with alive.lock("test:u1", 5):
            pass
    await alive.r.aclose()
    await dead.r.aclose()
    del held
