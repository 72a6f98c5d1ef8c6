"""The Redis turn gate: a message's pre-model checks in one script, its stored turn in another.

`admit` runs ADMIT: the dedupe claim, the rate limit and a place in the conversation's FIFO lock, in one atomic
script (one round trip, EVALSHA through the process's AutoPipeline, model/redis_io.py), and when the conversation is
free, the turn's context as well: first-contact mark, careful mode, history. So a message's place in its
conversation is fixed by the same atomic step that accepted it: two messages of one person are answered in the
order Redis admitted them, whichever processes handle them. Within a process, scripts reach Redis in the order they
were issued (the AutoPipeline sends batches in order, one at a time), and the manager issues them in arrival order.

`finish` runs FINISH: the history append (once, even when retried) and the lock release, in one script; it returns
the next waiting token, and a waiter of this process is woken at once (others poll, backing off to 50 ms).

The lock is the same structure as `RedisStateStore.lock` (a list of tokens whose head holds it, leases in a sorted
set), so both interoperate. Every key name comes from `model.keys`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Literal

from pydantic import TypeAdapter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.stores import TurnContext
from model import keys
from model.redis_io import Lua, auto_pipeline
from model.schema import Turn

log = logging.getLogger(__name__)

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_TURNS = TypeAdapter(list[Turn])

# Shared by ADMIT and ACQUIRE. The fair lock: `queue` lists tokens (the head holds the lock), `alive` maps a token
# to its lease expiry (ms); heads whose lease ran out (a process that died holding or waiting) are dropped.
# `context` is read when a token gets the lock: the first-contact mark is set to the token (so a retry of the same
# step still reports the first contact), careful mode, and the newest `turns` history entries.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function acquire(queue, alive, token, wait_ms, hold_ms, now)
  if not redis.call('LPOS', queue, token) then redis.call('RPUSH', queue, token) end
  local got = 0
  while true do
    local head = redis.call('LINDEX', queue, 0)
    if head == token then got = 1 break end
    local lease = redis.call('ZSCORE', alive, head)
    if lease and tonumber(lease) > now then break end
    redis.call('LPOP', queue)
    redis.call('ZREM', alive, head)
  end
  local keep = math.max(wait_ms, hold_ms)
  redis.call('ZADD', alive, now + (got == 1 and hold_ms or wait_ms), token)
  redis.call('PEXPIRE', queue, keep)
  redis.call('PEXPIRE', alive, keep)
  return got
end
local function context(seen, fields, careful, hist, token, turns)
  local first = 0
  local mark = redis.call('GET', seen)
  if not mark then
    redis.call('SET', seen, token)
    redis.call('SADD', fields, 'seen')
    first = 1
  elseif mark == token then
    first = 1
  end
  local c = redis.call('GET', careful) and 1 or 0
  return {1, first, c, redis.call('LRANGE', hist, -turns, -1)}
end
"""

# KEYS: 1 claim, 2 rate zset, 3 lock queue, 4 lock leases, 5 seen field, 6 the user's field index, 7 careful field,
# 8 history. ARGV: 1 token, 2 '1' = claim KEYS[1], 3 claim ttl ms, 4 rate limit, 5 rate window ms, 6 waiting lease
# ms, 7 holding lease ms, 8 history turns.
# Returns {0} duplicate, {2} rate limited, {1, 0} admitted and waiting, {1, 1, first, careful, history} admitted
# and holding the conversation. Every step is keyed by the token, so a retried call (reply lost) is a no-op.
ADMIT = Lua(_LIB + """
local token = ARGV[1]
if ARGV[2] == '1' and not redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[3]) then
  if redis.call('GET', KEYS[1]) ~= token then return {0} end
end
local now = now_ms()
if not redis.call('ZSCORE', KEYS[2], token) then
  local window = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {2} end
  redis.call('ZADD', KEYS[2], now, token)
  redis.call('PEXPIRE', KEYS[2], window)
end
if acquire(KEYS[3], KEYS[4], token, tonumber(ARGV[6]), tonumber(ARGV[7]), now) == 0 then return {1, 0} end
local ctx = context(KEYS[5], KEYS[6], KEYS[7], KEYS[8], token, tonumber(ARGV[8]))
return {1, 1, ctx[2], ctx[3], ctx[4]}
""")

# KEYS: 1 lock queue, 2 lock leases, 3 seen, 4 field index, 5 careful, 6 history. ARGV: token, waiting lease ms,
# holding lease ms, history turns. Returns {0} still waiting (lease refreshed), or {1, first, careful, history}.
ACQUIRE = Lua(_LIB + """
if acquire(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms()) == 0 then return {0} end
return context(KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], tonumber(ARGV[4]))
""")

# KEYS: 1 history, 2 the user's conversation index, 3 once-marker of this append, 4 lock queue, 5 lock leases.
# ARGV: 1 max turns, 2 history ttl ms, 3 conversation key, 4 token, 5.. turns (JSON).
# Appends (once), releases the lock, and returns the next waiting token (or nil).
FINISH = Lua("""
if redis.call('SET', KEYS[3], 1, 'NX', 'PX', 600000) then
  for i = 5, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('LREM', KEYS[4], 1, ARGV[4])
redis.call('ZREM', KEYS[5], ARGV[4])
return redis.call('LINDEX', KEYS[4], 0)
""")

