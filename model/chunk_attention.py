"""Attention for a mixed step: decode rows and chunks of waiting prompts in one forward over the slot cache.

A mixed step (`model.slots`, chunked prefill) runs one forward over `b + C` tokens laid out flat as `[1, b + C]`:
the first `b` are the decode rows (token i belongs to slot i), the next `C` are pieces of prompts still being
prefilled, cut into blocks of `BLOCK` tokens that each belong to one slot (a prompt piece starts on a block boundary;
the tail of its last block is padding). The cache has written every token's K/V at its (slot, position) before the
attention runs, so both parts read everything from the cache:

- a decode row attends over its slot's positions `[0, length)` (the split Triton kernel of `model.fused`, or masked
  matrix products on CPU);
- a chunk token at position p of slot s attends over s's positions `[0, p]`: earlier chunks of its prompt, then its
  own block's tokens causally. On CUDA one Triton program per (block, head) streams the slot's K/V once for the
  block's queries (flash-attention style, online softmax); elsewhere `chunk_attention_reference` does the same with
  masked matrix products.

`MixedLayout` carries the step's shape (Python ints, fixed per captured graph) and device tensors (rewritten before
each replay). The engine registers it in `MIXED_STEPS` while it builds the forward, keyed by the model config, the
same way `model.fused.SLOT_LENGTHS` passes per-step lengths to the decode attention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

BLOCK = 32  # prompt tokens per attention block; a prompt piece in a chunk starts on a block boundary
MIXED_STEPS: dict[int, MixedLayout] = {}  # id(model config) -> the layout of the mixed step being built
_kernel = None


@dataclass
class MixedLayout:
    """One mixed step's layout. `b` decode rows, then `chunk` prompt tokens in `chunk // BLOCK` blocks."""

    b: int
    chunk: int
    lengths: Any  # [b] int32: valid K/V per decode row (1 for a parked row)
    block_slot: Any  # [chunk // BLOCK] int32: the slot of each block's tokens
    block_start: Any  # [chunk // BLOCK] int32: the position of each block's first token
    block_len: Any  # [chunk // BLOCK] int32: real tokens in the block (0 = a padding block)
    triton: bool = False


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def chunk_attn(Q, K, V, BSlot, BStart, BLen, Out, sm_scale, s_qt, s_qh, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                   s_ot, s_oh, GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr,
                   PRECISION: tl.constexpr):
        m = tl.program_id(0)
        h = tl.program_id(1)
        hk = h // GROUP
        n_q = tl.load(BLen + m)
        i = tl.arange(0, BLOCK_M)
        rows = m * BLOCK_M + i
        d = tl.arange(0, D)
        if n_q > 0:
            slot = tl.load(BSlot + m).to(tl.int64)
            q_pos = tl.load(BStart + m) + i
            end = tl.load(BStart + m) + n_q  # keys [0, end): the prompt so far, this block included
            q = tl.load(Q + rows[:, None] * s_qt + h * s_qh + d[None, :], mask=(i < n_q)[:, None], other=0.0)
            m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
            l_i = tl.zeros((BLOCK_M,), tl.float32)
            acc = tl.zeros((BLOCK_M, D), tl.float32)
            for start in range(0, end, BLOCK_N):
                n = start + tl.arange(0, BLOCK_N)
                k = tl.load(K + slot * s_kb + hk * s_kh + n[:, None] * s_kt + d[None, :], mask=(n < end)[:, None],
                            other=0.0).to(Q.dtype.element_ty)  # an fp8 cache is upcast to the queries' dtype
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * sm_scale
                s = tl.where((n[None, :] <= q_pos[:, None]) & (n[None, :] < end), s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))  # key 0 is always visible: finite from the first block
                p = tl.exp(s - m_new[:, None])
                alpha = tl.exp(m_i - m_new)
                v = tl.load(V + slot * s_vb + hk * s_vh + n[:, None] * s_vt + d[None, :], mask=(n < end)[:, None],
                            other=0.0).to(Q.dtype.element_ty)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                l_i = l_i * alpha + tl.sum(p, 1)
                m_i = m_new
            out = acc / l_i[:, None]
            tl.store(Out + rows[:, None] * s_ot + h * s_oh + d[None, :], out.to(Out.dtype.element_ty))
        else:
            tl.store(Out + rows[:, None] * s_ot + h * s_oh + d[None, :], tl.zeros((BLOCK_M, D), tl.float32)
                     .to(Out.dtype.element_ty))

    return chunk_attn


