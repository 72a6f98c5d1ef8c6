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


# --- decode attention that reads only each row's valid K/V (Triton; CUDA only) --------------------------------------
_triton_kernel = None


def _build_triton_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def decode_attn(Q, K, V, Out, Lens, sm_scale, s_qb, s_qh, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, s_ob, s_oh,
                    GROUP: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        hk = h // GROUP
        length = tl.load(Lens + b)
        d = tl.arange(0, D)
        q = tl.load(Q + b * s_qb + h * s_qh + d).to(tl.float32) * sm_scale
        m_i = tl.full((), float("-inf"), tl.float32)
        l_i = tl.full((), 0.0, tl.float32)
        acc = tl.zeros((D,), tl.float32)
        for start in range(0, length, BLOCK_N):
            n = start + tl.arange(0, BLOCK_N)
            valid = n < length
            k = tl.load(K + b * s_kb + hk * s_kh + n[:, None] * s_kt + d[None, :], mask=valid[:, None], other=0.0)
            s = tl.sum(k.to(tl.float32) * q[None, :], 1)
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 0))
            p = tl.exp(s - m_new)
            alpha = tl.exp(m_i - m_new)
            v = tl.load(V + b * s_vb + hk * s_vh + n[:, None] * s_vt + d[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
            l_i = l_i * alpha + tl.sum(p, 0)
            m_i = m_new
        tl.store(Out + b * s_ob + h * s_oh + d, (acc / l_i).to(Out.dtype.element_ty))

    return decode_attn


def triton_decode_attention(query, key, value, lengths, scale: float):
    """query [B,H,1,D], key/value [B,Hkv,L,D] (any strides, last dim contiguous), lengths [B] int32 (>= 1):
    returns [B,1,H,D]; positions >= lengths[b] are never read."""
    import torch

    global _triton_kernel
    if _triton_kernel is None:
        _triton_kernel = _build_triton_kernel()
    b, h, _, d = query.shape
    out = torch.empty((b, 1, h, d), dtype=query.dtype, device=query.device)
    _triton_kernel[(b, h)](query, key, value, out, lengths, scale,
                           query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
                           value.stride(0), value.stride(1), value.stride(2), out.stride(0), out.stride(2),
                           GROUP=h // key.shape[1], BLOCK_N=64, D=d, num_warps=4)
    return out


def triton_slot_attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    import torch

    if query.shape[2] != 1 or attention_mask is None or attention_mask.dtype != torch.bool:
        return slot_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    lengths = attention_mask.view(query.shape[0], -1).sum(-1, dtype=torch.int32)  # masks are valid prefixes
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return triton_decode_attention(query, key, value, lengths, scale), None


def triton_attention_works(device) -> bool:
    """Self-check against the matrix-product attention on random data (ragged lengths); False if it fails."""
    import torch

    try:
        g = torch.Generator(device=device).manual_seed(0)
        b, h, length, d = 5, 4, 300, 128
        q = torch.randn(b, h, 1, d, device=device, dtype=torch.bfloat16, generator=g)
        k = torch.randn(b, h, length + 20, d, device=device, dtype=torch.bfloat16, generator=g)[:, :, :length]
        v = torch.randn(b, h, length + 20, d, device=device, dtype=torch.bfloat16, generator=g)[:, :, :length]
        lens = torch.tensor([1, 17, 64, 65, 300], device=device)
        mask = (torch.arange(length, device=device)[None] < lens[:, None]).view(b, 1, 1, length)
        ref, _ = slot_attention(None, q, k, v, mask, scaling=d ** -0.5)
        got, _ = triton_slot_attention(None, q, k, v, mask, scaling=d ** -0.5)
        err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        if err > 2e-2:
            log.warning("Triton decode attention disagrees with the reference (rel. error %.3g); not used", err)
            return False
        return True
    except Exception:  # no Triton, no compiler: the matrix-product attention serves
        log.exception("Triton decode attention unavailable")
        return False


def use_triton_slot_attention(model) -> None:
    from transformers import AttentionInterface

    AttentionInterface.register("slot_triton", triton_slot_attention)
    model.config._attn_implementation = "slot_triton"
    log.info("decode attention: Triton kernel reading only each row's valid K/V")
