"""Serving speed on one GPU: the notebook's recipe as the baseline, then each engine mode, in one run.

Llama-2-7B shape with random weights (time does not depend on weight values), prompts of real counsel-chat text
through the project's own prompt format, tokenized with a 32k BPE tokenizer trained on that text
(`benchmarks/common.py`). End-of-sequence is disabled so every reply has exactly the requested length.

Scenarios
- batch 1: one conversation (~500-token prompt), tokens/s of its reply (after a warm-up request);
- 64 concurrent, burst: 64 conversations with prompts of 200-1,000 tokens (system prompt + history + message),
  256-token replies, arriving at random times over the first `--spread` seconds, each from its own thread calling
  `engine.generate([request], on_delta)`. Aggregate tokens/s = all reply tokens / (last finish - first arrival);
  time to first token = first streamed text - arrival, as the user sees it. The arrivals bound this figure: the
  last conversation arrives after ~4 s and still needs 256 steps, so even a 13 ms step gives <= ~2,300 tokens/s.
- 64 concurrent, steady: 64 clients, each starting at a random time in the first `--spread` seconds and sending its
  next conversation (the same prompt mix) as soon as its reply is complete, for `--steady` seconds: 64
  conversations in flight all the time, as on a busy deployment. Aggregate tokens/s = tokens the engine generated
  between `--spread` + 2 s and the end / that time; TTFT over the conversations that arrived in that window.
- 64 concurrent, steady, multi-turn (`--turns` seconds): the same, but a client's next request is the next turn of
  its conversation (its message and the reply join the history, a new question follows) while the prompt stays
  within 1,000 tokens, then it starts a new one. This is where K/V kept between turns pays (`static` vs
  `static-noreuse`). The engine's counters in the rows (rows per step, ms per step, shares) cover the window only.

Run on the GPU host (see ../shared/gpu/README.md):  python benchmarks/serving.py [--only static,continuous]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import gpu_name, load_tokenizer, out_dir, random_model, texts  # noqa: E402
from model.loading import LoadedModel  # noqa: E402
from model.schema import GenerationRequest, SamplingParams, Turn  # noqa: E402

log = logging.getLogger("bench.serving")
NO_EOS = {10**9}  # random weights emit any token: disable EOS so every reply is exactly max_new_tokens long


DEVICE = "cuda"
TINY = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)


def loaded(model, tok, adapter: str | None = None, merged: bool = False, max_context: int = 4096) -> LoadedModel:
    return LoadedModel(model=model, tokenizer=tok, device=DEVICE, dtype=model.dtype, base="random Llama-2-7B",
                       adapter=adapter, merged=merged, max_context=max_context)


def add_lora(model):
    """The notebook's adapter: LoRA r=64, alpha 16, dropout 0.1 on q_proj and v_proj, non-zero weights."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM", init_lora_weights="gaussian")
    return get_peft_model(model, cfg).eval()


def conversations(engine, n: int, lo: int, hi: int, seed: int = 0) -> list[GenerationRequest]:
    """n requests whose rendered prompts are lo..hi tokens: real questions/answers as history, a question last."""
    rng = random.Random(seed)
    pairs = texts()
    sampling = SamplingParams(max_new_tokens=256)  # the project's defaults: temperature 0.7, top-p 0.9, penalty 1.1
    out = []
    for _ in range(n):
        target = rng.randint(lo, hi)
        q, _ = rng.choice(pairs)
        history: list[Turn] = []
        req = GenerationRequest(message=q[:1500], history=history, sampling=sampling)
        while engine.count_tokens(engine.prompt_for(req)) < target:
            hq, ha = rng.choice(pairs)
            history = [Turn(role="user", content=hq[:1200]), Turn(role="assistant", content=ha[:1200])] + history
            req = GenerationRequest(message=q[:1500], history=history, sampling=sampling)
            if len(history) > 40:
                break
        out.append(req)
    return out


def with_tokens(req: GenerationRequest, n: int) -> GenerationRequest:
    return req.model_copy(update={"sampling": req.sampling.model_copy(update={"max_new_tokens": n})})


