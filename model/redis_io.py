"""Redis plumbing shared by the manager's queue (bot/) and the inference worker (model/).

- `connect()`: one client configuration for every process: connect and socket timeouts, and retries with
  exponential backoff on connection errors, so a restarting Redis is ridden out and a hung one fails in bounded time.
- The per-request outbox: a small stream per request id holding streamed chunks and then the result. The worker
  publishes the result with SET NX on `keys.result(id)` first (the first publisher wins: a request is answered
  once even when two workers processed it), then appends it to the outbox. A reader XREADs the outbox from the
  last id it saw, so it resumes exactly where it was after a reconnect. Chunks carry an attempt id: a reader sticks
  to the first attempt it sees and ignores chunks of a second worker that took over a dead worker's request.
- The replies stream of a bot process (`keys.replies`): when a request names one (`reply_to`), the worker copies
  its chunks and result there too, so a process with a thousand conversations waiting blocks on one XREAD (and one
  connection) instead of a thousand.
- `Link`: one dedicated connection (outside the client's pool) for a hot path: a batch of commands is one write
  and its replies are read in order, without the pool's per-command checks (half the CPU of a pooled call).
- `AutoPipeline`: commands that concurrent tasks issue in the same event-loop turn go to Redis as one pipeline
  (one write, one round trip) on a Link, in the order they were issued, one batch at a time: the hot path of a
  busy bot process costs a fraction of a round trip per command, and a process's commands reach Redis in issue
  order.
- `Lua`: a script run by EVALSHA, falling back to EVAL when Redis lost its script cache (a restart).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Sequence

from model import keys
from model.schema import GenerationResult, StreamChunk

log = logging.getLogger(__name__)

RESULT_TTL_S = 3600  # how long results and outboxes are kept (a request never waits longer than its deadline)
STREAM_FIELD = b"req"  # the field of a requests-stream entry holding the GenerationRequest JSON
REPLY_TO_FIELD = b"reply_to"  # optional field: the submitting process's replies stream (keys.replies)
RID_FIELD = b"rid"  # optional field: the request id, so a worker's TAKE script can check it without parsing JSON
REPLIES_MAXLEN = 10_000  # a replies stream keeps about this many entries (its reader is never far behind)

# KEYS[1] result key, KEYS[2] outbox, KEYS[3] (optional) replies stream of the waiting process;
# ARGV[1] result JSON, ARGV[2] ttl ms, ARGV[3] attempt id, ARGV[4] replies maxlen.
PUBLISH_RESULT_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[2], '*', 'k', 'r', 'a', ARGV[3], 'd', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  if KEYS[3] then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'k', 'r', 'a', ARGV[3], 'd', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
  return 1
end
return 0
"""

# Every result of a worker's batch published once, and the batch's entries acknowledged and deleted, atomically.
# KEYS[1] the requests stream; then 3 keys per result: result key, outbox, replies stream (or the outbox again when
# the request names none). ARGV[1] group, ARGV[2] ttl ms, ARGV[3] replies maxlen, ARGV[4] number of results n;
# then per result: result JSON, attempt id, '1' if it has a replies stream; then the entry ids to acknowledge.
# Returns how many results were published (the others had a result already).
PUBLISH_BATCH_LUA = """
local n = tonumber(ARGV[4])
local published = 0
for i = 1, n do
  local res, outbox, replies = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local data, attempt, has_replies = ARGV[3 * i + 2], ARGV[3 * i + 3], ARGV[3 * i + 4]
  if redis.call('SET', res, data, 'NX', 'PX', ARGV[2]) then
    redis.call('XADD', outbox, '*', 'k', 'r', 'a', attempt, 'd', data)
    redis.call('PEXPIRE', outbox, ARGV[2])
    if has_replies == '1' then
      redis.call('XADD', replies, 'MAXLEN', '~', ARGV[3], '*', 'k', 'r', 'a', attempt, 'd', data)
      redis.call('PEXPIRE', replies, ARGV[2])
    end
    published = published + 1
  end
end
if #ARGV > 3 * n + 4 then
  local ids = {unpack(ARGV, 3 * n + 5)}
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return published
"""


