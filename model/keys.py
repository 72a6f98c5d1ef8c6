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