def chunk_attention_triton(query, key, value, block_slot, block_start, block_len, scale: float):
    """query [C, H, D] (last dim contiguous); key/value [slots, Hkv, L, D]; returns [C, H, D]."""
    import torch

    global _kernel
    if _kernel is None:
        _kernel = _build_kernel()
    c, h, d = query.shape
    out = torch.empty_like(query)
    _kernel[(c // BLOCK, h)](query, key, value, block_slot, block_start, block_len, out, scale,
                             query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
                             value.stride(0), value.stride(1), value.stride(2), out.stride(0), out.stride(1),
                             GROUP=h // key.shape[1], BLOCK_M=BLOCK, BLOCK_N=64, D=d, num_warps=4, num_stages=2,
                             # float32 stays float32 (no TF32 rounding): the engine's float32 check compares exactly
                             PRECISION="ieee" if query.dtype == torch.float32 else "tf32")
    return out


def chunk_attention_reference(query, key, value, block_slot, block_start, block_len, scale: float):
    """The same as the Triton kernel with matrix products: each block's slot gathered, scores masked causally.
    Rows of padding blocks come out finite and unused."""
    import torch

    c, h, d = query.shape
    nb = c // BLOCK
    groups = h // key.shape[1]
    k = key[block_slot.long()]  # [nb, Hkv, L, D]
    v = value[block_slot.long()]
    if groups > 1:
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    q = query.reshape(nb, BLOCK, h, d).transpose(1, 2)  # [nb, H, BLOCK, D]
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # [nb, H, BLOCK, L]
    q_pos = block_start.long()[:, None] + torch.arange(BLOCK, device=query.device)[None, :]  # [nb, BLOCK]
    visible = torch.arange(key.shape[2], device=query.device)[None, None, :] <= q_pos[:, :, None]
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    out = torch.matmul(scores.softmax(-1).to(v.dtype), v)  # [nb, H, BLOCK, D]
    return out.transpose(1, 2).reshape(c, h, d)


def mixed_attention(layout: MixedLayout, query, key, value, scaling: float | None):
    """query [1, H, b + C, D]; key/value: the whole slot cache [slots, Hkv, L, D] of this layer.
    Returns [1, b + C, H, D] as transformers' attention functions do."""
    import torch

    from model.fused import slot_attention, triton_decode_attention

    _, h, _, d = query.shape
    b = layout.b
    scale = scaling if scaling is not None else d ** -0.5
    q = query[0].transpose(0, 1)  # [T, H, D], a view (last dim contiguous)
    parts = []
    if b:
        q_dec = q[:b].unsqueeze(2)  # [b, H, 1, D]
        k_dec, v_dec = key[:b], value[:b]
        if layout.triton:
            parts.append(triton_decode_attention(q_dec, k_dec, v_dec, layout.lengths, scale).view(b, h, d))
        else:
            mask = (torch.arange(key.shape[2], device=key.device)[None, :] < layout.lengths[:, None])
            out, _ = slot_attention(None, q_dec, k_dec, v_dec, mask.view(b, 1, 1, -1), scaling=scale)
            parts.append(out.view(b, h, d))
    q_chunk = q[b:]
    fn = chunk_attention_triton if layout.triton else chunk_attention_reference
    parts.append(fn(q_chunk, key, value, layout.block_slot, layout.block_start, layout.block_len, scale))
    return torch.cat(parts).unsqueeze(0), None


def with_mixed_steps(fallback):
    """An attention function that serves a mixed step when one is being built for this model, else `fallback`."""
    def attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
        layout = MIXED_STEPS.get(id(module.config)) if module is not None else None
        if layout is None:
            return fallback(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        return mixed_attention(layout, query, key, value, scaling)

    return attention


def use_mixed_attention(model) -> str:
    """Wrap the model's current attention function (registered under a new name) so that mixed steps reach
    `mixed_attention`. Returns the name it was registered under."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    current = model.config._attn_implementation or "sdpa"
    fallback = ALL_ATTENTION_FUNCTIONS[current]
    name = f"mixed_{current}"
    AttentionInterface.register(name, with_mixed_steps(fallback))
    model.config._attn_implementation = name
    return name


def chunk_kernel_works(device) -> bool:
    """Self-check of the Triton chunk kernel against the reference on random data; False if it fails."""
    import torch

    try:
        g = torch.Generator(device=device).manual_seed(0)
        # (heads, kv heads, head dim, slots, cache length, blocks as (slot, start, length))
        cases = [(8, 8, 128, 3, 640, [(2, 0, 32), (2, 32, 17), (0, 500, 32), (1, 0, 5), (0, 0, 0)]),
                 (32, 32, 128, 4, 1280, [(3, 1200, 32), (0, 31, 1), (1, 700, 20), (0, 0, 0)]),
                 (8, 2, 64, 2, 256, [(1, 64, 32), (0, 0, 32)])]
        for h, hk, d, slots, length, blocks in cases:
            k = torch.randn(slots, hk, length, d, device=device, dtype=torch.bfloat16, generator=g)
            v = torch.randn(slots, hk, length, d, device=device, dtype=torch.bfloat16, generator=g)
            q = torch.randn(len(blocks) * BLOCK, h, d, device=device, dtype=torch.bfloat16, generator=g)
            meta = [torch.tensor(col, device=device, dtype=torch.int32) for col in zip(*blocks)]
            ref = chunk_attention_reference(q, k, v, *meta, d ** -0.5)
            got = chunk_attention_triton(q, k, v, *meta, d ** -0.5)
            real = torch.cat([torch.arange(BLOCK, device=device) < n for _, _, n in blocks])
            err = ((got[real].float() - ref[real].float()).norm() / ref[real].float().norm()).item()
            if not err <= 2e-2:
                log.warning("Triton chunk attention disagrees with the reference (rel. error %.3g); mixed steps off",
                            err)
                return False
        return True
    except Exception:  # no Triton, no compiler: prompts are prefilled in separate forwards
        log.exception("Triton chunk attention unavailable; mixed steps off")
        return False


def fp8_cache_works(device) -> bool:
    """Both Triton kernels reading an fp8 (e4m3) K/V cache, against the references on the same values upcast to
    bf16; False if either disagrees or cannot run."""
    import torch

    from model.fused import slot_attention, triton_decode_attention

    try:
        g = torch.Generator(device=device).manual_seed(1)
        slots, heads, length, d = 4, 8, 640, 128
        k = torch.randn(slots, heads, length, d, device=device, generator=g).to(torch.float8_e4m3fn)
        v = torch.randn(slots, heads, length, d, device=device, generator=g).to(torch.float8_e4m3fn)
        k16, v16 = k.to(torch.bfloat16), v.to(torch.bfloat16)
        q = torch.randn(slots, heads, 1, d, device=device, dtype=torch.bfloat16, generator=g)
        lengths = torch.tensor([1, 100, 333, 640], device=device, dtype=torch.int32)
        mask = (torch.arange(length, device=device)[None] < lengths[:, None]).view(slots, 1, 1, length)
        ref, _ = slot_attention(None, q, k16, v16, mask, scaling=d ** -0.5)
        got = triton_decode_attention(q, k, v, lengths, d ** -0.5)
        errs = [((got.float() - ref.float()).norm() / ref.float().norm()).item()]
        blocks = [(3, 0, BLOCK), (3, BLOCK, 9), (1, 600, BLOCK)]
        meta = [torch.tensor(col, device=device, dtype=torch.int32) for col in zip(*blocks)]
        qc = torch.randn(len(blocks) * BLOCK, heads, d, device=device, dtype=torch.bfloat16, generator=g)
        ref = chunk_attention_reference(qc, k16, v16, *meta, d ** -0.5)
        got = chunk_attention_triton(qc, k, v, *meta, d ** -0.5)
        real = torch.cat([torch.arange(BLOCK, device=device) < n for _, _, n in blocks])
        errs.append(((got[real].float() - ref[real].float()).norm() / ref[real].float().norm()).item())
        if not max(errs) <= 2e-2:
            log.warning("Triton attention on an fp8 cache disagrees with the reference (rel. errors %s)", errs)
            return False
        return True
    except Exception:
        log.exception("Triton attention on an fp8 cache unavailable")
        return False
