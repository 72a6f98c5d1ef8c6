"""Padding-free attention for training: packed examples attend only within themselves, and no mask is built.

With padding-free packing several examples share one row, told apart by their position ids (each restarts at 0).
transformers' SDPA path honours that by building an explicit block-diagonal mask, which rules out the
flash-attention kernel and costs a (batch, 1, seq, seq) tensor per step. This module registers an attention
implementation, `varlen`, that instead hands the packed tokens with their example boundaries (cumulative
lengths) to PyTorch's own flash-attention variable-length kernel (`torch.nn.attention.varlen.varlen_attn`,
PyTorch >= 2.10, CUDA, fp16/bf16). Nothing beyond PyTorch is needed: no flash-attn package.

Where that kernel cannot run (CPU, fp32, an older PyTorch) the same boundaries drive SDPA with the equivalent
block-diagonal mask, so the result is the same everywhere; `self_check()` compares the two paths, forward and
backward, on the GPU before a run relies on the fast one.

    from training import attention
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation=attention.register())
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

NAME = "varlen"
_last: tuple[Any, Any, Any] | None = None  # (position_ids, attention_mask, layout): one layout per forward


def boundaries(position_ids, attention_mask=None, batch: int | None = None):
    """(valid, cu_seqlens, max_len) for a (batch, seq) batch: `valid` marks real tokens (None = all), `cu_seqlens`
    the int32 cumulative lengths of the examples over the flattened real tokens. An example starts at each row's
    first real token and wherever the position does not continue the previous one (as transformers'
    `find_packed_sequence_indices` decides)."""
    import torch

    if batch is not None and position_ids.shape[0] != batch:  # transformers may pass (1, seq) for the whole batch
        position_ids = position_ids.expand(batch, -1)
    b, s = position_ids.shape
    start = torch.ones_like(position_ids, dtype=torch.bool)
    start[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    valid = None
    if attention_mask is not None and not bool(attention_mask.all()):
        valid = attention_mask.bool()
        start[:, 1:] |= ~valid[:, :-1]  # the first real token after padding starts an example
        start = start & valid
    flat_start = start.reshape(-1) if valid is None else start[valid]
    idx = torch.nonzero(flat_start).flatten()
    total = flat_start.numel()
    cu = torch.cat([idx, idx.new_tensor([total])]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
    return valid, cu, max_len


def _layout(position_ids, attention_mask, batch: int):
    global _last
    if _last is not None and _last[0] is position_ids and _last[1] is attention_mask:
        return _last[2]
    layout = boundaries(position_ids, attention_mask, batch)
    _last = (position_ids, attention_mask, layout)
    return layout


@functools.cache
def _varlen_kernel():
    """PyTorch's varlen flash attention as fn(q, k, v, cu, max_len, scale), causal; None where it is missing.
    Looked up once: it is called for every layer of every forward."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    if "window_size" in inspect.signature(varlen_attn).parameters:  # PyTorch >= 2.10: causal = no keys to the right
        return lambda q, k, v, cu, n, scale: varlen_attn(q, k, v, cu, cu, n, n, scale=scale, window_size=(-1, 0))
    return lambda q, k, v, cu, n, scale: varlen_attn(q, k, v, cu, cu, n, n, is_causal=True)  # PyTorch 2.9


def _masked_sdpa(q, k, v, cu, scale):
    """The reference path: SDPA over the flattened tokens with a block-diagonal causal mask (q, k, v: T, H, D)."""
    import torch

    t = q.shape[0]
    seq = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=q.device), (cu[1:] - cu[:-1]).long())
    pos = torch.arange(t, device=q.device)
    mask = (seq[:, None] == seq[None, :]) & (pos[:, None] >= pos[None, :])
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask, scale=scale)
    return out[0].transpose(0, 1)


def packed_attention(q, k, v, cu, max_len, scale, force_reference: bool = False):
    """Causal attention within each example of packed (T, H, D) tokens."""
    import torch

    fn = None if force_reference else _varlen_kernel()
    if fn is not None and q.is_cuda:
        dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else (
            torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16)
        return fn(q.to(dtype), k.to(dtype), v.to(dtype), cu, max_len, scale)
    return _masked_sdpa(q, k, v, cu, scale)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             position_ids=None, **kwargs):
    """transformers attention interface: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    import torch

    b, h, s, d = query.shape
    if key.shape[2] != s:
        raise ValueError("varlen attention is for training forwards (no KV cache): queries and keys must align")
    if key.shape[1] != h:  # grouped-query attention: repeat the key/value heads
        rep = h // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    if position_ids is None:
        position_ids = torch.arange(s, device=query.device)[None]
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("varlen attention takes a 2D padding mask (or none), not a 4D one")
    valid, cu, max_len = _layout(position_ids, attention_mask, b)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (b, s, h, d)
    if valid is None:
        out = packed_attention(q.reshape(b * s, h, d), k.reshape(b * s, h, d), v.reshape(b * s, h, d), cu, max_len,
                               scaling)
        return out.reshape(b, s, h, d), None
    out = packed_attention(q[valid], k[valid], v[valid], cu, max_len, scaling)
    full = out.new_zeros(b, s, h, d)
    full[valid] = out
    return full, None


def register() -> str:
    """Register `varlen` with transformers (attention and its mask creation) and return the name to load with."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    # Like flash attention: no 4D mask; the 2D padding mask (if any) passes through to the attention function.
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)
    return NAME


def self_check(device: str = "cuda", atol: float = 2e-2) -> bool:
    """The fast kernel against the masked-SDPA reference on ragged random bf16 data, forward and gradients."""
    import torch

    if _varlen_kernel() is None:
        return False
    g = torch.Generator(device="cpu").manual_seed(0)
    lens = [37, 256, 5, 700, 1, 1049]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    t, h, d = sum(lens), 8, 128
    base = [torch.randn(t, h, d, generator=g).to(device, torch.bfloat16) for _ in range(3)]
    grads = []
    outs = []
    for ref in (False, True):
        q, k, v = (x.clone().requires_grad_(True) for x in base)
        out = packed_attention(q, k, v, cu, max(lens), d ** -0.5, force_reference=ref)
        out.float().square().sum().backward()
        outs.append(out.detach().float())
        grads.append([x.grad.float() for x in (q, k, v)])
    ok = torch.allclose(outs[0], outs[1], atol=atol, rtol=atol) and all(
        torch.allclose(a, b, atol=atol * 10, rtol=atol) for a, b in zip(grads[0], grads[1]))
    if not ok:
        log.warning("varlen attention disagrees with the masked reference: max |diff| %.4f",
                    float((outs[0] - outs[1]).abs().max()))
    return ok