# A worker's next batch taken in the same round trip as the previous batch's publication, when requests are
# waiting (no blocking in a script): XREADGROUP without BLOCK, and for each entry with a `rid` field the checks the
# worker makes before generating (result exists? INCR delivery attempts). KEYS[1] the requests stream. ARGV[1]
# group, ARGV[2] consumer, ARGV[3] count, ARGV[4] attempts ttl s, ARGV[5] prefix of result keys, ARGV[6] prefix of
# attempts keys (both from model.keys). Returns {id, fields, result exists (-1 = not checked), attempts} per entry.
TAKE_LUA = """
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
local out = {}
if not got then return out end
for _, e in ipairs(got[1][2]) do
  local fields = e[2]
  if fields then
    local rid, done, n = nil, -1, -1
    for i = 1, #fields, 2 do if fields[i] == 'rid' then rid = fields[i + 1] end end
    if rid then
      done = redis.call('EXISTS', ARGV[5] .. rid)
      n = redis.call('INCR', ARGV[6] .. rid)
      redis.call('EXPIRE', ARGV[6] .. rid, ARGV[4])
    end
    table.insert(out, {e[1], fields, done, n})
  end
end
return out
"""


class Lua:
    """A Lua script called by EVALSHA (its text is sent once per Redis start, not with every call)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys_: Sequence, args: Sequence) -> tuple:
        return ("EVALSHA", self.sha, len(keys_), *keys_, *args)

    def fallback(self, keys_: Sequence, args: Sequence) -> tuple:
        return ("EVAL", self.source, len(keys_), *keys_, *args)

    async def __call__(self, redis, keys_: Sequence = (), args: Sequence = ()):
        from redis.exceptions import NoScriptError

        try:
            return await redis.execute_command(*self.command(keys_, args))
        except NoScriptError:  # Redis restarted: EVAL loads it again
            return await redis.execute_command(*self.fallback(keys_, args))


class Link:
    """One dedicated connection of a client, for a hot path: `execute(commands)` sends them in one write and
    returns their raw replies in order (a command's error is returned in its place, not raised).

    Raw replies: no client-side reply parsing (XREAD gives nested lists, see `entries()`). Connection errors and
    timeouts are retried with backoff (reconnect, resend the batch) for about `retry_s`, then raised: what is sent
    must be safe to apply twice, as with the client's own retries. Each batch has a deadline (`timeout_s`, plus
    the block time of a blocking command) so a hung server fails it in bounded time.
    """

    def __init__(self, redis, timeout_s: float | None = None, retry_s: float = 2.5):
        self.r = redis
        kwargs = redis.connection_pool.connection_kwargs
        self.timeout_s = timeout_s or kwargs.get("socket_timeout") or 5.0
        self.retry_s = retry_s
        self._conn = None

    async def execute(self, commands: Sequence[tuple], block_s: float = 0.0) -> list:
        from redis.exceptions import ConnectionError, ResponseError, TimeoutError

        failures, give_up = 0, None
        while True:
            conn = self._conn
            if conn is None:
                conn = self._conn = self.r.connection_pool.make_connection()
                conn.socket_timeout = None  # the batch's deadline below bounds every read and write at once
            try:
                async with asyncio.timeout(self.timeout_s + block_s):
                    await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                    out = []
                    for _ in commands:
                        try:
                            out.append(await conn.read_response())
                        except ResponseError as e:
                            out.append(e)
                    return out
            except (ConnectionError, TimeoutError, OSError) as e:
                await self._drop()
                now = asyncio.get_running_loop().time()
                give_up = give_up or now + self.retry_s
                if now >= give_up:
                    raise ConnectionError(f"Redis unavailable: {e}") from e
                failures += 1
                await asyncio.sleep(min(0.5, 0.01 * 2 ** failures))
            except BaseException:  # cancelled or timed out mid-reply: the connection is out of step, drop it
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception:
                pass

    async def close(self) -> None:
        await self._drop()


def entries(reply) -> list[tuple[bytes, dict | None]]:
    """(entry id, fields) of a raw XREAD/XREADGROUP/XRANGE-style reply (streams flattened, in order)."""
    out = []
    for _stream, items in (reply.items() if isinstance(reply, dict) else reply or []):  # RESP3 map or RESP2 list
        for entry_id, flat in items:
            out.append((entry_id, dict(zip(flat[::2], flat[1::2])) if flat is not None else None))
    return out


class AutoPipeline:
    """Commands issued by concurrent tasks are sent in batches: everything queued while the previous batch was
    on the wire (or in the same event-loop turn) goes out as one pipeline, on one connection, in issue order.

    `call(*args)` and `script(lua, keys, args)` return the reply (or raise the command's error). Batches are sent
    one after the other, so commands reach Redis in the order they were issued in this process: two scripts
    issued in that order run in that order. Connection errors are retried with the client's backoff (the whole
    batch: every command sent through here must be safe to apply twice, as a retried command already is); a
    script Redis no longer knows (restart) is sent again with EVAL, in order, before anything after it is answered.
    """

    MAX_BATCH = 512

    def __init__(self, redis):
        self.r = redis
        self.link = Link(redis)
        self._queue: list[tuple[tuple, tuple | None, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    def call(self, *args, fallback: tuple | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((args, fallback, fut))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._send())
        return fut

    def script(self, lua: Lua, keys_: Sequence = (), args: Sequence = ()) -> asyncio.Future:
        return self.call(*lua.command(keys_, args), fallback=lua.fallback(keys_, args))

    async def _send(self) -> None:
        from redis.exceptions import NoScriptError

        while self._queue:
            batch, self._queue = self._queue[:self.MAX_BATCH], self._queue[self.MAX_BATCH:]
            try:
                replies = await self.link.execute([args for args, _, _ in batch])
                again = [i for i, rep in enumerate(replies) if isinstance(rep, NoScriptError) and batch[i][1]]
                if again:  # the script cache was lost (restart): EVAL those, still before the next batch
                    for i, rep in zip(again, await self.link.execute([batch[i][1] for i in again])):
                        replies[i] = rep
            except Exception as e:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            except BaseException as e:  # cancelled (loop closing): nobody will be answered
                for _, _, fut in batch + self._queue:
                    if not fut.done():
                        fut.cancel()
                self._queue = []
                raise e
            for (_, _, fut), rep in zip(batch, replies):
                if fut.done():  # the caller gave up (timeout, cancelled)
                    continue
                if isinstance(rep, Exception):
                    fut.set_exception(rep)
                else:
                    fut.set_result(rep)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.link.timeout_s)
            except Exception:
                self._task.cancel()
        await self.link.close()


_pipelines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def auto_pipeline(redis) -> AutoPipeline:
    """The one AutoPipeline of a client (the stores of a process share it, so their commands batch together)."""
    try:
        return _pipelines[redis]
    except KeyError:
        _pipelines[redis] = pipe = AutoPipeline(redis)
        return pipe


async def close_auto_pipeline(redis) -> None:
    """Close the client's AutoPipeline connection (if it has one); call before closing the client."""
    pipe = _pipelines.pop(redis, None)
    if pipe is not None:
        await pipe.close()


