"""Continuous batching over a static, slot-indexed KV cache, with the decode step replayed as a CUDA graph.

`SlotEngine` has the same `generate(requests, on_delta)` interface as the plain `Engine`, but every call only enqueues
its requests for one scheduler thread that owns the model:

- each conversation gets a *slot* (a row of a preallocated KV cache of `slots x max_len` positions);
- a new request is prefilled alone (the model's own forward, exactly as the plain path) and its KV copied into a free
  slot, so requests join between two decode steps instead of waiting for a batch to finish; while other
  conversations are decoding, arrivals are gathered for up to `admit_wait_s` (or until `admit_min_tokens` prompt
  tokens wait) and prefilled together in one packed forward, which costs the host far less than one forward each;
- one decode step advances every active slot by one token (positions differ per slot, a boolean mask hides the
  unused cache positions); a slot that stops (EOS or token limit) is freed at once for the next request;
- with mixed steps (GPU default when their Triton kernels pass their check; `mixed=True` on CPU), a request that
  arrives while others decode is not prefilled in a forward of its own: its prompt rides along with the decode steps
  in chunks (up to the largest of `chunk_buckets` tokens a step, several prompts per chunk), so the weights are read
  once for both and decoding never pauses for a prefill (`model.chunk_attention`); the step that takes a prompt's
  last chunk also samples its first token;
- on CUDA the decode step for each (batch bucket, cache-length bucket) is captured once as a CUDA graph and replayed,
  which removes the per-token Python and kernel-launch overhead of `generate` (~49 ms a step for a 7B model);
- sampling (repetition penalty, temperature, top-p, as transformers applies them) runs per row on the device;
- text deltas reach `on_delta` from the scheduler thread as tokens arrive.

`generate` is thread-safe: callers that run it concurrently (several worker batches in flight) share decode steps.
On CPU the same code runs without graphs (used by the tests, which compare its greedy output with the plain path).
"""

from __future__ import annotations

import heapq
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from model.engine import DeltaCallback, Engine
from model.loading import LoadedModel
from model.schema import SCHEMA_VERSION, GenerationRequest, GenerationResult, error_result

log = logging.getLogger(__name__)


def bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n (buckets ascending; n must not exceed the last)."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"{n} exceeds the largest bucket {buckets[-1]}")


def batch_buckets(slots: int) -> list[int]:
    out, b = [], 1
    while b < slots:
        out.append(b)
        b *= 2
    return out + [slots]


def length_buckets(max_len: int, step: int) -> list[int]:
    return sorted({*range(step, max_len, step), max_len})


