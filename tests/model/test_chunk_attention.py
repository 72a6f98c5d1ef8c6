"""Mixed steps' pieces on hand-built cases: how waiting prompts are cut into a chunk, and the chunk attention (the
matrix-product reference, and the Triton kernel run by Triton's CPU interpreter) against attention computed token by
token. The engine itself is checked end to end on SmolLM2 in test_serving_modes.py."""

from __future__ import annotations

from pathlib import Path

from model.chunk_attention import BLOCK, chunk_attention_reference
from model.slots import plan_chunk


def test_plan_chunk_fills_whole_blocks_in_arrival_order():
    # several prompts in one chunk, each piece taking whole blocks of 32
    assert plan_chunk([40, 10, 5], budget=128, block=32) == [40, 10, 5]  # 64 + 32 + 32 = 128
    # one does not fit whole: it gets whole blocks only, and the prompts after it wait
    assert plan_chunk([40, 10, 100], budget=128, block=32) == [40, 10, 32]
    assert plan_chunk([300, 5], budget=128, block=32) == [128]
    # a budget left smaller than a block takes nothing more
    assert plan_chunk([64, 64, 1], budget=128, block=32) == [64, 64]
    # budgets round down to whole blocks; nothing waiting, nothing planned
    assert plan_chunk([100], budget=100, block=32) == [96]
    assert plan_chunk([], budget=128, block=32) == []


def _case(dtype, heads=4, kv_heads=2, dim=64, slots=3, length=200):
    """Random cache and queries; blocks of slot 2 (a prompt's first block, then 17 tokens of its second), slot 0 far
    into its cache, slot 1 with 5 tokens, and a padding block."""
    import torch

    g = torch.Generator().manual_seed(0)
    blocks = [(2, 0, BLOCK), (2, BLOCK, 17), (0, 100, BLOCK), (1, 0, 5), (0, 0, 0)]
    k = torch.randn(slots, kv_heads, length, dim, generator=g).to(dtype)
    v = torch.randn(slots, kv_heads, length, dim, generator=g).to(dtype)
    q = torch.randn(len(blocks) * BLOCK, heads, dim, generator=g).to(dtype)
    meta = [torch.tensor(col, dtype=torch.int32) for col in zip(*blocks)]
    return q, k, v, meta, blocks


def _token_by_token(q, k, v, blocks):
    """Each real token attends over its slot's positions [0, its position], one softmax at a time."""
    import torch

    heads, dim = q.shape[1], q.shape[2]
    groups = heads // k.shape[1]
    out, rows = [], []
    for b, (slot, start, n) in enumerate(blocks):
        for i in range(n):
            t, p = b * BLOCK + i, start + i
            per_head = []
            for h in range(heads):
                keys, values = k[slot, h // groups, : p + 1].double(), v[slot, h // groups, : p + 1].double()
                w = (keys @ q[t, h].double() * dim ** -0.5).softmax(0)
                per_head.append(w @ values)
            out.append(torch.stack(per_head))
            rows.append(t)
    return torch.stack(out), rows


def test_reference_chunk_attention_matches_token_by_token_attention():
    import torch

    q, k, v, meta, blocks = _case(torch.float32)
    expected, rows = _token_by_token(q, k, v, blocks)
    got = chunk_attention_reference(q, k, v, *meta, q.shape[-1] ** -0.5)
    assert got.shape == q.shape and torch.isfinite(got).all()  # padding rows too: finite, unused
    torch.testing.assert_close(got[rows].double(), expected, atol=1e-5, rtol=1e-5)


def test_triton_chunk_kernel_matches_token_by_token_attention_in_the_interpreter(tmp_path):
    """The kernel's indexing, masking and online softmax, run by Triton's CPU interpreter in float32 (the interpreter
    computes bf16 dot products wrongly; bf16 on a GPU is checked by `chunk_kernel_works` at engine start). In a
    process of its own: the interpreter must be switched on before anything imports Triton."""
    import os
    import subprocess
    import sys

    import torch

    q, k, v, meta, blocks = _case(torch.float32)
    expected, rows = _token_by_token(q, k, v, blocks)
    torch.save((q, k, v, meta), tmp_path / "case.pt")
    code = ("import sys, torch; from model.chunk_attention import chunk_attention_triton as f; "
            "q, k, v, meta = torch.load(sys.argv[1]); torch.save(f(q, k, v, *meta, q.shape[-1] ** -0.5), sys.argv[2])")
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "case.pt"), str(tmp_path / "out.pt")], cwd=repo,
                   env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(repo)}, check=True, timeout=240)
    got = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(got[rows].double(), expected, atol=1e-5, rtol=1e-5)
    assert (got[4 * BLOCK:] == 0).all()  # the padding block writes zeros
