"""Redis stores: history, per-user state and the request queue, behind the protocols of `bot.stores`.

Every key name comes from `model.keys`. Every call has connect/socket timeouts and retries connection errors
(`model.redis_io.connect`), so a restarting Redis is ridden out and a hung one fails in bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import TypeAdapter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from model import keys
from model.redis_io import (REPLY_TO_FIELD, RID_FIELD, STREAM_FIELD, Link, auto_pipeline, close_auto_pipeline, connect,
                            decode_outbox_entry, entries)
from model.schema import GenerationRequest, GenerationResult, StreamChunk, Turn

log = logging.getLogger(__name__)

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_TURNS = TypeAdapter(list[Turn])  # a whole history validated in one call


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# KEYS[1] history list, KEYS[2] the user's conversation index, KEYS[3] once-marker of this append.
# ARGV[1] max turns, ARGV[2] ttl ms, ARGV[3] conversation key, ARGV[4..] turns.
_APPEND_LUA = """
if not redis.call('SET', KEYS[3], 1, 'NX', 'PX', 600000) then return 0 end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisHistoryStore:
    """A capped list of Turn JSON per conversation, expiring `ttl_s` after the last turn."""

    def __init__(self, redis, max_turns: int = 40, ttl_s: float = 7 * 86400):
        self.r, self.max_turns, self.ttl_s = redis, max_turns, ttl_s
        self._append = redis.register_script(_APPEND_LUA)

    async def load(self, conversation: str) -> list[Turn]:
        raw = await self.r.lrange(keys.history(conversation), 0, -1)
        return _TURNS.validate_json(b"[" + b",".join(raw) + b"]") if raw else []

    async def append(self, conversation: str, *turns: Turn) -> None:
        if not turns:
            return
        key, index = keys.history(conversation), keys.user_conversations(keys.user_key_of(conversation))
        once = keys.history_append_once(secrets.token_hex(8))  # a retried append (reply lost) is not applied twice
        await self._append(keys=[key, index, once],
                           args=[self.max_turns, _ms(self.ttl_s), conversation, *[t.model_dump_json() for t in turns]])

    async def forget(self, user_key: str) -> int:
        index = keys.user_conversations(user_key)
        conversations = [c.decode() for c in await self.r.smembers(index)]
        async with self.r.pipeline(transaction=True) as p:
            for c in conversations:
                p.delete(keys.history(c))
            p.delete(index)
            done = await p.execute()
        return sum(done[:-1])


# Sliding-window rate limit. KEYS[1] zset of hit times; ARGV[1] limit, ARGV[2] window ms, ARGV[3] unique member.
_ALLOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end  -- a retry of a hit already counted
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""

# A fair (FIFO) lock. KEYS[1] list of tokens (head = holder), KEYS[2] zset token -> lease expiry in ms.
# ARGV[1] token, ARGV[2] waiting lease ms (refreshed at every poll), ARGV[3] holding lease ms.
# Heads whose lease ran out (a process that died holding or waiting) are dropped, so a dead process never
# blocks a conversation for longer than its lease. Returns 1 when the token holds the lock.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = math.max(tonumber(ARGV[2]), tonumber(ARGV[3]))
if not redis.call('LPOS', KEYS[1], ARGV[1]) then redis.call('RPUSH', KEYS[1], ARGV[1]) end
local got = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if head == ARGV[1] then got = 1 break end
  local lease = redis.call('ZSCORE', KEYS[2], head)
  if lease and tonumber(lease) > now then break end
  redis.call('LPOP', KEYS[1])
  redis.call('ZREM', KEYS[2], head)
