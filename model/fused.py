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


def fuse_projections(model) -> int:
    """One matrix product instead of three for q/k/v and one instead of two for gate/up, in every Llama-family
    layer whose projections are plain `nn.Linear` of one dtype (a merged bf16 model; never 4-bit or unmerged LoRA
    layers). At batch 1 each product is a matrix-vector pass over its weights, so fewer, larger ones launch fewer
    kernels and stream the weights at a higher rate. The weights are moved, not copied (no extra memory), and the
    attention code is unchanged: the new q_proj returns q and keeps k and v for k_proj and v_proj, which Llama's
    attention calls right after it. Idempotent. Returns the number of layers fused."""
    import torch
    from torch import nn

    class FusedQKV(nn.Module):
        def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear):
            super().__init__()
            self.sizes = (q.out_features, k.out_features, v.out_features)
            self.weight = nn.Parameter(torch.cat([q.weight, k.weight, v.weight]).detach(), requires_grad=False)
            biases = [m.bias for m in (q, k, v)]
            self.bias = None if biases[0] is None else nn.Parameter(torch.cat(biases).detach(), requires_grad=False)
            self.parts = None

        def forward(self, x):
            q, k, v = torch.nn.functional.linear(x, self.weight, self.bias).split(self.sizes, -1)
            self.parts = (k, v)
            return q

    class Part(nn.Module):
        def __init__(self, owner: FusedQKV, index: int):
            super().__init__()
            self._owner = [owner]  # not a submodule: the weights are registered once, under q_proj
            self.index = index

        def forward(self, x):
            return self._owner[0].parts[self.index]

    def plain(*mods) -> bool:
        return all(type(m) is nn.Linear for m in mods) and len({m.weight.dtype for m in mods}) == 1

    n = 0
    for mod in list(model.modules()):
        if all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj")) and plain(mod.q_proj, mod.k_proj, mod.v_proj):
            fused = FusedQKV(mod.q_proj, mod.k_proj, mod.v_proj)
            mod.q_proj, mod.k_proj, mod.v_proj = fused, Part(fused, 0), Part(fused, 1)
            n += 1
        if all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj")) and plain(mod.gate_proj, mod.up_proj) \
                and mod.gate_proj.bias is None and getattr(mod, "act_fn", None) is not None:
            gate_up = nn.Linear(mod.gate_proj.in_features, 2 * mod.gate_proj.out_features, bias=False,
                                device="meta")
            gate_up.weight = nn.Parameter(torch.cat([mod.gate_proj.weight, mod.up_proj.weight]).detach(),
                                          requires_grad=False)
            mod.gate_up_proj = gate_up
            del mod.gate_proj, mod.up_proj

            def mlp_forward(self, x, _mul=_act_mul(mod)):
                g, u = self.gate_up_proj(x).chunk(2, -1)
                return self.down_proj(_mul(g, u))

            mod.forward = mlp_forward.__get__(mod)
    log.info("fused q/k/v and gate/up projections in %d layers", n)
    return n


def _act_mul(mlp):
    """act(gate) * up for this MLP: the compiled SiLU kernel when fuse_small_ops ran (same arithmetic), else the
    module's own activation."""
    if getattr(getattr(mlp, "config", None), "hidden_act", None) == "silu" and "silu_mul" in _compiled:
        return _compiled["silu_mul"]
    return lambda g, u: mlp.act_fn(g) * u


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
# Flash-decoding: each (row, head) is split into chunks of the context that run in parallel (so one conversation
# still fills the GPU), each chunk keeps a running max / sum / weighted V over its valid positions only, and a second
# kernel merges the chunks. The chunk count is fixed per captured graph (its batch and length bucket); chunks past a
# row's length do no reads.
_triton_kernels = None
SLOT_LENGTHS = {}  # id(model config) -> lengths [B] int32 of the decode step being built (set by model.slots)


