"""transformers' own continuous batching (paged KV cache, `init_continuous_batching`) behind the Engine interface.

Kept as a measured alternative to `model.slots.SlotEngine` (see benchmarks/RESULTS.md). One persistent manager
thread owns the model; `generate` submits requests with streaming on and waits for them, so concurrent callers share
steps. The sampling settings are the engine's (one generation config for the manager): a request's own sampling
parameters other than `max_new_tokens` are not applied here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from model.engine import DeltaCallback, Engine
from model.loading import LoadedModel
from model.schema import SCHEMA_VERSION, GenerationRequest, GenerationResult, SamplingParams, error_result
from model.slots import TextStream

log = logging.getLogger(__name__)


class ContinuousEngine(Engine):
    concurrent = True

    def __init__(self, loaded: LoadedModel, max_context_tokens: int | None = None, slots: int = 64,
                 sampling: SamplingParams | None = None, cb_options: dict | None = None):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        super().__init__(loaded, max_context_tokens)
        s = sampling or SamplingParams()
        kw = dict(max_new_tokens=s.max_new_tokens, eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id,
                  repetition_penalty=s.repetition_penalty)
        kw.update(do_sample=False) if s.greedy else kw.update(do_sample=True, temperature=s.temperature,
                                                               top_p=s.top_p, top_k=0)
        options = dict(max_requests_per_batch=slots, **(cb_options or {}))
        self.manager = self.model.init_continuous_batching(
            generation_config=GenerationConfig(**kw),
            continuous_batching_config=ContinuousBatchingConfig(**options))
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple] = {}
        self._router: threading.Thread | None = None

    @property
    def description(self) -> dict:
        return {**super().description, "mode": "continuous"}

    def warmup(self) -> None:
        self.manager.warmup()
        self._start()

    def close(self) -> None:
        if self.manager.is_running():
            self.manager.stop(block=True, timeout=10)

    def _start(self) -> None:
        with self._lock:
            if not self.manager.is_running():
                self.manager.start()
            if self._router is None or not self._router.is_alive():
                self._router = threading.Thread(target=self._route, name="cb-router", daemon=True)
                self._router.start()

    def _route(self) -> None:
        """Move the manager's outputs to the waiting requests, streaming text deltas as tokens arrive."""
        while self.manager.is_running():
            out = self.manager.get_result(timeout=0.1)
            if out is None:
                continue
            with self._lock:
                entry = self._waiting.get(out.request_id)
            if entry is None:
                continue
            state, on_delta, stream = entry
            tokens = [t for t in out.generated_tokens if t not in self.eos_ids]
            if tokens and state["first"] is None:
                state["first"] = time.perf_counter()
            if stream is not None and tokens:
                delta = stream.push(tokens)
                if delta:
                    on_delta(out.request_id, delta)
            if out.is_finished():
                state["out"] = out
                state["done"].set()

    def generate(self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
                 ) -> list[GenerationResult]:
        self._start()
        results: dict[str, GenerationResult] = {}
        states = {}
        for r in requests:
            if r.schema_version != SCHEMA_VERSION:
                results[r.request_id] = error_result(r.request_id, "schema_version")
                continue
            ids = self.tokenizer(self.prompt_for(r), add_special_tokens=False)["input_ids"]
            st = {"done": threading.Event(), "first": None, "out": None, "t0": time.perf_counter(), "n": len(ids)}
            stream = TextStream(self.tokenizer) if (on_delta is not None and r.stream) else None
            with self._lock:
                self._waiting[r.request_id] = (st, on_delta, stream)
            states[r.request_id] = st
            self.manager.add_request(ids, request_id=r.request_id, max_new_tokens=r.sampling.max_new_tokens,
                                     streaming=stream is not None, eos_token_id=sorted(self.eos_ids))
        for rid, st in states.items():
            st["done"].wait()
            with self._lock:
                self._waiting.pop(rid, None)
            out = st["out"]
            if out.error is not None:
                results[rid] = error_result(rid, "generation_failed")
                continue
            gen = list(out.generated_tokens)
            stopped = bool(gen) and gen[-1] in self.eos_ids
            tokens = [t for t in gen if t not in self.eos_ids]
            end = time.perf_counter()
            results[rid] = GenerationResult(
                request_id=rid, text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                finish_reason="stop" if stopped else "length", prompt_tokens=st["n"], completion_tokens=len(tokens),
                first_token_seconds=(st["first"] - st["t0"]) if st["first"] else None,
                generation_seconds=end - st["t0"])
        return [results[r.request_id] for r in requests]
