"""Training speed on one GPU: the notebook's QLoRA step as the baseline, then each option, in one run.

Llama-2-7B shape with random weights (saved once to /dev/shm, loaded back through `training.train.load_base_model`
and NF4 as the recipes do), real counsel-chat text in the served prompt format (`model.prompt.training_example`)
tokenized with a 32k BPE tokenizer trained on that text (`benchmarks/common.py`), labels on answer tokens only.

Every configuration trains on the same rows: examples concatenated into a stream and cut into 2,048-token rows
(the notebook's packing). The baseline attends across example boundaries inside a row, as the notebook did;
padding-free resets position ids at each example start, so transformers builds a block-diagonal causal mask and no
example attends to another. Each step: forward with labels (the model's own, or Liger's fused, cross-entropy),
backward, clip to 0.3, paged AdamW 8-bit (lr 1e-4) on the LoRA weights.

tokens/s counts every token of the rows (no padding exists in any configuration). MFU = tokens/s x F x N / 989e12
(H100 SXM dense bf16 datasheet), N = base parameters, F = 6 with activation checkpointing (forward twice + backward)
and 4 without (frozen weights get no weight gradients); attention FLOPs are not counted.

    python benchmarks/training.py                 # on the GPU host, after benchmarks/serving.py or alone
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import TOKENIZER_DIR, gpu_name, load_tokenizer, out_dir, random_model, texts  # noqa: E402

log = logging.getLogger("bench.training")
SAVED = Path("/dev/shm/llama2-random")
PEAK_BF16 = 989e12
EPOCH3_TOKENS = 5.6e6


@dataclass(frozen=True)
class Option:
    name: str
    four_bit: bool = True
    upcast: bool = True  # prepare_model_for_kbit_training's fp32 norms / embeddings / lm_head (the notebook)
    checkpointing: bool = True
    padding_free: bool = False
    liger: bool = False
    batch: int = 4
    varlen: bool = False  # padding-free rows through PyTorch's flash varlen kernel, no mask (training/attention.py)
    dropout: float = 0.1  # LoRA dropout (the notebook's 0.1); 0 lets peft skip the dropout copy of q/v inputs
    cast_input: bool = True  # peft's float32 copy of a bf16 layer's input before the adapter (training.train skips it)
    # "model": the model's own loss (Liger's fused linear cross-entropy over every position when liger is on);
    # "trl": what `counsel-bot train` runs, trl's SFTTrainer fused LM head, which projects only the positions with an
    # answer label (and computes the entropy and top-1 figures the trainer logs); Liger then patches the layers only
    head: str = "model"
    # torch.compile of each decoder layer (attention left eager: it reads its layout on the host); measured slower
    # than eager with Liger (whose Triton kernels fail inside inductor): benchmarks/RESULTS.md, session 5
    compile: bool = False
    fused: bool = False  # LoRA's scaling and add inside the adapter's product (training.fused_lora, what train does)


def rows_of(tok, seq_len: int, n_rows: int):
    """(input_ids, labels, position_ids) rows: examples concatenated and cut at seq_len; answer-only labels."""
    from model.prompt import training_example

    ids, labels, pos = [], [], []
    for q, a in texts():
        ex = training_example(tok, q, a)
        p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(ex["completion"], add_special_tokens=False)["input_ids"]
        ids += p + c
        labels += [-100] * len(p) + c
        pos += list(range(len(p) + len(c)))
        if len(ids) >= seq_len * n_rows:
            break
    out = []
    for r in range(n_rows):  # an example cut by a row boundary keeps its positions (RoPE is relative)
        s = slice(r * seq_len, (r + 1) * seq_len)
        out.append((ids[s], labels[s], pos[s]))
    return out


def batches(rows, batch: int, steps: int, device: str):
    import torch

    for step in range(steps):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        yield {k: torch.tensor([c[j] for c in chunk], device=device) for j, k in
               enumerate(("input_ids", "labels", "position_ids"))}


def build(opt: Option):
    """The model for an option: the notebook's preparation, or bf16 norms/head, LoRA r=64/16/0.1 on q,v."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    try:  # the training package's own loader (NF4 + double quant from the recipe)
        from training.recipe import Recipe
        from training.train import load_base_model

        recipe = Recipe(base=str(SAVED), load_in_4bit=opt.four_bit, bf16=True, lora_r=64, lora_alpha=16,
                        lora_dropout=opt.dropout, target_modules=["q_proj", "v_proj"],
                        gradient_checkpointing=opt.checkpointing, attn_implementation="varlen" if opt.varlen else None)
        model = load_base_model(recipe, str(SAVED), "cuda")
    except ImportError:
        from transformers import AutoModelForCausalLM

        from model.loading import quantization_config

        from training import attention

        model = AutoModelForCausalLM.from_pretrained(
            SAVED, dtype=torch.bfloat16, quantization_config=quantization_config(opt.four_bit),
            device_map={"": "cuda"}, attn_implementation=attention.register() if opt.varlen else None)
    if opt.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(model=model, fused_linear_cross_entropy=opt.head == "model")
    if opt.four_bit and opt.upcast:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=opt.checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.enable_input_require_grads()
        if opt.checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    cfg = LoraConfig(r=64, lora_alpha=16, lora_dropout=opt.dropout, target_modules=["q_proj", "v_proj"], bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    if not opt.cast_input:
        from training.train import keep_lora_inputs_bf16

        keep_lora_inputs_bf16(model)
    if opt.head == "trl":  # as SFTTrainer.__init__ does
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy", "is_top1"))
    if opt.fused:
        from training.fused_lora import fuse_lora_output

        fuse_lora_output(model)
    if opt.compile:
        compile_layers(model)
    model.config.use_cache = False
    model.train()
    return model


def compile_layers(model) -> None:
    """torch.compile each decoder layer in place; the varlen attention stays eager (a graph break)."""
    import torch
    from transformers import AttentionInterface

    from training import attention

    AttentionInterface.register(attention.NAME, torch.compiler.disable(attention.varlen_attention_forward))
    for layer in model.get_base_model().model.layers:
        layer.compile(dynamic=False)


def step_loss(model, batch, opt: Option):
    """One forward's loss, as the trainer computes it for this option."""
    if opt.head == "trl":
        out = model(**batch, fused_lm_head=True)
        # SFTTrainer.compute_loss: summed answer-token NLL over the answer tokens, and its logged figures
        valid = out.label_mask.sum()
        float(out.entropy.detach().sum() / valid), float(out.is_top1.sum() / valid)
        return out.loss
    return model(**batch).loss


def run(opt: Option, rows, steps: int, warmup: int = 2) -> dict:
    import bitsandbytes as bnb
    import torch

    torch.cuda.reset_peak_memory_stats()
    t_load = time.perf_counter()
    model = build(opt)
    load_s = time.perf_counter() - t_load
    params = [p for p in model.parameters() if p.requires_grad]
    optim = bnb.optim.PagedAdamW8bit(params, lr=1e-4, weight_decay=0.001)
    losses, times = [], []
    try:
        for step, batch in enumerate(batches(rows, opt.batch, steps, "cuda")):
            if not opt.padding_free:
                batch.pop("position_ids")  # positions run on across examples: the notebook's concatenation
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_loss(model, batch, opt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.3)
            optim.step()
            optim.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
    except torch.OutOfMemoryError:
        return {"option": opt.__dict__, "error": "out of memory", "peak_gb": torch.cuda.max_memory_allocated() / 2**30}
    finally:
        del model, optim, params
        gc.collect()
        torch.cuda.empty_cache()
    tokens = opt.batch * len(rows[0][0])
    s_step = statistics.median(times[warmup:])
    tok_s = tokens / s_step
    flops = (6 if opt.checkpointing else 4) * N_PARAMS
    return {"option": opt.__dict__, "steps": steps, "tokens_per_step": tokens, "s_per_step": s_step, "tok_s": tok_s,
            "mfu": tok_s * flops / PEAK_BF16, "peak_gb": torch.cuda.max_memory_allocated() / 2**30, "load_s": load_s,
            "epochs3_min": EPOCH3_TOKENS / tok_s / 60, "losses": losses}


N_PARAMS = 0

# First match wins: flash-attention kernel names carry cutlass template arguments, so attention is checked first.
KERNEL_GROUPS = (("attention", ("flash", "fmha", "attn")),
                 ("matrix products", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")),
                 ("NF4 dequantize", ("dequant", "kdequant")),
                 ("Liger / trl Triton kernels", ("_kernel", "triton")))


def profile(key: str, opt: Option, rows, out: Path, steps: int = 3) -> dict:
    """GPU time per kernel over `steps` steps after two warm-up steps: top kernels and the share of each group."""
    import bitsandbytes as bnb
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build(opt)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = bnb.optim.PagedAdamW8bit(params, lr=1e-4, weight_decay=0.001)

    def step(batch):
        if not opt.padding_free:
            batch.pop("position_ids")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_loss(model, batch, opt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.3)
        optim.step()
        optim.zero_grad(set_to_none=True)

    it = batches(rows, opt.batch, steps + 2, "cuda")
    for _ in range(2):
        step(next(it))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for batch in it:
            step(batch)
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / steps
    kernels = [(e.key, e.device_time_total / 1e6 / steps, e.count // steps) for e in prof.key_averages()
               if e.device_time_total > 0]
    kernels.sort(key=lambda k: -k[1])
    gpu = sum(k[1] for k in kernels)
    groups: dict[str, float] = {}
    for name, sec, _ in kernels:
        low = name.lower()
        group = next((g for g, keys in KERNEL_GROUPS if any(x in low for x in keys)), "other (elementwise, copies)")
        groups[group] = groups.get(group, 0.0) + sec
    lines = [f"# {opt.name}: {wall:.3f} s/step wall, {gpu:.3f} s/step of kernel time", "",
             "| group | s/step | share of kernel time |", "| --- | --- | --- |"]
    lines += [f"| {g} | {t:.3f} | {100 * t / gpu:.0f}% |" for g, t in sorted(groups.items(), key=lambda x: -x[1])]
    lines += ["", "| kernel | ms/step | calls/step |", "| --- | --- | --- |"]
    lines += [f"| {n[:110]} | {1e3 * t:.1f} | {c} |" for n, t, c in kernels[:40]]
    (out / f"profile-{key}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    del model, optim, params
    gc.collect()
    torch.cuda.empty_cache()
    return {"wall_s": wall, "kernel_s": gpu, "groups": groups}


def main() -> None:
    import torch

    global N_PARAMS
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="steps per option (2 warm-up)")
    ap.add_argument("--curve-steps", type=int, default=50, help="steps of the loss-curve runs")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--no-curves", action="store_true", help="skip the 50-step loss curves of the best options")
    ap.add_argument("--profile", default="", help="comma-separated option keys to profile (kernel time by group) "
                    "after the timed runs")
    ap.add_argument("--only", default="", help="comma-separated option keys to run (default: all); the notebook "
                    "baseline always runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = out_dir()
    torch.backends.cuda.matmul.allow_tf32 = False  # as in the notebook (default)

    if not (SAVED / "config.json").exists():
        base = random_model(torch.bfloat16)
        base.save_pretrained(SAVED)
        del base
        gc.collect()
        torch.cuda.empty_cache()
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, SAVED / f.name)
    from benchmarks.common import llama2_config

    cfg = llama2_config()
    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    N_PARAMS = 2 * cfg.vocab_size * h + n * (4 * h * h + 3 * h * i + 2 * h) + h
    tok = load_tokenizer()
    need = max(args.steps, args.curve_steps) * 16
    rows = rows_of(tok, args.seq_len, min(need, 400))
    meta = {"gpu": gpu_name(), "torch": torch.__version__, "n_params": N_PARAMS, "rows": len(rows)}
    results = []

    def record(res: dict) -> None:
        results.append(res)
        log.info("RESULT %s", json.dumps({k: v for k, v in res.items() if k != "losses"}))
        (out / "training.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))

    base = Option("notebook: NF4, fp32 upcast, checkpointing, 4x2048 concatenated")
    fast = dict(padding_free=True, upcast=False, checkpointing=False, liger=True)
    bf16 = dict(four_bit=False, **fast)
    options = {
        "pf": replace(base, name="+ padding-free (position ids)", padding_free=True),
        "pf-bf16norms": replace(base, name="+ padding-free, bf16 norms/head", padding_free=True, upcast=False),
        "pf-nockpt": replace(base, name="+ padding-free, bf16 norms/head, no checkpointing", padding_free=True,
                             upcast=False, checkpointing=False),
        "q-liger": replace(base, name="+ padding-free, Liger, no checkpointing", **fast),
        "q-liger-b8": replace(base, name="+ padding-free, Liger, no checkpointing, batch 8", batch=8, **fast),
        "q-varlen": replace(base, name="+ padding-free (varlen), Liger, no checkpointing", varlen=True, **fast),
        "q-varlen-b8": replace(base, name="+ padding-free (varlen), Liger, no checkpointing, batch 8", varlen=True,
                               batch=8, **fast),
        "q-varlen-b8-nodrop": replace(base, name="+ padding-free (varlen), Liger, no checkpointing, batch 8, LoRA "
                                      "dropout 0", varlen=True, batch=8, dropout=0.0, **fast),
        "bf16-liger": Option("bf16 LoRA on bf16 base, padding-free, Liger, no checkpointing", **bf16),
        "bf16-liger-b8": Option("bf16 LoRA on bf16 base, padding-free, Liger, no checkpointing, batch 8", batch=8,
                                **bf16),
        "bf16-varlen": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no checkpointing", varlen=True,
                              **bf16),
        "bf16-varlen-b8": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no checkpointing, batch 8",
                                 varlen=True, batch=8, **bf16),
        "bf16-varlen-b8-nocast": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no checkpointing, "
                                        "batch 8, bf16 LoRA inputs", varlen=True, batch=8, cast_input=False, **bf16),
        "bf16-varlen-b4-nocast": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no checkpointing, "
                                        "bf16 LoRA inputs", varlen=True, cast_input=False, **bf16),
        "bf16-varlen-b8-nocast-nodrop": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no "
                                               "checkpointing, batch 8, bf16 LoRA inputs, LoRA dropout 0",
                                               varlen=True, batch=8, cast_input=False, dropout=0.0, **bf16),
        # what `counsel-bot train` runs: trl's answer-only fused LM head (Liger patches the layers only)
        "q-varlen-b4-trl": replace(base, name="QLoRA recipe: varlen, Liger layers, trl answer-only head, batch 4",
                                   varlen=True, head="trl", **fast),
        "q-varlen-b8-trl": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch 8", varlen=True,
                                   batch=8, head="trl", **fast),
        "q-varlen-b8-nodrop-trl": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                          "LoRA dropout 0", varlen=True, batch=8, dropout=0.0, head="trl", **fast),
        "q-varlen-b8-trl-compile": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                           "compiled layers (measured slower)", varlen=True, batch=8, head="trl",
                                           compile=True, **fast),
        "bf16-varlen-b8-nocast-trl": Option("bf16 LoRA: varlen, Liger layers, trl answer-only head, batch 8, bf16 "
                                            "LoRA inputs", varlen=True, batch=8, cast_input=False, head="trl", **bf16),
        "bf16-varlen-b8-nocast-nodrop-trl": Option("bf16 LoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                                   "bf16 LoRA inputs, LoRA dropout 0", varlen=True, batch=8,
                                                   cast_input=False, dropout=0.0, head="trl", **bf16),
        "bf16-varlen-b8-nocast-trl-compile": Option("bf16 LoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                                    "bf16 LoRA inputs, compiled layers (measured slower)",
                                                    varlen=True, batch=8, cast_input=False, head="trl", compile=True,
                                                    **bf16),
        # + LoRA's output summed inside its product (training.fused_lora): what `counsel-bot train` runs now
        "q-varlen-b8-trl-fused": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                         "fused LoRA sum", varlen=True, batch=8, head="trl", fused=True, **fast),
        "q-varlen-b8-nodrop-trl-fused": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch "
                                                "8, LoRA dropout 0, fused LoRA sum", varlen=True, batch=8, dropout=0.0,
                                                head="trl", fused=True, **fast),
        "q-varlen-b10-nodrop-trl-fused": replace(base, name="QLoRA: varlen, Liger layers, trl answer-only head, batch "
                                                 "10, LoRA dropout 0, fused LoRA sum", varlen=True, batch=10,
                                                 dropout=0.0, head="trl", fused=True, **fast),
        "bf16-varlen-b8-nocast-trl-fused": Option("bf16 LoRA: varlen, Liger layers, trl answer-only head, batch 8, "
                                                  "bf16 LoRA inputs, fused LoRA sum", varlen=True, batch=8,
                                                  cast_input=False, head="trl", fused=True, **bf16),
        "bf16-varlen-b8-nocast-nodrop-trl-fused": Option("bf16 LoRA: varlen, Liger layers, trl answer-only head, "
                                                         "batch 8, bf16 LoRA inputs, LoRA dropout 0, fused LoRA sum",
                                                         varlen=True, batch=8, cast_input=False, dropout=0.0,
                                                         head="trl", fused=True, **bf16),
        "bf16-varlen-b8-nodrop": Option("bf16 LoRA on bf16 base, padding-free (varlen), Liger, no checkpointing, "
                                        "batch 8, LoRA dropout 0", varlen=True, batch=8, dropout=0.0, **bf16),
    }
    for key in [k for k in args.profile.split(",") if k]:
        if key not in options:
            raise SystemExit(f"unknown option {key!r} to profile")
    to_profile = {k: options[k] for k in args.profile.split(",") if k}
    if args.only:
        unknown = set(args.only.split(",")) - set(options)
        if unknown:
            raise SystemExit(f"unknown options {sorted(unknown)}; known: {', '.join(options)}")
        options = {k: v for k, v in options.items() if k in args.only.split(",")}
    if any(o.varlen for o in options.values()):
        from training import attention

        meta["varlen_self_check"] = attention.self_check()
        log.info("varlen attention self-check: %s", meta["varlen_self_check"])
        if not meta["varlen_self_check"]:
            options = {k: v for k, v in options.items() if not v.varlen}
    baseline = run(base, rows, args.curve_steps)
    baseline["curve"] = True
    record(baseline)
    for opt in options.values():
        try:
            record(run(opt, rows, args.steps))
        except Exception as e:  # noqa: BLE001 - an option that fails is a result too
            log.exception("%s failed", opt.name)
            record({"option": opt.__dict__, "error": repr(e)[:300]})
    # the fastest QLoRA and bf16 options again, for loss curves over the same rows as the baseline
    for four_bit in (() if args.no_curves else (True, False)):
        ok = [r for r in results if "tok_s" in r and r["option"]["four_bit"] == four_bit and not r.get("curve")
              and r["option"]["name"] != base.name]
        if ok:
            best = max(ok, key=lambda r: r["tok_s"])
            res = run(Option(**best["option"]), rows, args.curve_steps)
            res["curve"] = True
            record(res)

    b = baseline.get("tok_s", float("nan"))
    print(f"\n## Training step, Llama-2-7B shape, random weights, {meta['gpu']}\n")
    print("| configuration | batch | s/step | tokens/s | vs notebook | MFU | peak GB | 3 epochs (5.6 M tok) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        o = r["option"]
        label = o["name"] + (f" ({r['steps']}-step curve)" if r.get("curve") else "")
        if "error" in r:
            print(f"| {label} | {o['batch']} | - | - | - | - | {r.get('peak_gb', 0):.1f} | {r['error'][:60]} |")
            continue
        print(f"| {label} | {o['batch']} | {r['s_per_step']:.3f} | {r['tok_s']:,.0f} | {r['tok_s'] / b:.2f}x | "
              f"{100 * r['mfu']:.0f}% | {r['peak_gb']:.1f} | {r['epochs3_min']:.1f} min |")
    curves = [r for r in results if r.get("curve")]
    if curves:
        print("\nLoss over the same rows (every 5th step):")
        for r in curves:
            print(f"- {r['option']['name']}: " + ", ".join(f"{x:.3f}" for x in r["losses"][::5]))
    for key, opt in to_profile.items():
        print(f"\n### Kernel time: {key}\n")
        meta.setdefault("profiles", {})[key] = profile(key, opt, rows, out)
        (out / "training.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