def connect(url: str, timeout_s: float = 5.0, retries: int = 6, max_connections: int = 1024):
    """A redis.asyncio client: every call has connect/socket timeouts and retries connection errors with backoff.

    Worst case a call fails after about (retries + 1) x timeout_s against a hung server; a restarting server
    (connection refused for a second or two) is ridden out by the ~2.5 s of backoff. The pool blocks (up to
    timeout_s) rather than failing when all `max_connections` are busy: each awaited reply holds one connection
    in a blocking XREAD.
    """
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s, retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries),
        retry_on_error=[ConnectionError, TimeoutError])
    return Redis.from_pool(pool)


def chunk_fields(chunk: StreamChunk, attempt: str) -> dict[str, str]:
    return {"k": "c", "a": attempt, "d": chunk.model_dump_json()}


def decode_outbox_entry(fields: dict[bytes, bytes]) -> tuple[str, StreamChunk | GenerationResult]:
    """(attempt id, chunk or result) of one outbox entry."""
    attempt = fields.get(b"a", b"").decode()
    data = fields[b"d"]
    if fields.get(b"k") == b"r":
        return attempt, GenerationResult.model_validate_json(data)
    return attempt, StreamChunk.model_validate_json(data)


async def publish_result(redis, result: GenerationResult, attempt: str, ttl_s: float = RESULT_TTL_S) -> bool:
    """Publish a request's result once: False when a result was already published (by anyone)."""
    rid = result.request_id
    n = await redis.eval(PUBLISH_RESULT_LUA, 2, keys.result(rid), keys.outbox(rid), result.model_dump_json(),
                         int(ttl_s * 1000), attempt, REPLIES_MAXLEN)
    return bool(n)
