"""The same behavioural tests for the in-process stores and the Redis stores (a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from bot.stores import HistoryStore, StateStore, TurnGate, turn_gate
from bot.stores.memory import MemoryHistoryStore, MemoryStateStore
from bot.stores.redis_stores import RedisHistoryStore, RedisStateStore
from bot.stores.redis_turns import ADMIT
from model import keys
from model.redis_io import close_auto_pipeline, connect
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

    def gate(self, max_turns: int = 40) -> TurnGate:
        """The turn gate of one process (for Redis: its own client, as another process would have)."""
        if self.kind == "memory":
            if not hasattr(self, "_memory_history"):
                self._memory_history = MemoryHistoryStore(max_turns)
            return turn_gate(self._memory_history, self._memory_state)
        c = self._client()
        return turn_gate(RedisHistoryStore(c, max_turns), RedisStateStore(c))

    def gate_history(self) -> HistoryStore:
        """The history the gates of `gate()` write (in process: theirs; Redis: any client)."""
        return self._memory_history if self.kind == "memory" else self.history()

    async def close(self) -> None:
        for c in self.clients:
            await close_auto_pipeline(c)
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


# --- the turn gate: pre-model checks and the conversation's order in one step ------------------------------------
def admission(gate, conversation: str = "test:u1", dedupe: str | None = None, limit: int = 100,
              window_s: float = 60, hold_s: float = 10, turns: int = 40):
    return gate.admit(dedupe_key=dedupe, dedupe_ttl_s=60, rate_key=f"rate:{keys.user_key_of(conversation)}",
                      rate_limit=limit, rate_window_s=window_s, user_key=keys.user_key_of(conversation),
                      conversation=conversation, hold_s=hold_s, history_turns=turns)


async def test_gate_dedupes_and_rate_limits(stores):
    g = stores.gate()
    a = await admission(g, dedupe="test:m1", limit=2)
    assert a.outcome == "admitted"
    assert (await admission(stores.gate(), dedupe="test:m1", limit=2)).outcome == "duplicate"  # other process too
    await a.enter(5)
    await a.release()
    b = await admission(g, dedupe="test:m2", limit=2)
    assert b.outcome == "admitted"
    await b.release()
    assert (await admission(g, dedupe="test:m3", limit=2)).outcome == "rate_limited"
    assert (await admission(g, dedupe="test:m3", limit=2)).outcome == "duplicate"  # it got its (rate-limit) reply
    assert (await admission(g, dedupe="test:m4", limit=2)).outcome == "rate_limited"
    assert (await admission(g, conversation="test:u2", limit=2)).outcome == "admitted"  # per user


async def test_gate_context_first_contact_careful_and_history_window(stores):
    g = stores.gate()
    a = await admission(g, turns=3)
    ctx = await a.enter(5)
    assert ctx.first_contact and not ctx.careful and ctx.history == []
    await a.finish(*turns("one", "two"))
    await a.release()  # nothing more to do after finish
    await stores.state().set_field("test:u1", "careful", "self_harm", ttl_s=60)
    b = await admission(stores.gate(), turns=3)
    ctx = await b.enter(5)
    assert not ctx.first_contact and ctx.careful and [t.content for t in ctx.history] == ["one", "two"]
    await b.finish(*turns("three", "four"))
    c = await admission(g, conversation="test:u1:t:th", turns=3)  # a thread: own history, same person
    ctx = await c.enter(5)
    assert not ctx.first_contact and ctx.careful and ctx.history == []
    await c.release()
    d = await admission(g, turns=3)
    assert [t.content for t in (await d.enter(5)).history] == ["two", "three", "four"]  # the newest 3
    await d.release()
    assert [t.content for t in await stores.gate_history().load("test:u1")] == ["one", "two", "three", "four"]


async def test_gate_turns_go_in_admission_order_one_at_a_time(stores):
    gates = [stores.gate() for _ in range(3)]  # for Redis: three processes
    inside, peak, order = 0, 0, []

    async def turn(i: int, adm) -> None:
        nonlocal inside, peak
        await asyncio.sleep(0.01 * (7 - i))  # the later ones ask first: only the admission order counts
        await adm.enter(10)
        inside += 1
        peak = max(peak, inside)
        order.append(i)
        await asyncio.sleep(0.02)
        inside -= 1
        await adm.finish(*turns(f"m{i}", f"r{i}"))

    admitted = [await admission(gates[i % 3]) for i in range(6)]  # admitted in this order
    await asyncio.gather(*(turn(i, a) for i, a in enumerate(admitted)))
    assert peak == 1 and order == list(range(6))
    assert [t.content for t in await stores.gate_history().load("test:u1")] == [x for i in range(6)
                                                                          for x in (f"m{i}", f"r{i}")]


async def test_gate_release_lets_the_next_in_without_storing_and_a_wait_times_out(stores):
    g = stores.gate()
    first, second = await admission(g), await admission(stores.gate())
    await first.enter(5)
    with pytest.raises(TimeoutError):
        await second.enter(0.2)  # the first still holds the conversation
    await second.release()  # gave up waiting: leaves the queue
    third = await admission(g)
    await first.release()
    async with asyncio.timeout(2):
        await third.enter(5)
    await third.release()
    assert await stores.gate_history().load("test:u1") == []


async def test_gate_retried_admit_is_applied_once(redis_url):
    """A connection lost after Redis ran ADMIT: the client sends it again with the same token; nothing doubles."""
    r = connect(redis_url, 2.0)
    ks = [keys.claim("test:m1"), keys.rate("rate:test:u1"), keys.lock_queue("test:u1"), keys.lock_alive("test:u1"),
          keys.user_field("test:u1", "seen"), keys.user_fields("test:u1"), keys.user_field("test:u1", "careful"),
          keys.history("test:u1")]
    args = ["tok1", "1", 60000, 5, 60000, 10000, 10000, 40]
    first = await ADMIT(r, ks, args)
    again = await ADMIT(r, ks, args)
    assert first[:4] == again[:4] == [1, 1, 1, 0]  # admitted, holding, first contact (still reported), not careful
    assert await r.zcard(keys.rate("rate:test:u1")) == 1 and await r.llen(keys.lock_queue("test:u1")) == 1
    other = await ADMIT(r, ks, ["tok2", *args[1:]])
    assert other == [0]  # another delivery of the same message id: a duplicate
    await r.aclose()


async def test_gate_and_state_lock_share_one_queue(redis_url):
    """The gate's turns and RedisStateStore.lock() wait for each other (same keys, same structure)."""
    from bot.stores.redis_turns import RedisTurnGate

    r = connect(redis_url, 2.0)
    state, gate = RedisStateStore(r), RedisTurnGate(r, RedisHistoryStore(r))
    async with state.lock("test:u1", 5):
        adm = await admission(gate)
        with pytest.raises(TimeoutError):
            await adm.enter(0.2)
    adm = await admission(gate)
    await adm.enter(2)
    with pytest.raises(TimeoutError):
        async with state.lock("test:u1", 0.2):
            pass
    await adm.release()
    async with asyncio.timeout(2):
        async with state.lock("test:u1", 5):
            pass
    await close_auto_pipeline(r)
    await r.aclose()


async def test_gate_turn_of_a_dead_process_frees_after_its_lease(redis_url):
    from bot.stores.redis_turns import RedisTurnGate

    dead, alive = connect(redis_url, 2.0), connect(redis_url, 2.0)
    held = await admission(RedisTurnGate(dead, RedisHistoryStore(dead)), hold_s=0.5)
    await held.enter(5)  # a process that dies holding the conversation: never finished nor released
    waiting = await admission(RedisTurnGate(alive, RedisHistoryStore(alive)))
    async with asyncio.timeout(5):
        await waiting.enter(10)
    await waiting.release()
    for c in (dead, alive):
        await close_auto_pipeline(c)
        await c.aclose()
