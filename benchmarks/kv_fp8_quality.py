"""What an fp8 (e4m3) K/V cache costs in quality, on CPU: perplexity of the therapists' reference answers on the
held-out questions (the eval's own perplexity, `training.metrics.reference_nll`), with the model's attention reading
K/V as stored (the model's dtype) and rounded through float8 e4m3 without a scale (as
`COUNSEL_KV_CACHE_DTYPE=fp8` stores them), for the base SmolLM2 and the shipped adapter.

    python benchmarks/kv_fp8_quality.py [--limit 100]      # ~10 min a pass on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from model.engine import Engine
    from model.loading import ModelSpec
    from model.prompt import training_example
    from training import metrics as M
    from training.evaluate import EvalConfig, held_out_questions

    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100, help="held-out questions (each with all its answers)")
    args = ap.parse_args()

    def fp8_kv(module, query, key, value, mask, **kw):
        key = key.to(torch.float8_e4m3fn).to(query.dtype)
        value = value.to(torch.float8_e4m3fn).to(query.dtype)
        return sdpa_attention_forward(module, query, key, value, mask, **kw)

    AttentionInterface.register("sdpa_fp8kv", fp8_kv)
    questions, refs = held_out_questions(EvalConfig(limit=args.limit))
    rows = []
    for label, spec in (("base", ModelSpec(adapter=None)), ("adapter", ModelSpec())):
        engine = Engine.from_spec(spec)
        pairs = [(ex["prompt"], ex["completion"]) for q in questions for r in q.references
                 for ex in [training_example(engine.tokenizer, q.text, refs[r])]]
        ppl = {}
        for impl in ("sdpa", "sdpa_fp8kv"):
            engine.model.config._attn_implementation = impl
            t0 = time.perf_counter()
            with torch.inference_mode():  # one forward per answer: every K/V the attention reads went through fp8
                sums, counts = M.reference_nll(engine.model, engine.tokenizer, pairs, share_prefix=False)
            ppl[impl] = M.perplexity(sums, counts)
            print(f"{label} {impl}: perplexity {ppl[impl]:.3f} ({len(pairs)} answers, {sum(counts)} tokens, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
        engine.model.config._attn_implementation = "sdpa"
        rows.append((label, ppl["sdpa"], ppl["sdpa_fp8kv"]))
    print("\n| model | K/V as stored | K/V through fp8 e4m3 | change |\n| --- | --- | --- | --- |")
    for label, a, b in rows:
        print(f"| {label} | {a:.3f} | {b:.3f} | {100 * (b / a - 1):+.1f}% |")


if __name__ == "__main__":
    main()