def batch1(engine, req: GenerationRequest, new_tokens: int) -> dict:
    engine.generate([with_tokens(req, 16)])  # warm-up at this shape
    t0 = time.perf_counter()
    res = engine.generate([with_tokens(req, new_tokens)])[0]
    wall = time.perf_counter() - t0
    assert res.ok and res.completion_tokens == new_tokens, res
    return {"prompt_tokens": res.prompt_tokens, "tokens": res.completion_tokens, "seconds": wall,
            "tok_s": res.completion_tokens / wall, "ttft_s": res.first_token_seconds}


def concurrent(engine, reqs: list[GenerationRequest], spread_s: float, timeout_s: float, seed: int = 1) -> dict:
    rng = random.Random(seed)
    offsets = sorted(rng.uniform(0, spread_s) for _ in reqs)
    first: dict[str, float] = {}
    arrive: dict[str, float] = {}
    done: dict[str, tuple[float, object]] = {}
    lock = threading.Lock()

    def on_delta(rid: str, delta: str) -> None:
        now = time.perf_counter()
        with lock:
            first.setdefault(rid, now)

    def client(req: GenerationRequest, at: float) -> None:
        time.sleep(max(0.0, at - time.perf_counter()))
        arrive[req.request_id] = time.perf_counter()
        res = engine.generate([req], on_delta)[0]
        done[req.request_id] = (time.perf_counter(), res)

    start = time.perf_counter() + 0.2
    threads = [threading.Thread(target=client, args=(r, start + o), daemon=True) for r, o in zip(reqs, offsets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, start + timeout_s - time.perf_counter()))
    if len(done) < len(reqs):
        return {"error": f"timeout: {len(done)}/{len(reqs)} finished in {timeout_s:.0f} s"}
    results = [res for _, res in done.values()]
    bad = [r for r in results if not r.ok]
    if bad:
        return {"error": f"{len(bad)} failed: {bad[0].error}"}
    tokens = sum(r.completion_tokens for r in results)
    t_first = min(arrive.values())
    t_last = max(t for t, _ in done.values())
    ttft = sorted(first[rid] - arrive[rid] for rid in arrive if rid in first)
    q = statistics.quantiles(ttft, n=20, method="inclusive")
    prompts = [r.prompt_tokens for r in results]
    eng_ft = sorted(r.first_token_seconds or 0.0 for r in results)
    eng_q = sorted(r.queue_seconds for r in results)
    return {"conversations": len(reqs), "tokens": tokens, "seconds": t_last - t_first,
            "tok_s": tokens / (t_last - t_first), "ttft_p50_s": statistics.median(ttft), "ttft_p95_s": q[18],
            "ttft_max_s": ttft[-1], "prompt_tokens_mean": statistics.mean(prompts),
            "prompt_tokens_min": min(prompts), "prompt_tokens_max": max(prompts), "spread_s": spread_s,
            "engine_first_token_p50_s": statistics.median(eng_ft), "engine_first_token_max_s": eng_ft[-1],
            "engine_queue_p50_s": statistics.median(eng_q), "engine_queue_max_s": eng_q[-1]}