end
redis.call('ZADD', KEYS[2], now + tonumber(got == 1 and ARGV[3] or ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return got
"""

_CLAIM_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0
"""

_RELEASE_LUA = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class RedisStateStore:
    """Dedupe claims, rate limits, per-user fields and a cross-process FIFO lock per conversation."""

    WAIT_LEASE_S = 10.0  # a waiter that stops polling for this long (a dead process) loses its place
    POLL_MIN_S, POLL_MAX_S = 0.002, 0.05

    def __init__(self, redis):
        self.r = redis
        self._allow = redis.register_script(_ALLOW_LUA)
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)

    async def claim(self, key: str, ttl_s: float) -> bool:
        # SET NX with our own token: when a connection drops after Redis executed the SET and the client retries
        # it, the retry finds our token, not a stranger's, and the claim is still ours (the message is not lost).
        token = secrets.token_hex(8)
        return bool(await self._claim(keys=[keys.claim(key)], args=[token, _ms(ttl_s)]))

    async def allow(self, key: str, limit: int, window_s: float) -> bool:
        member = f"{time.time_ns()}:{secrets.token_hex(4)}"
        return bool(await self._allow(keys=[keys.rate(key)], args=[limit, _ms(window_s), member]))

    async def get_field(self, user_key: str, name: str) -> str | None:
        value = await self.r.get(keys.user_field(user_key, name))
        return value.decode() if value is not None else None

    async def set_field(self, user_key: str, name: str, value: str, ttl_s: float | None = None) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.set(keys.user_field(user_key, name), value, px=_ms(ttl_s) if ttl_s else None)
            p.sadd(keys.user_fields(user_key), name)
            await p.execute()

    @asynccontextmanager
    async def lock(self, conversation: str, timeout_s: float) -> AsyncIterator[None]:
        """Held by one turn at a time across processes, granted in arrival order; TimeoutError after `timeout_s`.

        The holder's lease is `timeout_s` too: a process that dies holding it blocks the conversation at most that
        long.
        """
        lk = [keys.lock_queue(conversation), keys.lock_alive(conversation)]
        token = secrets.token_hex(8)
        args = [token, _ms(self.WAIT_LEASE_S), _ms(timeout_s)]
        deadline = time.monotonic() + timeout_s
        pause = self.POLL_MIN_S
        try:
            while not await self._acquire(keys=lk, args=args):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"lock of a conversation not granted within {timeout_s:.0f}s")
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, self.POLL_MAX_S)
            yield
        finally:
            try:
                await asyncio.shield(self._release(keys=lk, args=[token]))
            except _UNAVAILABLE:  # the lease frees it
                log.warning("could not release a conversation lock; its lease will")

    def turn_gate(self, history: RedisHistoryStore):
        """The manager's pre- and post-model steps as one script each (bot/stores/redis_turns.py)."""
        from bot.stores.redis_turns import RedisTurnGate

        return RedisTurnGate(self.r, history)

    async def forget(self, user_key: str) -> int:
        index = keys.user_fields(user_key)
        names = [n.decode() for n in await self.r.smembers(index)]
        async with self.r.pipeline(transaction=True) as p:
            for n in names:
                p.delete(keys.user_field(user_key, n))
            p.delete(index, keys.rate(f"rate:{user_key}"))
            done = await p.execute()
        return sum(done[:-1])