# KEYS: 1 lock queue, 2 lock leases. ARGV: token. Returns the next waiting token (or nil).
RELEASE = Lua("""
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('LINDEX', KEYS[1], 0)
""")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _context(first, careful, history: list[bytes]) -> TurnContext:
    turns = _TURNS.validate_json(b"[" + b",".join(history) + b"]") if history else []
    return TurnContext(first_contact=bool(first), careful=bool(careful), history=turns)


class RedisAdmission:
    def __init__(self, gate: RedisTurnGate, outcome: Literal["admitted", "duplicate", "rate_limited"],
                 token: str = "", user_key: str = "", conversation: str = "", hold_s: float = 0.0,
                 history_turns: int = 0, context: TurnContext | None = None):
        self.gate, self.outcome, self.token = gate, outcome, token
        self.user_key, self.conversation, self.hold_s, self.history_turns = user_key, conversation, hold_s, \
            history_turns
        self.context = context
        self._open = outcome == "admitted"  # holds or waits for a place in the lock queue

    def _lock_keys(self) -> list[str]:
        return [keys.lock_queue(self.conversation), keys.lock_alive(self.conversation)]

    async def enter(self, timeout_s: float) -> TurnContext:
        if self.context is not None:
            return self.context
        g = self.gate
        ks = [*self._lock_keys(), keys.user_field(self.user_key, "seen"), keys.user_fields(self.user_key),
              keys.user_field(self.user_key, "careful"), keys.history(self.conversation)]
        args = [self.token, _ms(g.WAIT_LEASE_S), _ms(self.hold_s), self.history_turns]
        deadline = time.monotonic() + timeout_s
        pause = g.POLL_MIN_S
        wake = g._waiting[self.token] = asyncio.Event()
        try:
            while True:
                wake.clear()
                got = await g.pipe.script(ACQUIRE, ks, args)
                if got[0]:
                    self.context = _context(*got[1:])
                    return self.context
                left = deadline - time.monotonic()
                if left <= 0:
                    await self.release()  # leaves the queue: the next message does not wait for this one
                    raise TimeoutError(f"a conversation's turn did not come within {timeout_s:.0f}s")
                try:  # woken at once when a turn of this process ends; other processes' turns: polled
                    async with asyncio.timeout(min(pause, left)):
                        await wake.wait()
                except TimeoutError:
                    pass
                pause = min(pause * 2, g.POLL_MAX_S)
        finally:
            g._waiting.pop(self.token, None)

    async def finish(self, *turns: Turn) -> None:
        h = self.gate.history
        ks = [keys.history(self.conversation), keys.user_conversations(self.user_key),
              keys.history_append_once(self.token), *self._lock_keys()]
        args = [h.max_turns, _ms(h.ttl_s), self.conversation, self.token, *[t.model_dump_json() for t in turns]]
        self._open = False
        try:
            self.gate.wake(await self.gate.pipe.script(FINISH, ks, args))
        except BaseException:
            self._open = True  # not stored: release() still frees the conversation
            raise

    async def release(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self.gate.wake(await asyncio.shield(self.gate.pipe.script(RELEASE, self._lock_keys(), [self.token])))
        except _UNAVAILABLE:  # the lease frees it
            log.warning("could not release a conversation's turn; its lease will")


class RedisTurnGate:
    WAIT_LEASE_S = 10.0  # a waiter that stops polling for this long (a dead process) loses its place
    POLL_MIN_S, POLL_MAX_S = 0.002, 0.05

    def __init__(self, redis, history):
        self.r, self.history = redis, history  # history: the RedisHistoryStore (its cap and expiry)
        self.pipe = auto_pipeline(redis)
        self._waiting: dict[str, asyncio.Event] = {}  # token -> wake-up of a turn of this process waiting

    def wake(self, token: bytes | None) -> None:
        if token is not None and (event := self._waiting.get(token.decode())) is not None:
            event.set()

    async def admit(self, *, dedupe_key: str | None, dedupe_ttl_s: float, rate_key: str, rate_limit: int,
                    rate_window_s: float, user_key: str, conversation: str, hold_s: float,
                    history_turns: int) -> RedisAdmission:
        token = secrets.token_hex(8)
        ks = [keys.claim(dedupe_key or ""), keys.rate(rate_key), keys.lock_queue(conversation),
              keys.lock_alive(conversation), keys.user_field(user_key, "seen"), keys.user_fields(user_key),
              keys.user_field(user_key, "careful"), keys.history(conversation)]
        args = [token, "1" if dedupe_key else "0", _ms(dedupe_ttl_s), rate_limit, _ms(rate_window_s),
                _ms(self.WAIT_LEASE_S), _ms(hold_s), history_turns]
        got = await self.pipe.script(ADMIT, ks, args)
        if got[0] == 0:
            return RedisAdmission(self, "duplicate")
        if got[0] == 2:
            return RedisAdmission(self, "rate_limited")
        context = _context(*got[2:]) if got[1] else None
        return RedisAdmission(self, "admitted", token, user_key, conversation, hold_s, history_turns, context)
