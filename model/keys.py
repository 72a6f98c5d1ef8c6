"""Every Redis key and channel name, in one place (bot and worker both import it).

Conversation keys are scoped per platform+user so `/forget` can find and erase all of them.
"""

from __future__ import annotations

PREFIX = "counsel"

# --- generation queue (bot -> worker) ---------------------------------------------------------------------------
REQUESTS_STREAM = f"{PREFIX}:requests"  # XADD by the manager, XREADGROUP by workers
WORKER_GROUP = "workers"

# --- model adapter rollout (training/retrain -> workers) ----------------------------------------------------------
ADAPTER_CURRENT = f"{PREFIX}:adapter:current"  # string: path of the adapter in service
ADAPTER_RELOAD_CHANNEL = f"{PREFIX}:adapter:reload"  # PUBLISH the new path; workers reload between batches

# --- per-request output (worker -> the manager awaiting it) --------------------------------------------------------
def outbox(request_id: str) -> str:
    """Stream of a request's chunks then its result (XADD by the worker, XREAD from the last id by the reader)."""
    return f"{PREFIX}:out:{request_id}"


def result(request_id: str) -> str:
    """The result JSON, SET NX: the first worker to publish wins, so a request is answered once."""
    return f"{PREFIX}:result:{request_id}"


def attempts(request_id: str) -> str:
    """INCR per delivery to a worker: a request that keeps killing workers gets an error result."""
    return f"{PREFIX}:attempts:{request_id}"


def replies(process_token: str) -> str:
    """Stream of one bot process: workers copy its requests' chunks and results here (the `reply_to` of a
    request), so the process waits on one blocking XREAD for all its conversations."""
    return f"{PREFIX}:replies:{process_token}"


WORKERS = f"{PREFIX}:workers"  # set of worker names (members may be stale: check their heartbeat key)


def worker_heartbeat(name: str) -> str:
    """JSON status of a live worker, with a TTL (gone = the worker is dead or stopped)."""
    return f"{PREFIX}:worker:{name}"


# --- conversations and per-user state (the manager's stores) -------------------------------------------------------
def user_key_of(conversation: str) -> str:
    """`platform:user` of a conversation key `platform:user[:t:thread]` (see bot.types.IncomingMessage)."""
    return conversation.split(":t:", 1)[0]


def history(conversation: str) -> str:
    return f"{PREFIX}:hist:{conversation}"  # list of Turn JSON, capped, with a TTL


def user_conversations(user_key: str) -> str:
    return f"{PREFIX}:user:{user_key}:convs"  # set of the user's conversation keys (for /forget)


def user_field(user_key: str, name: str) -> str:
    return f"{PREFIX}:user:{user_key}:f:{name}"  # string, optional TTL


def user_fields(user_key: str) -> str:
    return f"{PREFIX}:user:{user_key}:fields"  # set of the user's field names (for /forget)


def claim(key: str) -> str:
    return f"{PREFIX}:claim:{key}"  # SET NX PX: dedupe of redeliveries


def rate(key: str) -> str:
    return f"{PREFIX}:rate:{key}"  # sorted set of hit times (sliding window)


def lock_queue(conversation: str) -> str:
    return f"{PREFIX}:lock:{conversation}:q"  # list of tokens: the head holds the lock, the rest wait in order


def lock_alive(conversation: str) -> str:
    return f"{PREFIX}:lock:{conversation}:alive"  # sorted set token -> lease expiry (ms), for dead holders


def history_append_once(append_id: str) -> str:
    return f"{PREFIX}:hist-op:{append_id}"  # SET NX marker (10 min): a retried history append applies once
