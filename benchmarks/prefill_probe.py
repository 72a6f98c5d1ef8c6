"""Where a prefill goes in the static engine, on the GPU: the forward of one ~900-token prompt (wall time with the
engine's attention and with transformers' SDPA, and a torch.profiler table of GPU vs host time), then the whole
admission path for 1, 4 and 8 prompts (prefill, K/V copy into the slot cache, first token). Llama-2-7B shape with
random weights, as in benchmarks/serving.py. Uses the engine's internals: a probe, not an interface.

    python3 benchmarks/prefill_probe.py      # on the GPU host
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.common import load_tokenizer, random_model
    from benchmarks.serving import NO_EOS, add_lora, conversations, loaded
    from model.engine import Engine
    from model.slots import SlotEngine

    logging.basicConfig(level=logging.WARNING)
    tok = load_tokenizer()
    lm = loaded(add_lora(random_model(torch.bfloat16, "cuda")).merge_and_unload().eval(), tok, adapter="r64",
                merged=True)
    reqs = conversations(Engine(lm), 8, 600, 700)
    eng = SlotEngine(lm, 1280, slots=64)
    eng.eos_ids = NO_EOS
    eng.warmup()
    model = eng.model
    impl = model.config._attn_implementation

    def ms(fn, n: int = 5) -> float:
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n * 1000

    ids = torch.tensor([eng._make_seq(reqs[0], None).prompt_ids], device="cuda")
    print(f"prompt {ids.shape[1]} tokens, engine attention {impl}")
    with torch.inference_mode():
        print(f"forward, engine attention: {ms(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1)):.1f} ms")
        model.config._attn_implementation = "sdpa"
        print(f"forward, sdpa: {ms(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1)):.1f} ms")
        model.config._attn_implementation = impl
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(input_ids=ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))

        def admit(n: int) -> tuple[float, int]:
            seqs = [eng._make_seq(r, None) for r in reqs[:n]]
            for s in seqs:
                s.slot = eng._free.pop()
            t0 = time.perf_counter()
            if n > 1:
                eng._prefill_packed(seqs)
            else:
                eng._prefill(seqs[0])
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) * 1000
            for s in seqs:
                eng._finish(s)
            return dt, sum(len(s.prompt_ids) for s in seqs)

        for n in (1, 1, 1, 4, 4, 8):
            dt, ntok = admit(n)
            print(f"admit {n}: {dt:.1f} ms for {ntok} tokens -> {ntok / dt * 1000:.0f} prompt tokens/s")
    eng.close()


if __name__ == "__main__":
    main()