def steady(engine, reqs: list[GenerationRequest], spread_s: float, seconds: float, seed: int = 2,
           turns: bool = False, max_prompt: int = 1000) -> dict:
    """Closed loop: len(reqs) clients, each repeating conversations from its own slice of the mix until `seconds`
    have passed; throughput measured on the engine's token counter after everyone has started. With `turns`, a
    client's next request continues its conversation (its last message and the reply join the history, a new
    question follows) while the prompt stays within `max_prompt` tokens, then it starts the next one of its slice."""
    rng = random.Random(seed)
    questions = [q[:600] for q, _ in texts()]
    n = len(reqs)
    offsets = [rng.uniform(0, spread_s) for _ in range(n)]
    lock = threading.Lock()
    ttft: list[tuple[float, float]] = []  # (arrival, first token - arrival)
    finished: list[object] = []
    start = time.perf_counter() + 0.2
    stop = start + seconds

    def client(c: int) -> None:
        time.sleep(max(0.0, start + offsets[c] - time.perf_counter()))
        k, req, asked = 0, None, random.Random(c)
        while time.perf_counter() < stop:
            if req is not None and turns and res.ok:
                history = req.history + [Turn(role="user", content=req.message),
                                         Turn(role="assistant", content=res.text)]
                req = req.model_copy(update={"history": history, "message": asked.choice(questions),
                                             "request_id": f"{c}-{k}"})
                if engine.count_tokens(engine.prompt_for(req)) > max_prompt:
                    req = None
            else:
                req = None
            if req is None:
                req = reqs[(c + 7 * k) % n].model_copy(update={"request_id": f"{c}-{k}"})
            first: list[float] = []
            t0 = time.perf_counter()
            res = engine.generate([req], lambda rid, d: first.append(time.perf_counter()) if not first else None)[0]
            with lock:
                finished.append(res)
                if first:
                    ttft.append((t0, first[0] - t0))
            k += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(n)]
    for t in threads:
        t.start()
    w0 = start + spread_s + 2.0
    time.sleep(max(0.0, w0 - time.perf_counter()))
    snap0, t_a = counters(engine), time.perf_counter()
    time.sleep(max(0.0, stop - time.perf_counter()))
    snap1, t_b = counters(engine), time.perf_counter()
    window_counters = {k: snap1[k] - snap0[k] for k in snap0}
    tok0, tok1 = snap0["generated_tokens"], snap1["generated_tokens"]
    for t in threads:
        t.join(120)
    bad = [r for r in finished if not r.ok]
    if bad:
        return {"error": f"{len(bad)} failed: {bad[0].error}"}
    window = sorted(x for a, x in ttft if w0 <= a <= stop)
    q = statistics.quantiles(window, n=20, method="inclusive") if len(window) >= 2 else [float("nan")] * 19
    return {"conversations": n, "turns": turns, "tokens": tok1 - tok0, "seconds": t_b - t_a,
            "tok_s": (tok1 - tok0) / (t_b - t_a),
            "ttft_p50_s": statistics.median(window) if window else float("nan"), "ttft_p95_s": q[18],
            "ttft_max_s": window[-1] if window else float("nan"), "replies_in_window": len(window),
            "replies_total": len(finished), "scenario": "steady", "window_counters": window_counters}


COUNTERS = ("generated_tokens", "decode_steps", "decoded_rows", "prefill_tokens", "prefill_seconds", "wait_seconds",
            "busy_seconds", "mixed_steps", "chunk_tokens", "reused_tokens")


def with_counters(res: dict) -> dict:
    """A steady result plus where the measured window's time went (engine counters between its start and end)."""
    delta = res.get("window_counters", {})
    if not (delta.get("decode_steps") and delta.get("decoded_rows")):  # the previous engine does not count these
        return res
    busy = max(1e-9, delta["busy_seconds"])
    return {**res, "mean_batch": delta["decoded_rows"] / delta["decode_steps"],
            "prefill_share": delta["prefill_seconds"] / busy,
            "ms_per_decode_step": 1000 * (delta["busy_seconds"] - delta["prefill_seconds"]) / delta["decode_steps"],
            "gpu_wait_share": delta["wait_seconds"] / busy,
            "prefill_tokens_per_reply_token": delta["prefill_tokens"] / max(1, delta["decoded_rows"]),
            "reused_share": delta["reused_tokens"] / max(1, delta["reused_tokens"] + delta["prefill_tokens"]),
            "mixed_share": delta["mixed_steps"] / delta["decode_steps"],
            "chunk_tokens_per_mixed_step": delta["chunk_tokens"] / max(1, delta["mixed_steps"])}


def counters(engine) -> dict:
    """The engine's cumulative counters now (the previous engine lacks some: 0)."""
    return {k: getattr(engine.stats, k, 0) for k in COUNTERS}


