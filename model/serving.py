"""Which engine serves: `plain` (transformers `generate`, the reference), `static` (continuous batching on a static
slot cache with CUDA-graph decoding, `model.slots`), `continuous` (transformers' paged continuous batching,
`model.cb_engine`), or `auto` (static on a CUDA GPU, plain on CPU)."""

from __future__ import annotations

import logging
from typing import Literal

from model.loading import LoadedModel, ModelSpec, load

log = logging.getLogger(__name__)

EngineMode = Literal["auto", "plain", "static", "continuous"]
MODES = ("auto", "plain", "static", "continuous")
# With no explicit context budget the slot cache holds this many tokens per conversation (prompt + reply);
# the model's own 4,096 for Llama 2 would need 2 GB of KV cache per slot.
DEFAULT_SLOT_CONTEXT = 2048


def resolve_mode(mode: str, device: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown engine mode {mode!r}; one of {', '.join(MODES)}")
    if mode == "auto":
        return "static" if device.startswith("cuda") else "plain"
    return mode


def engine_for(loaded: LoadedModel, mode: str = "auto", max_context_tokens: int | None = None, slots: int = 64,
               warmup: bool = False, kv_cache_dtype: str = "auto", mixed_steps: bool = True):
    """An engine of the requested mode over an already loaded model (warmed up when asked: worker start)."""
    from model.engine import Engine

    mode = resolve_mode(mode, loaded.device)
    if mode == "plain":
        engine = Engine(loaded, max_context_tokens)
    elif mode == "static":
        from model.slots import SlotEngine

        ctx = max_context_tokens or min(loaded.max_context, DEFAULT_SLOT_CONTEXT)
        engine = SlotEngine(loaded, ctx, slots=slots, kv_cache_dtype=kv_cache_dtype,
                            mixed=None if mixed_steps else False)  # None: on where the GPU kernels serve
    else:
        from model.cb_engine import ContinuousEngine

        engine = ContinuousEngine(loaded, max_context_tokens, slots=slots)
    if warmup and hasattr(engine, "warmup"):
        engine.warmup()
    log.info("engine mode=%s %s", mode, engine.description)
    return engine


def build_engine(spec: ModelSpec, mode: str = "auto", max_context_tokens: int | None = None, slots: int = 64,
                 warmup: bool = True, kv_cache_dtype: str = "auto", mixed_steps: bool = True):
    return engine_for(load(spec), mode, max_context_tokens, slots, warmup, kv_cache_dtype, mixed_steps)
