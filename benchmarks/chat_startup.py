"""What `make chat` costs on this machine: model load (cached conversion), first reply, tokens/s of one stream.

    .venv/bin/python benchmarks/chat_startup.py [--tokens 128]

Baseline in the same run: the base model without the adapter. Prints a table.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def measure(adapter: str, tokens: int) -> dict:
    from model.engine import Engine
    from model.loading import ModelSpec
    from model.schema import GenerationRequest, SamplingParams

    t0 = time.perf_counter()
    engine = Engine.from_spec(ModelSpec(adapter=adapter))
    load_s = time.perf_counter() - t0
    req = GenerationRequest(message="I feel anxious before every exam and can't sleep. What can I do?",
                            sampling=SamplingParams(temperature=0.0, max_new_tokens=tokens, repetition_penalty=1.1))
    engine.generate([req.model_copy(update={"sampling": req.sampling.model_copy(update={"max_new_tokens": 4})})])
    res = engine.generate([req])[0]
    return {"load_s": load_s, "ttft_s": res.first_token_seconds or 0.0, "tokens": res.completion_tokens,
            "tok_s": res.completion_tokens / res.generation_seconds, "dtype": engine.description["dtype"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    rows = [("base SmolLM2 (baseline)", measure("none", args.tokens)),
            ("base + shipped adapter, merged (make chat)", measure("default", args.tokens))]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| model | load s | first token s | tokens | tokens/s | dtype |")
    print("|---|---:|---:|---:|---:|---|")
    for name, m in rows:
        print(f"| {name} | {m['load_s']:.1f} | {m['ttft_s']:.2f} | {m['tokens']} | {m['tok_s']:.1f} | {m['dtype']} |")
    ratio = rows[1][1]["tok_s"] / rows[0][1]["tok_s"]
    print(f"adapter / baseline tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