def check(tok, timeout_s: float = 120.0) -> list[dict]:
    """Correctness of the GPU engine on the device it runs on: a small random Llama (GQA, 4 layers) in float32 and
    bf16; the static engine (CUDA graphs, Triton decode attention, fused projections, pipelined decoding, mixed steps)
    against transformers' `generate`, greedy with the repetition penalty, EOS disabled, 4 prompts of different
    lengths decoded side by side: the first alone, the other three sent once its reply streams, so that they are
    prefilled in chunks inside its decode steps; then the first conversation's next turn, which reuses the K/V its
    slot still holds. float32 must agree token for token; bf16 reports the common prefix (rounding differs)."""
    import torch

    from model.engine import Engine
    from model.slots import SlotEngine

    small = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2)
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        torch.manual_seed(0)
        model = random_model(dtype, DEVICE, **small)
        for p in model.parameters():  # larger weights than the default init: peaked logits, no near-ties
            p.data.normal_(0, 0.08)
        lm = loaded(model, tok)
        plain = Engine(lm)
        plain.eos_ids = NO_EOS
        greedy = SamplingParams(temperature=0.0, max_new_tokens=40)
        reqs = [r.model_copy(update={"sampling": greedy}) for r in conversations(plain, 4, 60, 900, seed=5)]
        ref = [plain.generate([r])[0] for r in reqs]
        # the same context as the plain engine (same prompts); mixed steps on the CPU too (--tiny: the reference path)
        eng = SlotEngine(lm, lm.max_context, slots=4, mixed=True if DEVICE == "cpu" else None)
        eng.eos_ids = NO_EOS
        eng.warmup()
        streaming = threading.Event()
        first: list = []
        lead = threading.Thread(target=lambda: first.extend(eng.generate(reqs[:1], lambda rid, d: streaming.set())))
        lead.start()
        streaming.wait(timeout_s)
        got = eng.generate(reqs[1:])
        lead.join(timeout_s)
        got = first + got
        # the first conversation's next turn: it takes the slot that still holds its K/V and prefills the rest
        follow = reqs[0].model_copy(update={"history": reqs[0].history + [
            Turn(role="user", content=reqs[0].message), Turn(role="assistant", content=got[0].text)],
            "message": "And what should I do next?"})
        reused0 = eng.stats.reused_tokens
        next_turn = eng.generate([follow])[0]
        reused = eng.stats.reused_tokens - reused0
        ref_next = plain.generate([follow])[0]
        desc = eng.description
        mixed_steps = eng.stats.mixed_steps
        eng.close()
        same = [a.text == b.text for a, b in zip(ref, got)]
        prefix = []
        for a, b in zip(ref, got):
            ta, tb = tok(a.text)["input_ids"], tok(b.text)["input_ids"]
            n = 0
            while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
                n += 1
            prefix.append(n)
        out.append({"dtype": str(dtype), "identical": sum(same), "of": len(same), "common_prefix_tokens": prefix,
                    "engine": {k: desc.get(k) for k in ("cuda_graphs", "decode_attention", "mixed_steps")},
                    "mixed_steps_run": mixed_steps, "next_turn_identical": next_turn.text == ref_next.text,
                    "next_turn_reused_tokens": reused, "next_turn_prompt_tokens": next_turn.prompt_tokens})
        log.info("CHECK %s", json.dumps(out[-1]))
        del model, lm, plain
        free()
    return out


