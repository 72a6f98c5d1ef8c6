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
"""

from __future__ import annotations

from model import keys
from model.schema import GenerationResult, StreamChunk

RESULT_TTL_S = 3600  # how long results and outboxes are kept (a request never waits longer than its deadline)
STREAM_FIELD = b"req"  # the field of a requests-stream entry holding the GenerationRequest JSON
REPLY_TO_FIELD = b"reply_to"  # optional field: the submitting process's replies stream (keys.replies)
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
