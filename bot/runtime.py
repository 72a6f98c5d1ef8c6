"""Wiring in one place: settings -> engine spec, stores, queue, manager. Entry points call these."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.manager import ConversationManager, CrisisAlert, ManagerConfig
from bot.safety import Guard
from bot.settings import Settings
from bot.stores import HistoryStore, RequestQueue, StateStore
from model.loading import ModelSpec

log = logging.getLogger(__name__)


def model_spec(s: Settings) -> ModelSpec:
    return ModelSpec(base=s.base_model, adapter=s.adapter, load_in_4bit=s.load_in_4bit,
                     merge_adapter=s.merge_adapter, device=s.device, dtype=s.dtype, cache_dir=s.model_cache_dir)


def load_engine(s: Settings):
    """The engine the worker (or the in-process queue) generates with: local weights, or an OpenAI-compatible
    server (COUNSEL_ENGINE=openai: vLLM/TGI/SGLang serving the same base model and adapter)."""
    if s.engine == "openai":
        from model.openai_engine import OpenAIEngine

        key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
        return OpenAIEngine.from_spec(model_spec(s), s.openai_base_url, s.openai_model, key,
                                      timeout_s=s.openai_timeout_s, concurrency=s.openai_concurrency,
                                      max_context_tokens=s.max_context_tokens)
    from transformers.utils import logging as hf_logging

    from model.serving import build_engine

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter scripted stderr
    return build_engine(model_spec(s), s.engine_mode, s.max_context_tokens, s.engine_slots,
                        kv_cache_dtype=s.kv_cache_dtype, mixed_steps=s.mixed_steps)


@dataclass
class Runtime:
    manager: ConversationManager
    history: HistoryStore
    state: StateStore
    queue: RequestQueue
    engine: object | None = None  # the in-process engine, when there is no Redis

    async def close(self) -> None:
        await self.queue.close()


def build_runtime(s: Settings, on_crisis: CrisisAlert | None = None, engine=None) -> Runtime:
    """Redis stores and the Redis queue when COUNSEL_REDIS_URL is set; otherwise in-process stores and engine."""
    if s.redis_url:
        from bot.stores.redis_stores import build_redis_stores  # noqa: PLC0415 (only with Redis)

        history, state, queue = build_redis_stores(s)
    else:
        from bot.stores.local_queue import LocalQueue
        from bot.stores.memory import MemoryHistoryStore, MemoryStateStore

        engine = engine or load_engine(s)
        history = MemoryHistoryStore(s.history_max_turns, s.history_ttl_days * 86400)
        state = MemoryStateStore()
        queue = LocalQueue(engine, Guard(s.region), s.worker_batch_size, s.worker_batch_wait_ms)
        from bot.ops import watch_queue_depth

        watch_queue_depth(queue.depth)
    from bot.safety import embed  # noqa: PLC0415

    embed.configure(s.safety_embedding, warm=True)
    manager = ConversationManager(history, state, queue, ManagerConfig.from_settings(s), on_crisis)
    return Runtime(manager, history, state, queue, engine)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Text or JSON lines (COUNSEL_LOG_FORMAT); see bot/logs.py."""
    from bot.logs import setup_logging as _setup

    _setup(level, fmt)