def free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    import torch

    from model.engine import Engine

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="baseline,plain,static-prev,static,static-matmul,continuous")
    ap.add_argument("--new-tokens", type=int, default=128, help="reply length for the batch-1 eager baselines")
    ap.add_argument("--concurrent", type=int, default=64)
    ap.add_argument("--spread", type=float, default=4.0, help="arrivals spread over this many seconds")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up a concurrent scenario after this")
    ap.add_argument("--steady", type=float, default=30.0, help="length of the steady closed-loop scenario (0 = skip)")
    ap.add_argument("--turns", type=float, default=0.0, help="length of a second steady scenario in which each "
                    "client's next request continues its conversation (0 = skip)")
    ap.add_argument("--context", type=int, default=1280, help="slot length (prompt + reply) for the static mode")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: a 2-layer model, no NF4 baseline")
    ap.add_argument("--check", action="store_true", help="only the correctness check of the static engine on this "
                    "device (small random Llama, float32 and bf16, against generate)")
    args = ap.parse_args()
    global DEVICE
    if args.tiny:
        DEVICE = "cpu"
    only = set(args.only.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)
    out = out_dir()
    rows: list[dict] = []
    meta = {"gpu": gpu_name(), "torch": torch.__version__}
    import transformers

    meta["transformers"] = transformers.__version__

    def record(name: str, **kw) -> None:
        row = {"config": name, **kw}
        rows.append(row)
        log.info("RESULT %s", json.dumps(row))
        (out / "serving.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    tok = load_tokenizer()
    if args.check:
        res = check(tok)
        (out / "check.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    t0 = time.perf_counter()
    base = random_model(torch.bfloat16, DEVICE, **(TINY if args.tiny else {}))
    log.info("random model built in %.1f s", time.perf_counter() - t0)
    probe = Engine(loaded(base, tok))
    reqs = conversations(probe, args.concurrent, 200, 1000)
    one = conversations(probe, 1, 480, 520, seed=7)[0]

    if "baseline" in only:  # the notebook: NF4 + double quant, unmerged LoRA r=64, transformers generate, batch 1
        from transformers import AutoModelForCausalLM

        from model.loading import quantization_config

        folder = Path("/dev/shm/llama2-random")  # kept for benchmarks/training.py (same random weights)
        t0 = time.perf_counter()
        if not (folder / "config.json").exists():
            base.save_pretrained(folder)
        nf4 = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization_config(True),
                                                   dtype=torch.bfloat16, device_map={"": "cuda"})
        log.info("NF4 model ready in %.1f s", time.perf_counter() - t0)
        eng = Engine(loaded(add_lora(nf4), tok, adapter="random r=64"))
        eng.eos_ids = NO_EOS
        record("NF4 + double quant, unmerged LoRA r=64, generate (notebook)", mode="plain", batch=1,
               **batch1(eng, one, args.new_tokens))
        del eng, nf4
        free()

    # bf16 with the adapter merged into the weights (the serving default on GPUs with room)
    merged = add_lora(base).merge_and_unload().eval()
    lm = loaded(merged, tok, adapter="random r=64", merged=True)

    if "plain" in only:
        eng = Engine(lm)
        eng.eos_ids = NO_EOS
        record("bf16, LoRA merged, generate", mode="plain", batch=1, **batch1(eng, one, args.new_tokens))

    if "static-unfused" in only:  # the same engine without the compiled small-op kernels (batch 1 only)
        from model.slots import SlotEngine

        t0 = time.perf_counter()
        eng = SlotEngine(lm, args.context, slots=args.concurrent, fuse=False)
        eng.eos_ids = NO_EOS
        eng.warmup()
        record("bf16, LoRA merged, static slot cache + CUDA graphs, no fused kernels", mode="static", batch=1,
               warmup_s=time.perf_counter() - t0, **batch1(eng, one, 256))
        eng.close()
        del eng
        free()

    # order matters: the projection fusion changes the shared model in place, so the variants without it run first
    for key, opts in (("static-prev", None), ("static-noproj", {"fuse_proj": False}),
                      ("static-nowait", {"admit_wait_s": 0.0, "mixed": False}), ("static-nomixed", {"mixed": False}),
                      ("static-noreuse", {"reuse_prefix": False}), ("static", {}), ("static-fp8kv", {"kv_cache_dtype": "fp8"}),
                      ("static-matmul", {"triton_attention": False})):
        if key not in only:
            continue
        if opts is None:  # a previous engine as the same-run baseline: `git show REV:model/slots.py > .bench/prev_slots.py`
            prev = Path(__file__).resolve().parents[1] / ".bench" / "prev_slots.py"
            if not prev.exists():
                log.warning("static-prev: no %s; skipped", prev)
                continue
            import importlib.util

            spec = importlib.util.spec_from_file_location("prev_slots", prev)
            module = importlib.util.module_from_spec(spec)
            sys.modules["prev_slots"] = module  # dataclasses look their module up
            spec.loader.exec_module(module)
            SlotEngine, opts = module.SlotEngine, {}
        else:
            from model.slots import SlotEngine
        t0 = time.perf_counter()
        eng = SlotEngine(lm, args.context, slots=args.concurrent, **opts)
        eng.eos_ids = NO_EOS
        eng.warmup()
        warm = time.perf_counter() - t0
        attn = eng.description.get("decode_attention", "")
        name = f"{key}: bf16, LoRA merged, static slot cache + CUDA graphs, {attn} attention"
        record(name, mode=key, batch=1, warmup_s=warm, **batch1(eng, one, 256))
        concurrent(eng, reqs[:8], 0.5, args.timeout)  # exercise admission once before measuring
        record(name, mode=key, batch=args.concurrent, scenario="burst",
               **concurrent(eng, reqs, args.spread, args.timeout))
        for scenario, seconds, turns in (("steady", args.steady, False), ("steady, multi-turn", args.turns, True)):
            if seconds > 0:
                res = with_counters(steady(eng, reqs, args.spread, seconds, turns=turns))
                record(name, mode=key, batch=args.concurrent, **{**res, "scenario": scenario})
        log.info("%s stats %s", key, eng.stats)
        eng.close()
        del eng
        free()

    if "continuous" in only:
        from model.cb_engine import ContinuousEngine

        for label, opts in (("default", {}), ("cuda graphs", {"use_cuda_graph": True})):
            try:
                t0 = time.perf_counter()
                eng = ContinuousEngine(lm, 4096, slots=args.concurrent, cb_options=opts)
                eng.eos_ids = NO_EOS
                eng.warmup()
                warm = time.perf_counter() - t0
                name = f"bf16, LoRA merged, transformers continuous batching ({label})"
                record(name, mode="continuous", batch=1, warmup_s=warm, **batch1(eng, one, 256))
                record(name, mode="continuous", batch=args.concurrent,
                       **concurrent(eng, reqs, args.spread, args.timeout))
            except Exception as e:  # noqa: BLE001 - a failing variant is a result too
                log.exception("continuous %s failed", label)
                record(f"transformers continuous batching ({label})", mode="continuous", error=repr(e)[:300])
            finally:
                try:
                    eng.close()
                    del eng
                except Exception:  # noqa: BLE001
                    pass
                free()

    print(f"\n## Serving, Llama-2-7B shape, random weights, {meta['gpu']}\n")
    print("| configuration | conversations | tokens/s | p50 TTFT s | p95 TTFT s | notes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | {r.get('batch', '')} | - | - | - | {r['error'][:80]} |")
            continue
        ttft50 = r.get("ttft_p50_s", r.get("ttft_s"))
        ttft95 = r.get("ttft_p95_s", "")
        note = r.get("scenario", "")
        if "mean_batch" in r:
            note += (f" mean batch {r['mean_batch']:.0f}, {r['ms_per_decode_step']:.1f} ms/step, prefill "
                     f"{100 * r['prefill_share']:.0f}% of time")
            if r.get("reused_share"):
                note += f", {100 * r['reused_share']:.0f}% of prompt tokens reused"
            if r.get("mixed_share"):
                note += (f", {100 * r['mixed_share']:.0f}% of steps mixed ({r['chunk_tokens_per_mixed_step']:.0f} "
                         "prompt tokens each)")
        else:
            note += f" prompt {r.get('prompt_tokens', r.get('prompt_tokens_mean', 0)):.0f} tok"
        if "warmup_s" in r:
            note += f", warm-up {r['warmup_s']:.0f} s"
        f = (lambda x: f"{x:.2f}" if isinstance(x, float) else str(x))
        print(f"| {r['config']} | {r['batch']} | {r['tok_s']:.0f} | {f(ttft50)} | {f(ttft95)} | {note} |")


if __name__ == "__main__":
    main()