class RedisRequestQueue:
    """Requests go to `keys.REQUESTS_STREAM` (read by `counsel-bot worker`s in `keys.WORKER_GROUP`).

    Chunks and results come back through this process's replies stream (`keys.replies`, named in each request's
    `reply_to`): one reader task blocks on it for every waiting conversation, so a thousand conversations in flight
    need one connection, not a thousand. The reader resumes from the last entry it saw after a Redis restart. A
    request this queue did not submit is awaited on its own outbox instead (model.redis_io).
    """

    RECHECK_S = 5.0  # a waiting request checks its result key this often, in case its replies entry was lost

    def __init__(self, redis, block_s: float = 1.0):
        self.r = redis
        self.block_s = block_s  # each blocking XREAD waits at most this long (below the socket timeout)
        self.reply_key = keys.replies(secrets.token_hex(8))
        self._waiters: dict[str, asyncio.Queue] = {}
        self._reader: asyncio.Task | None = None
        self._closing = False
        self._last = "0-0"
        self._link = Link(redis, retry_s=0)  # the reader's own connection; its loop below rides out restarts

    async def submit(self, request: GenerationRequest) -> None:
        self._waiters.setdefault(request.request_id, asyncio.Queue())
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_replies(), name="redis-replies")
        try:  # batched with the other commands of this process (model.redis_io.AutoPipeline)
            await auto_pipeline(self.r).call("XADD", keys.REQUESTS_STREAM, "*", STREAM_FIELD,
                                             request.model_dump_json(), REPLY_TO_FIELD, self.reply_key,
                                             RID_FIELD, request.request_id)
        except BaseException:
            self._waiters.pop(request.request_id, None)
            raise

    async def events(self, request_id: str, timeout_s: float) -> AsyncIterator[StreamChunk | GenerationResult]:
        """Chunks of the first worker attempt, then the result; TimeoutError past `timeout_s` (nothing of this
        request is delivered after that: a late result is dropped)."""
        deadline = time.monotonic() + timeout_s
        box = self._waiters.get(request_id)
        source = self._from_box(box, deadline) if box is not None else self._from_outbox(request_id, deadline)
        attempt = None
        try:
            async for item in source:
                if item is None:  # nothing yet
                    if time.monotonic() >= deadline:
                        raise TimeoutError(request_id)
                    if box is not None and (found := await self._published(request_id)) is not None:
                        yield found  # its replies entry was lost (e.g. Redis restarted without AOF)
                        return
                    continue
                who, event = item
                if isinstance(event, GenerationResult):
                    yield event
                    return
                attempt = attempt or who
                if who == attempt:
                    yield event
        finally:
            self._waiters.pop(request_id, None)
            await source.aclose()

    async def _from_box(self, box: asyncio.Queue, deadline: float):
        """(attempt, event) pairs routed here by the reader; None when nothing came before the deadline."""
        while True:
            item = None
            try:
                async with asyncio.timeout(max(0.0, min(self.RECHECK_S, deadline - time.monotonic()))):
                    item = await box.get()
            except TimeoutError:
                pass
            yield item

    async def _published(self, request_id: str) -> GenerationResult | None:
        try:
            raw = await self.r.get(keys.result(request_id))
        except _UNAVAILABLE:
            return None
        return GenerationResult.model_validate_json(raw) if raw else None

    async def _read_replies(self) -> None:
        """The one reader of this process's replies stream: routes entries to the waiting conversations."""
        pause = 0.05
        while not self._closing:
            try:
                [got] = await self._link.execute([("XREAD", "COUNT", 512, "BLOCK", _ms(self.block_s), "STREAMS",
                                                   self.reply_key, self._last)], block_s=self.block_s)
                if isinstance(got, Exception):
                    raise got
                got = entries(got)
            except _UNAVAILABLE:
                log.warning("Redis unavailable while awaiting results; retrying")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            except Exception:  # never a dead reader: every conversation of this process waits on it
                log.exception("reading the replies stream failed")
                await asyncio.sleep(1.0)
                continue
            pause = 0.05
            for entry_id, fields in got:
                self._last = entry_id
                try:
                    who, event = decode_outbox_entry(fields)
                except Exception:
                    log.warning("undecodable reply entry %s", entry_id)
                    continue
                box = self._waiters.get(event.request_id)
                if box is not None:
                    box.put_nowait((who, event))

    async def _from_outbox(self, request_id: str, deadline: float):
        """(attempt, event) pairs read straight from a request's outbox, resuming from the last id read after a
        reconnect; None after each wait with nothing new. Blocks at most until the deadline."""
        key, last, pause = keys.outbox(request_id), "0-0", 0.05
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                yield None
                continue
            try:
                got = await self.r.xread({key: last}, count=64, block=_ms(min(left, self.block_s)))
            except _UNAVAILABLE:
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, 1.0)
                continue
            if not got:
                yield None
            pause = 0.05
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    last = entry_id
                    yield decode_outbox_entry(fields)

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:  # it notices within block_s (cancelling a blocked Redis call is unsafe)
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), self.block_s + 1)
            except (TimeoutError, Exception):
                self._reader.cancel()
        await self._link.close()
        await close_auto_pipeline(self.r)
        await self.r.aclose()


def build_redis_stores(s) -> tuple[RedisHistoryStore, RedisStateStore, RedisRequestQueue]:
    """The three Redis stores on one client (from Settings: redis_url, redis_timeout_s, history_*)."""
    r = connect(s.redis_url, s.redis_timeout_s)
    block_s = max(0.05, min(1.0, s.redis_timeout_s / 2))
    return (RedisHistoryStore(r, s.history_max_turns, s.history_ttl_days * 86400), RedisStateStore(r),
            RedisRequestQueue(r, block_s))