def _build_triton_kernels():
    import triton
    import triton.language as tl

    @triton.autotune(  # tried once per (chunk, group) outside any CUDA graph (the engine warms up first); the
        # chunk count and head count are runtime values, so other lengths and batches reuse the choice and compile
        configs=[triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=st)
                 for bn, w, st in ((32, 2, 2), (64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 2), (64, 2, 3),
                                   (128, 4, 3), (128, 8, 3), (64, 4, 4), (32, 4, 4))],  # deeper pipelines: session 6
        key=["CHUNK", "GROUP"])
    @triton.jit
    def split_attn(Q, K, V, Lens, MidO, MidL, sm_scale, s_qb, s_qh, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt, H, S,
                   GROUP: tl.constexpr, CHUNK: tl.constexpr,
                   BLOCK_N: tl.constexpr, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        sp = tl.program_id(2)
        hk = h // GROUP
        length = tl.load(Lens + b)
        start = sp * CHUNK
        end = tl.minimum(start + CHUNK, length)
        d = tl.arange(0, D)
        mid = (b * H + h) * S + sp
        if start < length:
            q = tl.load(Q + b * s_qb + h * s_qh + d).to(tl.float32) * sm_scale
            m_i = tl.full((), float("-inf"), tl.float32)
            l_i = tl.full((), 0.0, tl.float32)
            acc = tl.zeros((D,), tl.float32)
            for off in range(0, CHUNK, BLOCK_N):
                n = start + off + tl.arange(0, BLOCK_N)
                valid = n < end
                k = tl.load(K + b * s_kb + hk * s_kh + n[:, None] * s_kt + d[None, :], mask=valid[:, None],
                            other=0.0)
                s = tl.sum(k.to(tl.float32) * q[None, :], 1)
                s = tl.where(valid, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 0))
                p = tl.exp(s - m_new)
                alpha = tl.exp(m_i - m_new)
                v = tl.load(V + b * s_vb + hk * s_vh + n[:, None] * s_vt + d[None, :], mask=valid[:, None],
                            other=0.0)
                acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
                l_i = l_i * alpha + tl.sum(p, 0)
                m_i = m_new
            tl.store(MidO + mid * D + d, acc / l_i)
            tl.store(MidL + mid, m_i + tl.log(l_i))
        else:
            tl.store(MidO + mid * D + d, tl.zeros((D,), tl.float32))
            tl.store(MidL + mid, float("-inf"))

    @triton.jit
    def merge(MidO, MidL, Out, s_ob, s_oh, H, S, SP: tl.constexpr, D: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        d = tl.arange(0, D)
        sp = tl.arange(0, SP)
        base = (b * H + h) * S
        lse = tl.load(MidL + base + sp, mask=sp < S, other=float("-inf"))
        w = tl.exp(lse - tl.max(lse, 0))  # chunk 0 always holds position 0, so the max is finite
        o = tl.load(MidO + (base + sp[:, None]) * D + d[None, :], mask=(sp < S)[:, None], other=0.0)
        out = tl.sum(w[:, None] * o, 0) / tl.sum(w, 0)
        tl.store(Out + b * s_ob + h * s_oh + d, out.to(Out.dtype.element_ty))

    return split_attn, merge


def split_chunk(batch: int, heads: int, length: int) -> int:
    """Context positions per program: small enough that batch x heads x chunks fills the GPU a few times over, at
    least 64 (one block), at most 512."""
    import math

    want = max(1, 4 * 132 // max(1, batch * heads))  # ~4 programs per streaming multiprocessor (H100: 132)
    chunk = 64
    while chunk < 512 and math.ceil(length / chunk) > want:
        chunk *= 2
    return chunk


def triton_decode_attention(query, key, value, lengths, scale: float):
    """query [B,H,1,D], key/value [B,Hkv,L,D] (any strides, last dim contiguous), lengths [B] int32 (1..L):
    returns [B,1,H,D]; positions >= lengths[b] are never read."""
    import math

    import torch

    global _triton_kernels
    if _triton_kernels is None:
        _triton_kernels = _build_triton_kernels()
    split_attn, merge = _triton_kernels
    b, h, _, d = query.shape
    length = key.shape[2]
    chunk = split_chunk(b, h, length)
    s = math.ceil(length / chunk)
    mid_o = torch.empty((b, h, s, d), dtype=torch.float32, device=query.device)
    mid_l = torch.empty((b, h, s), dtype=torch.float32, device=query.device)
    split_attn[(b, h, s)](query, key, value, lengths, mid_o, mid_l, scale,
                          query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
                          value.stride(0), value.stride(1), value.stride(2), h, s,
                          GROUP=h // key.shape[1], CHUNK=chunk, D=d)
    out = torch.empty((b, 1, h, d), dtype=query.dtype, device=query.device)
    merge[(b, h)](mid_o, mid_l, out, out.stride(0), out.stride(2), h, s, SP=max(2, triton_next_pow2(s)), D=d,
                  num_warps=4)
    return out


def triton_next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def triton_slot_attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    import torch

    if query.shape[2] != 1 or attention_mask is None or attention_mask.dtype != torch.bool:
        return slot_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    lengths = SLOT_LENGTHS.get(id(module.config)) if module is not None else None
    if lengths is None or lengths.shape[0] != query.shape[0]:  # masks are valid prefixes
        lengths = attention_mask.view(query.shape[0], -1).sum(-1, dtype=torch.int32)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return triton_decode_attention(query, key, value, lengths, scale), None


def triton_attention_works(device) -> bool:
    """Self-check against the matrix-product attention on random data (ragged lengths); False if it fails."""
    import torch

    try:
        g = torch.Generator(device=device).manual_seed(0)
        # (batch, heads, kv heads, bucket length, lengths): many chunks per row, empty chunks, grouped K/V heads
        cases = [(5, 4, 4, 300, [1, 17, 64, 65, 300]), (1, 32, 32, 1280, [777]), (3, 8, 2, 512, [512, 200, 3]),
                 (64, 32, 32, 1024, [1 + (37 * i) % 1024 for i in range(64)])]
        for b, h, hk, length, lens in cases:
            d = 128
            q = torch.randn(b, h, 1, d, device=device, dtype=torch.bfloat16, generator=g)
            k = torch.randn(b, hk, length + 20, d, device=device, dtype=torch.bfloat16, generator=g)[:, :, :length]
            v = torch.randn(b, hk, length + 20, d, device=device, dtype=torch.bfloat16, generator=g)[:, :, :length]
            lens_t = torch.tensor(lens, device=device)
            mask = (torch.arange(length, device=device)[None] < lens_t[:, None]).view(b, 1, 1, length)
            ref, _ = slot_attention(None, q, k, v, mask, scaling=d ** -0.5)
            got, _ = triton_slot_attention(None, q, k, v, mask, scaling=d ** -0.5)
            err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
            if not err <= 2e-2:
                log.warning("Triton decode attention disagrees with the reference (rel. error %.3g at batch %d, "
                            "length %d); not used", err, b, length)
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
