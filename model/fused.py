"""Fewer, larger kernels for decoding on a GPU: RMSNorm, rotary embedding and SiLU*up each become one compiled
(Triton) kernel instead of 5-12 eager ones. At batch 1 a 7B decode step is ~1,500 tiny kernels, and inside a CUDA
graph each still costs a few microseconds, so this is most of what separates a graph-replayed step from the
memory-bandwidth floor. Same arithmetic (float32 inside the norm), compiled once with dynamic shapes.
"""

from __future__ import annotations

import logging
import sys
import types

log = logging.getLogger(__name__)
_compiled: dict[str, object] = {}


def _kernels():
    import torch

    if not _compiled:
        def rms_norm(x, weight, eps: float):
            dtype = x.dtype
            h = x.to(torch.float32)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
            return weight * h.to(dtype)

        def silu_mul(g, u):
            return torch.nn.functional.silu(g) * u

        def rotary(q, k, cos, sin, unsqueeze_dim: int = 1):
            cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)

            def rot(x):
                half = x.shape[-1] // 2
                return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

            return (q * cos) + (rot(q) * sin), (k * cos) + (rot(k) * sin)

        for name, fn in (("rms_norm", rms_norm), ("silu_mul", silu_mul), ("rotary", rotary)):
            _compiled[name] = torch.compile(fn, dynamic=True)
    return _compiled


def fuse_small_ops(model) -> int:
    """Patch a Llama-family model in place (instances, plus the rotary helper of its modeling module).
    Returns the number of modules patched."""
    k = _kernels()
    n = 0
    for mod in model.modules():
        cls = type(mod).__name__
        if cls.endswith("RMSNorm") and hasattr(mod, "variance_epsilon"):
            def norm_forward(self, x, _f=k["rms_norm"]):
                return _f(x, self.weight, self.variance_epsilon)
            mod.forward = types.MethodType(norm_forward, mod)
            n += 1
        elif cls.endswith("MLP") and all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj")) \
                and getattr(getattr(mod, "config", None), "hidden_act", "silu") == "silu":
            def mlp_forward(self, x, _f=k["silu_mul"]):
                return self.down_proj(_f(self.gate_proj(x), self.up_proj(x)))
            mod.forward = types.MethodType(mlp_forward, mod)
            n += 1
        elif cls.endswith("Attention") and hasattr(mod, "q_proj"):
            modeling = sys.modules[type(mod).__module__]
            if hasattr(modeling, "apply_rotary_pos_emb"):
                modeling.apply_rotary_pos_emb = k["rotary"]
    log.info("fused small ops in %d modules", n)
    return n


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """Decoding (one query per row) over a slot cache: two batched matrix-vector products that read each K/V row
    once, with the boolean mask applied to the scores. Anything else goes to transformers' SDPA function."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if query.shape[2] != 1 or attention_mask is None or attention_mask.dtype != torch.bool:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    scores = scores.masked_fill(~attention_mask, float("-inf"))
    probs = scores.softmax(-1).to(value.dtype)
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), None


def use_slot_attention(model) -> None:
    from transformers import AttentionInterface

    AttentionInterface.register("slot_sdpa", slot_attention)
    model.config._attn_implementation = "slot_sdpa"
    log.info("decode attention: batched matrix-vector products over the slot cache")
