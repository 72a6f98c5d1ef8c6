"""Pure generation: `Engine.generate(list[GenerationRequest]) -> list[GenerationResult]`. No Redis, no bot.

Batched with left padding (identical to unbatched output), stops at EOS or the token limit, streams text deltas
through a callback while generation continues, and reports token counts and timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Any

from model.loading import LoadedModel, ModelSpec, load
from model.prompt import render_request
from model.schema import SCHEMA_VERSION, GenerationRequest, GenerationResult, SamplingParams, error_result

log = logging.getLogger(__name__)

# on_delta(request_id, text_delta): called from the generating thread as text arrives.
DeltaCallback = Callable[[str, str], None]


class _BatchStreamer:
    """A transformers streamer for a whole batch: decodes each row incrementally and reports new text."""

    def __init__(self, tokenizer: Any, request_ids: Sequence[str], eos_ids: set[int], on_delta: DeltaCallback | None):
        self.tok, self.ids, self.eos, self.on_delta = tokenizer, list(request_ids), eos_ids, on_delta
        self.tokens: list[list[int]] = [[] for _ in request_ids]
        self.sent: list[str] = ["" for _ in request_ids]
        self.done = [False] * len(request_ids)
        self.first_token_at: list[float | None] = [None] * len(request_ids)
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first passes the prompt ids
            self._prompt_seen = True
            return
        rows = value.reshape(len(self.ids), -1)[:, -1].tolist()
        now = time.perf_counter()
        for i, tid in enumerate(rows):
            if self.done[i]:
                continue
            if tid in self.eos:
                self.done[i] = True
                continue
            self.tokens[i].append(tid)
            if self.first_token_at[i] is None:
                self.first_token_at[i] = now
            if self.on_delta is None:
                continue
            text = self.tok.decode(self.tokens[i], skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
                continue
            if not text.startswith(self.sent[i]) or len(text) == len(self.sent[i]):
                continue
            delta = text[len(self.sent[i]):]
            if not self.sent[i].strip():  # the reply's leading white space is not shown
                delta = delta.lstrip()
            self.sent[i] = text
            if delta:
                self.on_delta(self.ids[i], delta)

    def end(self) -> None:
        pass


class Engine:
    """Loads the model once; generates for batches of requests."""

    def __init__(self, loaded: LoadedModel, max_context_tokens: int | None = None):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.max_context = min(max_context_tokens or loaded.max_context, loaded.max_context)
        eos = self.model.generation_config.eos_token_id
        eos_list = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos_list if e is not None} | {int(self.tokenizer.eos_token_id)}
        self.pad_id = self.tokenizer.pad_token_id

    @classmethod
    def from_spec(cls, spec: ModelSpec, max_context_tokens: int | None = None) -> Engine:
        return cls(load(spec), max_context_tokens)

    @property
    def description(self) -> dict:
        lm = self.loaded
        return {"base": lm.base, "adapter": lm.adapter, "merged": lm.merged, "device": lm.device,
                "dtype": str(lm.dtype).replace("torch.", ""), "max_context": self.max_context}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_for(self, req: GenerationRequest) -> str:
        return render_request(self.tokenizer, req, self.max_context, self.count_tokens)

    def generate(self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
                 ) -> list[GenerationResult]:
        """One result per request, in order. A bad request gets an error result; it never raises for one."""
        results: dict[str, GenerationResult] = {}
        valid: list[GenerationRequest] = []
        for r in requests:
            if r.schema_version != SCHEMA_VERSION:
                results[r.request_id] = error_result(r.request_id, "schema_version")
            else:
                valid.append(r)

        def key(r: GenerationRequest):
            s = r.sampling
            return (s.temperature, s.top_p, s.repetition_penalty, s.max_new_tokens, s.seed)

        for _, group in groupby(sorted(valid, key=key), key=key):
            group = list(group)
            try:
                for res in self._generate_group(group, on_delta):
                    results[res.request_id] = res
            except Exception:  # one bad batch: retry one by one so a single bad request cannot sink the others
                log.exception("batch of %d failed; retrying one by one", len(group))
                for r in group:
                    try:
                        results[r.request_id] = self._generate_group([r], on_delta)[0]
                    except Exception as e:
                        log.exception("request %s failed", r.request_id)
                        results[r.request_id] = error_result(r.request_id, type(e).__name__)
        return [results[r.request_id] for r in requests]

    def _generate_group(self, group: list[GenerationRequest], on_delta: DeltaCallback | None
                        ) -> list[GenerationResult]:
        import torch

        s: SamplingParams = group[0].sampling
        prompts = [self.prompt_for(r) for r in group]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.loaded.device) for k, v in enc.items()}
        streamer = _BatchStreamer(self.tokenizer, [r.request_id for r in group], self.eos_ids, on_delta)
        kw: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.pad_id,
                                  eos_token_id=sorted(self.eos_ids), streamer=streamer,
                                  repetition_penalty=s.repetition_penalty)
        if s.greedy:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=None)
        if s.seed is not None:
            torch.manual_seed(s.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, **kw)
        elapsed = time.perf_counter() - t0
        width = enc["input_ids"].shape[1]
        results = []
        for i, r in enumerate(group):
            gen = out[i, width:].tolist()
            n, stopped = 0, False
            for tid in gen:
                if tid in self.eos_ids:
                    stopped = True
                    break
                n += 1
            text = self.tokenizer.decode(gen[:n], skip_special_tokens=True).strip()
            ft = streamer.first_token_at[i]
            results.append(GenerationResult(
                request_id=r.request_id, text=text, finish_reason="stop" if stopped else "length",
                prompt_tokens=int(enc["attention_mask"][i].sum()), completion_tokens=n,
                first_token_seconds=(ft - t0) if ft is not None else None, generation_seconds=elapsed))
        return results
