"""What the OpenAI-compatible engine costs on the client side, and what concurrency buys.

    .venv/bin/python benchmarks/openai_engine.py [--requests 64] [--chunk-delay-ms 20]

A fake vLLM-style server on loopback (tests/model/openai_fake.py) streams a 16-piece answer with a fixed delay per
piece, standing in for a server's decode step; the engine renders real prompts with SmolLM2's tokenizer and parses
the SSE stream. Baseline: concurrency 1 (one completion at a time), measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.loading import ModelSpec  # noqa: E402
from model.openai_engine import OpenAIEngine  # noqa: E402
from model.schema import GenerationRequest, SamplingParams, Turn  # noqa: E402
from tests.model.openai_fake import REPLY, FakeOpenAI  # noqa: E402


def serve(delay_s: float) -> tuple[FakeOpenAI, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    fake = asyncio.run_coroutine_threadsafe(FakeOpenAI(chunk_delay_s=delay_s).start(), loop).result()
    return fake, loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--chunk-delay-ms", type=float, default=20.0)
    args = ap.parse_args()
    fake, _loop = serve(args.chunk_delay_ms / 1000)
    history = [Turn(role="user", content="I have been feeling low for weeks."),
               Turn(role="assistant", content="I'm sorry you've been carrying that. What has it been like?")]
    reqs = [GenerationRequest(message=f"Work is piling up and I can't sleep ({i}).", history=history,
                              sampling=SamplingParams(max_new_tokens=64)) for i in range(args.requests)]
    pieces = len(REPLY.split(" "))
    t0 = time.perf_counter()
    base = OpenAIEngine.from_spec(ModelSpec(adapter=None), fake.base_url, "counsel")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in reqs:
        base.body_for(r)
    render_ms = (time.perf_counter() - t0) / len(reqs) * 1000

    print(f"{args.requests} requests, {pieces} streamed pieces each, {args.chunk_delay_ms:.0f} ms per piece; "
          f"tokenizer load {load_s:.2f} s; prompt rendering {render_ms:.2f} ms/request")
    print(f"{'concurrency':>11} | {'wall s':>7} | {'requests/s':>10} | {'pieces/s':>8} | {'vs baseline':>11}")
    print("-" * 60)
    baseline = None
    for conc in (1, 4, 16, 64):
        engine = OpenAIEngine(base.tokenizer, fake.base_url, "counsel", concurrency=conc,
                              max_context=base.max_context)
        fake.max_in_flight = 0
        deltas = 0

        def on_delta(_rid: str, _d: str) -> None:
            nonlocal deltas
            deltas += 1

        t0 = time.perf_counter()
        results = engine.generate(reqs, on_delta)
        wall = time.perf_counter() - t0
        assert all(r.ok and r.text == REPLY for r in results), [r.error for r in results if not r.ok][:3]
        assert deltas == pieces * len(reqs)
        rps = len(reqs) / wall
        baseline = baseline or rps
        label = "(baseline)" if conc == 1 else f"{rps / baseline:.1f}x"
        print(f"{conc:>11} | {wall:>7.2f} | {rps:>10.1f} | {deltas / wall:>8.0f} | {label:>11}")


if __name__ == "__main__":
    main()