def admission_due(waiting_tokens: int, oldest_wait_s: float, active: int, min_tokens: int, max_wait_s: float) -> bool:
    """Whether to prefill the waiting requests now. With nobody decoding there is nothing to gain by waiting; while
    others decode, a lone arrival waits (at most `max_wait_s`) for company, because one packed prefill of several
    prompts costs the host much less than a forward per prompt (benchmarks/RESULTS.md, prefill probe)."""
    return active == 0 or waiting_tokens >= min_tokens or oldest_wait_s >= max_wait_s


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items `a` and `b` share (list slices compare in C: a binary search over them)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def plan_chunk(remaining: Sequence[int], budget: int, block: int) -> list[int]:
    """How many prompt tokens each waiting prompt (in arrival order) puts into the next chunk: as many as fit in
    `budget`, each piece taking whole blocks of `block` (a piece starts on a block boundary). A prompt that does not
    fit whole gets whole blocks only, and the prompts after it wait."""
    takes, left = [], budget - budget % block
    for n in remaining:
        if left < block:
            break
        take = min(n, left)
        takes.append(take)
        left -= -(-take // block) * block
        if take < n:
            break
    return takes


class SlotCache:
    """Per-layer K/V tensors [slots, kv_heads, max_len, head_dim]; quacks like a transformers Cache for decoding."""

    def __init__(self, n_layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        import torch

        shape = (slots, kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.batch, self.length, self.pos = slots, max_len, None
        self.write_slot = self.write_pos = None

    def set_decode(self, batch: int, length: int, pos) -> None:
        """The next forward writes row i's new K/V at pos[i] and attends over positions [0, length)."""
        self.batch, self.length, self.pos = batch, length, pos

    def set_mixed(self, write_slot, write_pos) -> None:
        """The next forward is a mixed step: token t's K/V goes to (write_slot[t], write_pos[t]) and the attention
        gets the whole cache (it finds its rows through `model.chunk_attention.MIXED_STEPS`). None: decode again."""
        self.write_slot, self.write_pos = write_slot, write_pos

    def update(self, key_states, value_states, layer_idx: int, *args: Any, **kwargs: Any):
        if self.write_slot is not None:
            k, v = self.k[layer_idx], self.v[layer_idx]
            _raw(k)[self.write_slot, :, self.write_pos] = _raw(key_states[0].transpose(0, 1).to(k.dtype))
            _raw(v)[self.write_slot, :, self.write_pos] = _raw(value_states[0].transpose(0, 1).to(v.dtype))
            return k, v
        b, h, _, d = key_states.shape
        idx = self.pos.view(b, 1, 1, 1).expand(b, h, 1, d)
        k, v = self.k[layer_idx][:b], self.v[layer_idx][:b]
        _raw(k).scatter_(2, idx, _raw(key_states.to(k.dtype)))
        _raw(v).scatter_(2, idx, _raw(value_states.to(v.dtype)))
        return k[:, :, : self.length], v[:, :, : self.length]

    def fill(self, slot: int, prefill_cache) -> int:
        """Copy a prefilled transformers cache (batch 1) into `slot`; returns its length."""
        n = 0
        for i, layer in enumerate(prefill_cache.layers):
            n = layer.keys.shape[-2]
            self.k[i][slot, :, :n].copy_(layer.keys[0])
            self.v[i][slot, :, :n].copy_(layer.values[0])
        return n

    # What transformers may ask of a cache during a decoding forward.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    @property
    def is_compileable(self) -> bool:
        return True


def _raw(t):
    """An fp8 tensor as its bytes (scatter and index writes have no float8 kernels everywhere); others as they are."""
    import torch

    return t.view(torch.uint8) if t.element_size() == 1 and t.is_floating_point() else t


class TextStream:
    """Incremental detokenization (prefix/read offsets, as in TGI): cheap per token, no broken characters."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.prefix, self.read, self.started = 0, 0, False

    def push(self, tokens: list[int]) -> str:
        prefix_text = self.tok.decode(tokens[self.prefix:self.read], skip_special_tokens=True)
        new_text = self.tok.decode(tokens[self.prefix:], skip_special_tokens=True)
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text):]
        self.prefix, self.read = self.read, len(tokens)
        if not self.started:  # the reply's leading white space is not shown
            delta = delta.lstrip()
            self.started = bool(delta)
        return delta


@dataclass
class _Seq:
    req: GenerationRequest
    prompt_ids: list[int]
    max_new: int
    on_delta: DeltaCallback | None
    done: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    slot: int = -1
    fed: int = 0  # decode steps launched for it (each feeds one token and samples the next)
    prefilled: int = 0  # prompt tokens whose K/V the slot holds (reused, or sent in mixed steps' chunks)
    reused: int = 0  # prompt tokens whose K/V the slot already held when it was taken (not prefilled)
    stream: TextStream | None = None
    submitted: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    first_token_at: float | None = None
    stopped: bool = False
    result: GenerationResult | None = None


@dataclass
class SlotStats:
    generated_tokens: int = 0
    prefill_tokens: int = 0
    prefill_forwards: int = 0  # prefill forwards run (a packed one admits several prompts)
    decode_steps: int = 0
    busy_seconds: float = 0.0
    prefill_seconds: float = 0.0  # admitting: prefill forwards, first tokens (no decode step is launched meanwhile)
    wait_seconds: float = 0.0  # the host waiting for a decode step's tokens (the GPU is the bottleneck)
    decoded_rows: int = 0  # sum over decode steps of the rows that needed a token (mean batch = / decode_steps)
    mixed_steps: int = 0  # decode steps that also carried a chunk of prompts (counted in decode_steps too)
    chunk_tokens: int = 0  # prompt tokens prefilled inside mixed steps (also in prefill_tokens when a prompt ends)
    reused_tokens: int = 0  # prompt tokens whose K/V a free slot still held from an earlier turn (not prefilled)
    active: int = 0
    queued: int = 0
    graphs: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.busy_seconds if self.busy_seconds > 0 else 0.0


class SlotEngine(Engine):
    """Continuous batching on a static slot cache (CUDA graphs on GPUs). Same interface as `Engine`."""

    concurrent = True  # callers may run generate() from several threads at once and share decode steps
    log_every_s = 30.0

    def __init__(self, loaded: LoadedModel, max_context_tokens: int | None = None, slots: int = 64,
                 use_cuda_graphs: bool | None = None, length_step: int | None = None, prefill_token_budget: int = 4096,
                 fuse: bool | None = None, packed_prefill: bool | None = None, matmul_attention: bool | None = None,
                 triton_attention: bool | None = None, fuse_proj: bool | None = None,
                 admit_wait_s: float | None = None, admit_min_tokens: int | None = None, mixed: bool | None = None,
                 chunk_buckets: Sequence[int] = (128, 256, 512), kv_cache_dtype: str = "auto",
                 reuse_prefix: bool | None = None):
        import torch

        super().__init__(loaded, max_context_tokens)
        cfg = self.model.config
        heads = cfg.num_attention_heads
        self.max_len = self.max_context
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        self.device = torch.device(loaded.device)
        self.use_graphs = (self.device.type == "cuda") if use_cuda_graphs is None else use_cuda_graphs
        # One length (the whole slot) by default: contiguous K/V for attention; shorter buckets read less but slice.
        on_gpu = self.device.type == "cuda"
        self.matmul_attention = on_gpu if matmul_attention is None else matmul_attention
        self.triton_attention = False
        # GPU default: the split (flash-decoding) Triton kernel that reads only each row's valid K/V, if it passes its
        # start-up check against the matrix-product attention (benchmarks/RESULTS.md, serving run 5)
        if on_gpu and (triton_attention is None or triton_attention):
            from model.fused import triton_attention_works

            self.triton_attention = triton_attention_works(self.device)
        # SDPA wants contiguous K/V (one length); the matrix-vector attention reads only a 256-multiple prefix; the
        # Triton kernel reads only each row's own length and splits the bucket into chunks (one graph per bucket)
        step = length_step or (256 if self.matmul_attention or self.triton_attention else self.max_len)
        self.length_buckets = length_buckets(self.max_len, step)
        # mixed steps: GPU default (H100: steady +31%, burst p95 time to first token 1.72 -> 0.12 s; README) when the
        # Triton kernels serve (the chunk kernel checked here); on CPU on request, with the matrix-product reference
        from model.chunk_attention import BLOCK

        self.chunk_buckets = sorted({-(-c // BLOCK) * BLOCK for c in chunk_buckets})
        self.mixed = on_gpu if mixed is None else mixed
        if self.mixed and on_gpu:
            from model.chunk_attention import chunk_kernel_works

            self.mixed = self.triton_attention and chunk_kernel_works(self.device)
        # fp8 K/V (e4m3, no scale): half the cache memory and half the K/V a decode step reads; only where the
        # Triton kernels read it (they upcast what they load), after their check on fp8 data
        self.kv_dtype = loaded.dtype
        if kv_cache_dtype == "fp8":
            from model.chunk_attention import fp8_cache_works

            if self.triton_attention and fp8_cache_works(self.device):
                self.kv_dtype = torch.float8_e4m3fn
            else:
                log.warning("an fp8 K/V cache needs the Triton attention on a CUDA GPU; the cache stays %s",
                            loaded.dtype)
        elif kv_cache_dtype != "auto":
            raise ValueError(f"kv_cache_dtype {kv_cache_dtype!r}: auto or fp8")
        self.slots = slots = self._fit_slots(slots, cfg.num_hidden_layers * cfg.num_key_value_heads, self.kv_dtype)
        self.batch_buckets = batch_buckets(slots)
        self.packed_prefill = on_gpu if packed_prefill is None else packed_prefill
        # gather arrivals into packed prefills while others decode (GPU default; the CPU has no host gap to save)
        self.admit_wait_s = (0.08 if on_gpu and self.packed_prefill else 0.0) if admit_wait_s is None else admit_wait_s
        self.admit_min_tokens = prefill_token_budget // 2 if admit_min_tokens is None else admit_min_tokens
        if fuse if fuse is not None else self.use_graphs:
            from model.fused import fuse_projections, fuse_small_ops

            fuse_small_ops(self.model)
            if fuse_proj is None or fuse_proj:
                fuse_projections(self.model)  # q/k/v and gate/up as one product each (merged bf16 weights only)
        self._attn_before = self.model.config._attn_implementation
        if self.triton_attention:
            from model.fused import use_triton_slot_attention

            use_triton_slot_attention(self.model)
        elif self.matmul_attention:
            from model.fused import use_slot_attention

            use_slot_attention(self.model)
        if self.mixed:
            from model.chunk_attention import use_mixed_attention

            use_mixed_attention(self.model)
        pin = self.device.type == "cuda"  # two host buffers: one step's tokens are read while the next is written
        self._host = [torch.zeros(slots + 1, dtype=torch.long, pin_memory=pin) for _ in range(2)]
        self._flip = 0
        self._sampling_slots: set[int] = set()
        self.prefill_token_budget = prefill_token_budget
        self.cache = SlotCache(cfg.num_hidden_layers, slots, cfg.num_key_value_heads, self.max_len, self.head_dim,
                               self.kv_dtype, self.device)
        params = inspect.signature(self.model.get_base_model().forward if hasattr(self.model, "get_base_model")
                                   else self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        dev = self.device
        # Per-slot state has one more row, `slots`: a scratch row that unused first-token rows of a mixed step write.
        # A row whose position is `park` (the cache's last position, which no prompt or reply token can take) is
        # parked: free, finished or still prefilling in chunks; decoding it costs one K/V read and changes nothing.
        self.park = self.max_len - 1
        self.tok_buf = torch.zeros(slots + 1, 1, dtype=torch.long, device=dev)
        self.pos_buf = torch.full((slots + 1, 1), self.park, dtype=torch.long, device=dev)
        self.out_tok = torch.zeros(slots + 1, dtype=torch.long, device=dev)
        self.lengths = torch.ones(slots, dtype=torch.int32, device=dev)  # valid K/V per row (Triton attention)
        self.arange = torch.arange(self.max_len, device=dev)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        self.seen = torch.zeros(slots + 1, vocab, dtype=torch.bool, device=dev)
        self.penalty = torch.ones(slots + 1, device=dev)
        self.temperature = torch.ones(slots + 1, device=dev)
        self.top_p = torch.ones(slots + 1, device=dev)
        self.greedy = torch.ones(slots + 1, dtype=torch.bool, device=dev)
        # mixed steps' chunk layouts, one device buffer per chunk size (what its graph reads), written from two
        # pinned host buffers in turn (a step's copy may still be queued while the next step's layout is built)
        self._chunk_dev = {c: torch.zeros(_pack_size(c), dtype=torch.long, device=dev) for c in self.chunk_buckets}
        self._chunk_host = [{c: torch.zeros(_pack_size(c), dtype=torch.long, pin_memory=pin)
                             for c in self.chunk_buckets} for _ in range(2)]
        for c, buf in self._chunk_dev.items():
            buf.copy_(self._idle_layout(c))
        self._mixed_mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=dev)  # a 4D mask: transformers builds none
        self._true = torch.ones((), dtype=torch.bool, device=dev)  # written by index inside graphs (no host scalar)
        self.graphs: dict[tuple[int, int], Any] = {}
        self._pool = None
        self._free = list(range(slots))
        heapq.heapify(self._free)
        # K/V kept between turns (with mixed steps): a finished conversation's slot keeps its tokens' K/V until the
        # slot is taken again; a prompt that starts with those tokens (the next turn re-sends the history) takes that
        # slot and prefills only the rest. The K/V of a prefix depends on its tokens alone, so any prompt with the
        # same tokens may use it: nothing of another conversation reaches a reply that its prompt does not contain.
        self.reuse_prefix = self.mixed if reuse_prefix is None else (reuse_prefix and self.mixed)
        # free slot -> (the tokens whose K/V it holds at positions 0..n-1, how many of them were its prompt)
        self._held: dict[int, tuple[list[int], int]] = {}
        self._active: dict[int, _Seq] = {}
        self._pending: deque[_Seq] = deque()
        self._prefilling: deque[_Seq] = deque()  # admitted to a slot, prompt sent in mixed steps' chunks
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = SlotStats()

    def _fit_slots(self, slots: int, kv_rows: int, dtype) -> int:
        """As many slots as asked for, or as many as free GPU memory holds (keeping 4 GiB for activations)."""
        import torch

        if self.device.type != "cuda":
            return slots
        per_slot = 2 * kv_rows * self.head_dim * self.max_len * torch.empty((), dtype=dtype).element_size()
        free = torch.cuda.mem_get_info(self.device)[0] - (4 << 30)
        fit = max(1, int(free // per_slot))
        if fit < slots:
            log.warning("KV cache for %d slots of %d tokens does not fit; using %d slots", slots, self.max_len, fit)
        return min(slots, fit)

    # ------------------------------------------------------------------ public interface
    @property
    def reusing(self) -> bool:
        """K/V kept between turns serves: asked for, and mixed steps still on (they prefill the rest of a prompt;
        a failed graph capture turns them off at warm-up)."""
        return self.reuse_prefix and self.mixed

    @property
    def description(self) -> dict:
        attention = "triton" if self.triton_attention else "matmul" if self.matmul_attention else "sdpa"
        return {**super().description, "mode": "static", "slots": self.slots, "cuda_graphs": self.use_graphs,
                "decode_attention": attention, "mixed_steps": self.mixed, "kv_cache": str(self.kv_dtype),
                "chunk_tokens": self.chunk_buckets[-1] if self.mixed else 0,
                "prefix_reuse": self.reusing}

    def generate(self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
                 ) -> list[GenerationResult]:
        """One result per request, in order; blocks until all are done. Safe to call from several threads."""
        seqs: list[_Seq | GenerationResult] = []
        for r in requests:
            if r.schema_version != SCHEMA_VERSION:
                seqs.append(error_result(r.request_id, "schema_version"))
                continue
            try:
                seqs.append(self._make_seq(r, on_delta))
            except Exception as e:  # a bad request gets an error result, never an exception
                log.exception("request %s could not be prepared", r.request_id)
                seqs.append(error_result(r.request_id, type(e).__name__))
        live = [s for s in seqs if isinstance(s, _Seq)]
        self._submit(live)
        for s in live:
            s.done.wait()
        return [s.result if isinstance(s, _Seq) else s for s in seqs]

    def warmup(self) -> None:
        """Capture every decode graph now (worker start), so no request pays for it later."""
        import torch

        self._ensure_thread()
        if not self.use_graphs:
            return
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                self.pos_buf.zero_()
                for b in self.batch_buckets:
                    for length in self.length_buckets:
                        self._graph(b, length)
            torch.cuda.synchronize()
        except Exception:  # a model whose forward cannot be captured still serves, eagerly
            log.exception("CUDA graph capture failed; decoding without graphs")
            self.use_graphs, self.graphs = False, {}
            self.mixed = False
            self.pos_buf.fill_(self.park)
            return
        try:
            with torch.inference_mode():
                for b in self.batch_buckets if self.mixed else ():
                    for chunk in self.chunk_buckets:
                        self._graph(b, self.max_len, chunk)
            torch.cuda.synchronize()
        except Exception:  # decode graphs serve; arrivals are prefilled in forwards of their own
            log.exception("capturing mixed steps failed; prefilling in separate forwards")
            self.mixed = False
            self.graphs = {k: g for k, g in self.graphs.items() if not k[2]}
        self.pos_buf.fill_(self.park)
        log.info("captured %d decode graphs in %.1f s", len(self.graphs), time.perf_counter() - t0)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        if self.triton_attention:
            from model.fused import SLOT_LENGTHS

            SLOT_LENGTHS.pop(id(self.model.config), None)
        if self.mixed:
            from model.chunk_attention import MIXED_STEPS

            MIXED_STEPS.pop(id(self.model.config), None)
        if self.model.config._attn_implementation != self._attn_before:  # the model may serve a plain engine next
            self.model.config._attn_implementation = self._attn_before

    # ------------------------------------------------------------------ request intake
    def _make_seq(self, r: GenerationRequest, on_delta: DeltaCallback | None) -> _Seq:
        prompt = self.prompt_for(r)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        max_new = min(r.sampling.max_new_tokens, self.max_len - len(ids))
        if max_new < 1:
            raise ValueError("prompt too long for the slot cache")
        seq = _Seq(req=r, prompt_ids=list(ids), max_new=max_new, on_delta=on_delta)
        if on_delta is not None and r.stream:
            seq.stream = TextStream(self.tokenizer)
        return seq

    def _submit(self, seqs: list[_Seq]) -> None:
        self._ensure_thread()
        with self._cond:
            self._pending.extend(seqs)
            self.stats.queued = len(self._pending)
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="slot-engine", daemon=True)
                self._thread.start()

    # ------------------------------------------------------------------ scheduler thread
    def _loop(self) -> None:
        """Admit, prefill, decode. Decoding is pipelined: step n+1 is launched before step n's tokens are read back,
        so the host's work per step (streams, stop checks, bookkeeping) runs while the GPU computes the next step.
        The next step's input tokens and positions never leave the device; a row that stopped at step n costs one
        discarded token at step n+1."""
        import torch

        last_log, last_tokens = time.monotonic(), self.stats.generated_tokens
        inflight = None
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._pending and not self._active and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    admitted, budget = [], self.prefill_token_budget
                    # with mixed steps running (or about to), arrivals join them at once: nothing to gather for
                    chunked = self.mixed and bool(self._active or self._prefilling)
                    if chunked:
                        budget = 1 << 62
                    due = bool(self._pending) and (chunked or admission_due(
                        sum(len(q.prompt_ids) for q in self._pending), time.perf_counter() - self._pending[0].submitted,
                        len(self._active), self.admit_min_tokens, self.admit_wait_s))
                    while due and self._pending and self._free and (budget > 0 or not admitted):
                        seq = self._pending.popleft()
                        self._take_slot(seq)
                        budget -= len(seq.prompt_ids) - seq.reused
                        admitted.append(seq)
                    self.stats.queued = len(self._pending)
                t0 = time.perf_counter()
                try:
                    # a prompt whose start the slot already holds is always prefilled in mixed steps (its rest)
                    for seq in [q for q in admitted if chunked or q.reused]:
                        self._admit_chunked(seq)
                    admitted = [q for q in admitted if not (chunked or q.reused)]
                    if admitted:
                        # The step in flight keeps running: the prefill's kernels queue behind it on the same stream
                        # (so the host builds the prefill while the GPU decodes), and its rows are safe: an admitted
                        # slot was freed by an earlier collect, its stale row in flight writes only its own slot
                        # before the prefill overwrites it, and `_collect` skips rows whose sequence has changed.
                        t_pre = time.perf_counter()
                        if self.packed_prefill and len(admitted) > 1:
                            self._prefill_packed(admitted)
                        else:
                            for seq in admitted:
                                self._prefill(seq)
                        self.stats.prefill_seconds += time.perf_counter() - t_pre
                    if self._prefilling:
                        launched = self._launch(mixed=True)
                    else:
                        launched = self._launch() if self._active else None
                    if inflight is not None:
                        self._collect(inflight)
                    inflight = launched
                except Exception as e:  # never a dead engine: fail what is in flight, keep serving
                    log.exception("slot engine step failed; failing %d active requests", len(self._active))
                    inflight = None
                    stranded = list(self._active.values()) + list(self._prefilling) + \
                        [s for s in admitted if s.slot not in self._active and not s.done.is_set()]
                    self._prefilling.clear()
                    for seq in stranded:
                        self._finish(seq, error=type(e).__name__)
                self.stats.busy_seconds += time.perf_counter() - t0
                self.stats.active = len(self._active)
                if time.monotonic() - last_log >= self.log_every_s:  # the worker's throughput, in its log
                    now = time.monotonic()
                    rate = (self.stats.generated_tokens - last_tokens) / (now - last_log)
                    log.info("slot engine: %.0f tokens/s, %d active, %d queued, %d free slots", rate,
                             self.stats.active, self.stats.queued, len(self._free))
                    last_log, last_tokens = now, self.stats.generated_tokens

    def _prefill(self, seq: _Seq) -> None:
        import torch

        seq.started = time.perf_counter()
        ids = torch.tensor([seq.prompt_ids], device=self.device)
        self.stats.prefill_forwards += 1
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        n = self.cache.fill(seq.slot, cache)
        self._start(seq, out.logits[:, -1, :], n)

    def _prefill_packed(self, seqs: list[_Seq]) -> None:
        """Several prompts in one forward: concatenated, position ids restarting at each prompt, so transformers
        masks block-diagonally and no prompt sees another. One large matrix product instead of many small ones."""
        import torch

        now = time.perf_counter()
        ids, pos, ends = [], [], []
        for seq in seqs:
            seq.started = now
            ids += seq.prompt_ids
            pos += range(len(seq.prompt_ids))
            ends.append(len(ids))
        ids_t = torch.tensor([ids], device=self.device)
        pos_t = torch.tensor([pos], device=self.device)
        seg = torch.repeat_interleave(torch.arange(len(seqs), device=self.device),
                                      torch.tensor([len(q.prompt_ids) for q in seqs], device=self.device))
        t = torch.arange(len(ids), device=self.device)
        mask = (seg[:, None] == seg[None, :]) & (t[None, :] <= t[:, None])  # causal inside each prompt only
        keep = torch.tensor([e - 1 for e in ends], device=self.device)
        self.stats.prefill_forwards += 1
        out = self.model(input_ids=ids_t, position_ids=pos_t, attention_mask=mask[None, None], use_cache=True,
                         logits_to_keep=keep)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        start = 0
        for j, (seq, end) in enumerate(zip(seqs, ends)):
            for layer_idx, layer in enumerate(cache.layers):
                self.cache.k[layer_idx][seq.slot, :, : end - start].copy_(layer.keys[0, :, start:end])
                self.cache.v[layer_idx][seq.slot, :, : end - start].copy_(layer.values[0, :, start:end])
            self._start(seq, out.logits[:, j, :], end - start)
            start = end

    def _start(self, seq: _Seq, logits, n: int) -> None:
        """A prefilled sequence: per-slot sampling state, its first token, which the next decode step feeds at
        position n (both written on the device)."""
        import torch

        s, i = seq.req.sampling, seq.slot
        self._init_slot(seq)
        if not s.greedy:
            self._sampling_slots.add(i)
        self._active[i] = seq
        seq.fed, seq.prefilled = 0, n
        self.stats.prefill_tokens += n
        if s.seed is not None:
            torch.manual_seed(s.seed)
        rows = torch.tensor([i], device=self.device)
        token = self._sample(logits, self.seen[rows], rows, sampling=not s.greedy)
        self.seen[i, token[0]] = True
        self.tok_buf[i, 0] = token[0]
        self.pos_buf[i, 0] = n
        self._advance({i: int(token[0])})

    def _init_slot(self, seq: _Seq) -> None:
        """The slot's sampling state on the device: the prompt's tokens as seen (repetition penalty), its settings."""
        import torch

        ids = torch.tensor(seq.prompt_ids, device=self.device)
        s, i = seq.req.sampling, seq.slot
        self.seen[i].zero_()
        self.seen[i, ids] = True
        self.penalty[i] = s.repetition_penalty
        self.temperature[i] = max(s.temperature, 1e-5)
        self.top_p[i] = s.top_p
        self.greedy[i] = s.greedy

    def _take_slot(self, seq: _Seq) -> None:
        """A free slot for `seq`, and how much of its prompt that slot's K/V already covers (`seq.slot`,
        `seq.reused`): a slot whose last conversation this prompt continues (it starts with that conversation's whole
        prompt: a next turn), else the lowest free slot that holds nothing, else the held slot sharing the longest
        start with the prompt (ties: the one freed longest ago; most prompts share the system prompt). Reuse counts
        only from `BLOCK` tokens on, and leaves the prompt's last token to prefill (its logits give the first token)."""
        from model.chunk_attention import BLOCK

        shared = {}
        if self.reusing:
            shared = {slot: (common_prefix(held, seq.prompt_ids), prompt_len)
                      for slot, (held, prompt_len) in self._held.items()}  # in the order the slots were freed
        continued = [slot for slot, (n, prompt_len) in shared.items() if n >= max(prompt_len, BLOCK)]
        unheld = [i for i in self._free if i not in self._held]
        if continued:
            best = max(continued, key=lambda i: shared[i][0])
        elif unheld:
            best = min(unheld)
        elif shared:
            best = max(shared, key=lambda i: shared[i][0])  # max keeps the first (oldest) of equals
        else:
            best = next(iter(self._held))
        reuse = min(shared.get(best, (0, 0))[0], len(seq.prompt_ids) - 1)
        reuse = reuse if reuse >= BLOCK else 0
        self._free.remove(best)
        heapq.heapify(self._free)
        self._held.pop(best, None)
        seq.slot, seq.reused = best, reuse
        self.stats.reused_tokens += reuse

    def _admit_chunked(self, seq: _Seq) -> None:
        """A slot for a prompt that mixed steps will prefill: its row parked until the step that takes the prompt's
        last chunk samples its first token."""
        seq.started = time.perf_counter()
        seq.prefilled = seq.reused
        self._init_slot(seq)
        self.pos_buf[seq.slot, 0] = self.park
        self._prefilling.append(seq)

    def _launch(self, mixed: bool = False):
        """Start one decode step for every active slot (graph replay on CUDA) and the copy of its tokens to the
        host; returns what `_collect` needs, or None when every active row already has all its tokens in flight.
        A mixed step also carries the next chunk of waiting prompts and samples the first token of each prompt it
        completes; those sequences join the active ones for the next step."""
        import torch

        from model.chunk_attention import BLOCK

        live = {i: seq for i, seq in self._active.items() if seq.fed < seq.max_new - 1}
        if not live and not mixed:
            return None
        b = bucket(max(self._active) + 1, self.batch_buckets) if self._active else self.batch_buckets[0]
        # rows inside the bucket that are free, finished or still prefilling are parked: they change nothing
        first: dict[int, _Seq] = {}
        if mixed:
            waiting = list(self._prefilling)
            takes = plan_chunk([len(q.prompt_ids) - q.prefilled for q in waiting], self.chunk_buckets[-1], BLOCK)
            chunk = bucket(sum(-(-t // BLOCK) * BLOCK for t in takes), self.chunk_buckets)
            length = self.max_len
            graph = self._graph(b, length, chunk) if self.use_graphs else None  # captured before the layout changes
            first = self._upload_chunk(list(zip(waiting, takes)), chunk)
            if graph is not None:
                graph.replay()
            else:
                self._step_mixed(b, chunk)
        else:
            length = bucket(max(len(seq.prompt_ids) + seq.fed for seq in live.values()) + 1, self.length_buckets)
            if self.use_graphs:
                self._graph(b, length).replay()
            else:
                self._step(b, length)
        host = self._host[self._flip]
        self._flip ^= 1
        if first:
            host.copy_(self.out_tok, non_blocking=True)
        else:
            host[:b].copy_(self.out_tok[:b], non_blocking=True)
        done = None
        if self.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()
        for seq in live.values():
            seq.fed += 1
        for i, seq in first.items():  # prefilled: the next step feeds the first token sampled by this one
            self._active[i] = seq
            seq.fed = 0
            self.stats.prefill_tokens += len(seq.prompt_ids) - seq.reused
            if not seq.req.sampling.greedy:
                self._sampling_slots.add(i)
        self.stats.decode_steps += 1
        self.stats.decoded_rows += len(live)
        self.stats.mixed_steps += mixed
        return done, host, b, live, first

    def _upload_chunk(self, plan: list[tuple[_Seq, int]], chunk: int) -> dict[int, _Seq]:
        """Write the layout of the next mixed step's chunk (prompt pieces in `plan` order, each starting on a block
        boundary) to its device buffer; returns the sequences whose prompt it completes, by slot."""
        import torch

        from model.chunk_attention import BLOCK

        lay = self._blank_layout(chunk)
        ids, pos, wslot, bslot, bstart, blen, cidx, cslot, cpos = lay
        cursor, done, first = 0, 0, {}
        for seq, take in plan:
            s0 = seq.prefilled
            ids[cursor:cursor + take] = seq.prompt_ids[s0:s0 + take]
            pos[cursor:cursor + take] = range(s0, s0 + take)
            wslot[cursor:cursor + take] = [seq.slot] * take
            for j in range(-(-take // BLOCK)):
                blk = cursor // BLOCK + j
                bslot[blk], bstart[blk], blen[blk] = seq.slot, s0 + j * BLOCK, min(BLOCK, take - j * BLOCK)
            seq.prefilled += take
            self.stats.chunk_tokens += take
            if seq.prefilled == len(seq.prompt_ids):
                cidx[done], cslot[done], cpos[done] = cursor + take - 1, seq.slot, seq.prefilled
                done += 1
                first[seq.slot] = seq
            cursor += -(-take // BLOCK) * BLOCK
        while self._prefilling and self._prefilling[0].prefilled == len(self._prefilling[0].prompt_ids):
            self._prefilling.popleft()
        host = self._chunk_host[self._flip][chunk]  # the buffer of two steps ago: its copy has run
        host.copy_(torch.tensor([x for field in lay for x in field]))
        self._chunk_dev[chunk].copy_(host, non_blocking=True)
        return first

    def _blank_layout(self, chunk: int) -> _Layout:
        """A chunk of padding only, as lists in `_Layout` order: tokens at `park` of slot 0, empty blocks, unused
        first-token rows on the scratch row. `_upload_chunk` fills it in."""
        from model.chunk_attention import BLOCK

        g = chunk // BLOCK
        return _Layout([0] * chunk, [self.park] * chunk, [0] * chunk, [0] * g, [0] * g, [0] * g, [0] * g,
                       [self.slots] * g, [0] * g)

    def _idle_layout(self, chunk: int):
        """The padding-only chunk as a tensor: what mixed graphs are captured with (warm-ups write nothing real)."""
        import torch

        return torch.tensor([x for field in self._blank_layout(chunk) for x in field])

    def _collect(self, launched) -> None:
        """Read a launched step's tokens (waiting without holding the GIL, so clients keep arriving) and hand them
        to their sequences; rows that stopped meanwhile are skipped."""
        done, host, b, live, first = launched
        if done is not None:
            t0 = time.perf_counter()
            done.synchronize()
            self.stats.wait_seconds += time.perf_counter() - t0
        values = host.tolist() if first else host[:b].tolist()
        new = {i: values[i] for i, seq in live.items() if self._active.get(i) is seq}
        new.update({i: values[i] for i, seq in first.items() if self._active.get(i) is seq})
        self._advance(new)

    def _forward(self, b: int, length: int):
        pos = self.pos_buf[:b]
        mask = (self.arange[:length].view(1, -1) <= pos).view(b, 1, 1, length)
        self.cache.set_decode(b, length, pos[:, 0])
        if self.triton_attention:  # each row's valid length, computed once per step for every layer
            from model.fused import SLOT_LENGTHS

            self._row_lengths(b)
            SLOT_LENGTHS[id(self.model.config)] = self.lengths[:b]
        out = self.model(input_ids=self.tok_buf[:b], position_ids=pos, attention_mask=mask,
                         use_cache=True, logits_to_keep=1, **{self._cache_kw: self.cache})
        return out.logits[:, -1, :]

    def _row_lengths(self, b: int):
        """Valid K/V per decode row for the Triton attention: position + 1, or 1 for a parked row."""
        pos = self.pos_buf[:b, 0]
        self.lengths[:b].copy_((pos + 1).masked_fill_(pos >= self.park, 1))
        return self.lengths[:b]

    def _step(self, b: int, length: int, sampling: bool | None = None) -> None:
        """One decode step for rows [0, b), all on the device: forward, sample, and the next step's inputs."""
        self._decode_rows(self._forward(b, length), b, sampling)

    def _decode_rows(self, logits, b: int, sampling: bool | None) -> None:
        """Sample rows [0, b) and write the next step's inputs: each row's token and its position + 1, clamped at
        `park` (a row past its last token is parked). A parked row's token is not marked as seen."""
        rows = slice(0, b)
        seen = self.seen[:b]
        live = (self.pos_buf[:b] < self.park)
        token = self._sample(logits, seen, rows, sampling=bool(self._sampling_slots) if sampling is None else sampling)
        seen.scatter_(1, token[:, None], seen.gather(1, token[:, None]) | live)
        self.out_tok[:b].copy_(token)
        self.tok_buf[:b, 0].copy_(token)
        self.pos_buf[:b].add_(1).clamp_(max=self.park)

    def _forward_mixed(self, b: int, chunk: int):
        """The forward of a mixed step: decode rows [0, b), then the chunk's tokens, flat as [1, b + chunk]; logits
        of the decode rows and of each completed prompt's last token."""
        import torch

        from model.chunk_attention import MIXED_STEPS, MixedLayout

        lay = _views(self._chunk_dev[chunk], chunk)
        pos = torch.cat([self.pos_buf[:b, 0], lay.pos])
        self.cache.set_mixed(torch.cat([self.arange[:b], lay.wslot]), pos)
        key = id(self.model.config)
        MIXED_STEPS[key] = MixedLayout(b, chunk, self._row_lengths(b), lay.bslot.int(), lay.bstart.int(),
                                       lay.blen.int(), triton=self.triton_attention)
        try:
            out = self.model(input_ids=torch.cat([self.tok_buf[:b, 0], lay.ids])[None], position_ids=pos[None],
                             attention_mask=self._mixed_mask, use_cache=True,
                             logits_to_keep=torch.cat([self.arange[:b], b + lay.cidx]), **{self._cache_kw: self.cache})
        finally:
            MIXED_STEPS.pop(key, None)
            self.cache.set_mixed(None, None)
        return out.logits[0]

    def _step_mixed(self, b: int, chunk: int, sampling: bool | None = None) -> None:
        """A mixed step, all on the device: the decode rows as in `_step`, then each completed prompt's first token
        (sampled from its last position) written as its row's next input at position = prompt length."""
        logits = self._forward_mixed(b, chunk)
        self._decode_rows(logits[:b], b, sampling)
        lay = _views(self._chunk_dev[chunk], chunk)
        cs = lay.cslot
        token = self._sample(logits[b:], self.seen[cs], cs, sampling=True)
        self.seen.index_put_((cs, token), self._true)
        self.tok_buf[cs, 0] = token
        self.pos_buf[cs, 0] = lay.cpos
        self.out_tok[cs] = token

    def _graph(self, b: int, length: int, chunk: int = 0):
        import torch

        key = (b, length, chunk)
        if key not in self.graphs:
            if chunk:  # captured (and warmed up) on a chunk of padding only: nothing real is written twice
                self._chunk_dev[chunk].copy_(self._idle_layout(chunk))
            state = [t.clone() for t in (self.tok_buf, self.pos_buf, self.seen, self.out_tok)]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the graph (lazy initializations, workspace handles)
                for _ in range(2):
                    self._step_mixed(b, chunk, sampling=True) if chunk else self._step(b, length, sampling=True)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                # one graph for greedy and sampled rows alike
                self._step_mixed(b, chunk, sampling=True) if chunk else self._step(b, length, sampling=True)
            for buf, saved in zip((self.tok_buf, self.pos_buf, self.seen, self.out_tok), state):
                buf.copy_(saved)  # the warm-up steps must not advance the rows being served
            self.graphs[key] = graph
            self.stats.graphs = len(self.graphs)
        return self.graphs[key]

    def _sample(self, logits, seen, rows, sampling: bool = True):
        """Repetition penalty, then greedy or temperature + top-p sampling, per row (as transformers does). Sampling
        draws argmax(p / E) with E ~ Exp(1), which is a draw from p (as torch.multinomial does for one sample) and
        can be captured in a CUDA graph."""
        import torch

        scores = logits.float()
        pen = self.penalty[rows].unsqueeze(1)
        scores = torch.where(seen, torch.where(scores < 0, scores * pen, scores / pen), scores)
        token = scores.argmax(-1)
        if sampling:
            t = scores / self.temperature[rows].unsqueeze(1)
            sorted_scores, order = torch.sort(t, descending=False)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            drop_sorted = cum <= (1 - self.top_p[rows].unsqueeze(1))
            drop_sorted[:, -1] = False
            drop = drop_sorted.scatter(1, order, drop_sorted)
            probs = t.masked_fill(drop, float("-inf")).softmax(-1)
            sampled = (probs / torch.empty_like(probs).exponential_()).argmax(-1)
            token = torch.where(self.greedy[rows], token, sampled)
        return token

    def _advance(self, new_tokens: dict[int, int]) -> None:
        now = time.perf_counter()
        for i, tid in new_tokens.items():
            seq = self._active[i]
            if tid in self.eos_ids:
                seq.stopped = True
                self._finish(seq)
                continue
            seq.tokens.append(tid)
            self.stats.generated_tokens += 1
            if seq.first_token_at is None:
                seq.first_token_at = now
            if seq.stream is not None:
                delta = seq.stream.push(seq.tokens)
                if delta:
                    try:
                        seq.on_delta(seq.req.request_id, delta)
                    except Exception:  # a broken consumer must not stop generation for the others
                        log.exception("on_delta failed for %s", seq.req.request_id)
            if len(seq.tokens) >= seq.max_new:
                self._finish(seq)

    def _finish(self, seq: _Seq, error: str | None = None) -> None:
        if seq.done.is_set():
            return
        if self._active.get(seq.slot) is seq:
            del self._active[seq.slot]
            self._sampling_slots.discard(seq.slot)
        if seq.slot >= 0:
            if error is None:  # its row stays parked until the slot is used again (one K/V read a step)
                self.pos_buf[seq.slot, 0] = self.park
                if self.reusing and seq.prefilled == len(seq.prompt_ids):
                    # the K/V written: the prompt and every reply token fed back (all but the last after a length
                    # stop; all of them after EOS, which is not kept)
                    held = seq.prompt_ids + (seq.tokens if seq.stopped else seq.tokens[:-1])
                    self._held[seq.slot] = (held, len(seq.prompt_ids))
            heapq.heappush(self._free, seq.slot)
            seq.slot = -1
        end = time.perf_counter()
        if error is not None:
            seq.result = error_result(seq.req.request_id, error)
        else:
            text = self.tokenizer.decode(seq.tokens, skip_special_tokens=True).strip()
            seq.result = GenerationResult(
                request_id=seq.req.request_id, text=text, finish_reason="stop" if seq.stopped else "length",
                prompt_tokens=len(seq.prompt_ids), completion_tokens=len(seq.tokens),
                queue_seconds=max(0.0, seq.started - seq.submitted) if seq.started else 0.0,
                first_token_seconds=(seq.first_token_at - seq.submitted) if seq.first_token_at else None,
                generation_seconds=end - (seq.started or seq.submitted))
        seq.done.set()


class _Layout(NamedTuple):
    """Views of a chunk's layout buffer (`SlotEngine._upload_chunk` writes it)."""

    ids: Any  # [chunk] token ids (padding: 0)
    pos: Any  # [chunk] positions (padding: park)
    wslot: Any  # [chunk] slot each token's K/V is written to (padding: 0, at park)
    bslot: Any  # [blocks] slot of each block of BLOCK tokens
    bstart: Any  # [blocks] position of the block's first token
    blen: Any  # [blocks] real tokens in the block
    cidx: Any  # [blocks] index in the chunk of a completed prompt's last token
    cslot: Any  # [blocks] its slot (unused rows: the scratch row)
    cpos: Any  # [blocks] its prompt length: the position its first token is fed at


def _pack_size(chunk: int) -> int:
    from model.chunk_attention import BLOCK

    return 3 * chunk + 6 * (chunk // BLOCK)


def _views(buf, chunk: int) -> _Layout:
    from model.chunk_attention import BLOCK

    g = chunk // BLOCK
    return _Layout(*buf.split([chunk, chunk, chunk, g, g, g, g, g, g]))
