"""Supervised fine-tuning of a LoRA / QLoRA adapter on counseling answers, driven by a recipe.

    counsel-bot train --recipe training/recipes/smollm2-cpu.yaml --set max_steps=20
    python -m training.train --recipe smollm2-qlora --base /path/to/SmolLM2-folder --data counsel_chat.csv

Examples are rendered with `model.prompt.training_example`, the exact format the worker serves (system prompt +
question -> answer), as prompt/completion pairs: trl then trains on the answer tokens only. Everything a run
produces goes into `runs/<timestamp>-<recipe>/`: the adapter, the resolved recipe, metrics, a loss curve and the
data report.

bitsandbytes on CPU: a no-grad forward of the 4-bit model before training repacks its weights into a format without
autograd and training silently learns nothing. So with 4-bit on CPU the "before" eval loss is measured on a separate,
unquantized copy of the base, never on the model being trained.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from training.data import QA, DataReport, load_split_with_report, split_counts
from training.recipe import Recipe, resolve_data

log = logging.getLogger(__name__)

MIN_COMPLETION_TOKENS = 16  # an example whose prompt leaves fewer answer tokens than this teaches nothing


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Path
    metrics: dict[str, Any]


# --- model -------------------------------------------------------------------------------------------------------

def training_device(recipe: Recipe) -> str:
    from model.loading import pick_device

    return pick_device(recipe.device)


def use_bf16(recipe: Recipe, device: str) -> bool:
    if recipe.bf16 is not None:
        return recipe.bf16
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_bf16_supported()
    # CPU: fp32. bf16 autocast made a LoRA forward+backward of SmolLM2 ~20x slower on this machine's CPU
    # (2 x 64 tokens: 45 s vs 2.4 s), even with AVX512-BF16.
    return False


def quantization_config(recipe: Recipe):
    """NF4 (+ double quantization) as the recipe says, or None."""
    if not recipe.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=recipe.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=recipe.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, recipe.bnb_4bit_compute_dtype))


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=recipe.target_modules, bias="none", task_type="CAUSAL_LM")


def resolve_base_path(recipe: Recipe) -> str:
    from model.loading import ModelSpec, resolve_base

    return resolve_base(ModelSpec(base=recipe.base))


def load_training_tokenizer(base: str):
    from model.loading import load_tokenizer

    tok = load_tokenizer(base)
    tok.padding_side = "right"
    return tok


def load_base_model(recipe: Recipe, base: str, device: str, quantize: bool | None = None):
    """A fresh base model (never one that already ran inference: see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    four_bit = recipe.load_in_4bit if quantize is None else quantize
    # GPU: bf16 weights under bf16 autocast; CPU: fp32 weights (bf16 weights or autocast make backward far slower).
    dtype = torch.bfloat16 if use_bf16(recipe, device) and device.startswith("cuda") else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if recipe.attn_implementation == "varlen":  # padding-free rows without a mask (training/attention.py)
        from training import attention

        kwargs["attn_implementation"] = attention.register()
    elif recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    if four_bit:
        kwargs["quantization_config"] = quantization_config(recipe)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    if not four_bit:
        model.to(device)
    return model


def build_model(recipe: Recipe, base: str | None = None, device: str | None = None):
    """(peft model ready to train, tokenizer, base path). 4-bit recipes get QLoRA's k-bit preparation."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from training.fused_lora import fuse_lora_output

    base = base or resolve_base_path(recipe)
    device = device or training_device(recipe)
    tokenizer = load_training_tokenizer(base)
    model = load_base_model(recipe, base, device)
    if recipe.load_in_4bit and recipe.kbit_upcast:  # the notebook: fp32 norms, embeddings and output layer
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    elif recipe.load_in_4bit:  # bf16 throughout (25% faster on an H100, same loss curve: benchmarks/RESULTS.md)
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(recipe))
    if use_bf16(recipe, device):
        keep_lora_inputs_bf16(model)
    fuse_lora_output(model)  # LoRA's scaling and add inside its product (training/fused_lora.py)
    return model, tokenizer, base


def keep_lora_inputs_bf16(model) -> int:
    """Under autocast, stop peft from copying each LoRA layer's bf16 input to float32 before the adapter: autocast
    casts it back to bf16 for the matrix products anyway, so the copies (and a float32 dropout) only cost memory
    traffic. peft's own 4-bit layers already skip the copy under autocast; this gives bf16 base layers the same rule
    (without autocast the copy still happens, so float32 adapter weights always get float32 inputs).
    Returns the number of layers changed."""
    import types

    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    def cast_unless_autocast(self, x, dtype):
        if x is None or x.dtype == dtype or torch.is_autocast_enabled(x.device.type):
            return x
        return x.to(dtype=dtype)

    n = 0
    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and hasattr(module, "_cast_input_dtype"):
            module._cast_input_dtype = types.MethodType(cast_unless_autocast, module)
            n += 1
    return n


# --- data --------------------------------------------------------------------------------------------------------

def to_examples(rows: list[QA], tokenizer, max_length: int, report: DataReport | None = None,
                split: str = "train") -> list[dict]:
    """prompt/completion dicts in the served format; rows whose prompt leaves no room for an answer are counted
    (in the report under "<split>: prompt too long", with their 1-based position in that split)."""
    from model.prompt import training_example

    out = []
    for i, qa in enumerate(rows):
        ex = training_example(tokenizer, qa.question, qa.answer)
        n_prompt = len(tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"])
        if n_prompt > max_length - MIN_COMPLETION_TOKENS:
            if report is not None:
                report.add_drop(f"{split}: prompt too long for max_length {max_length}", i + 1)
            continue
        out.append(ex)
    return out


def drop_guard_violations(rows: list[QA], report: DataReport) -> list[QA]:
    """Training answers the served output guard would block (claims to be a therapist, phone numbers and links,
    medication doses, diagnoses...) are not taught: the model would learn to write replies the bot then refuses.
    Counted in the data report as "guard: <reason>" (the first reason of each); held-out answers are kept."""
    from bot.safety import Guard

    guard, kept = Guard(), []
    for n, qa in enumerate(rows, 1):
        found = guard.violations(qa.answer)
        if found:
            report.add_drop(f"guard: {found[0]}", n)
        else:
            kept.append(qa)
    return kept


def build_datasets(recipe: Recipe, tokenizer):
    """(train Dataset, eval Dataset, data report dict)."""
    from datasets import Dataset

    source = resolve_data(recipe.data)
    train_rows, report = load_split_with_report(source, "train", recipe.eval_fraction, recipe.seed,
                                                recipe.data_limit)
    eval_rows, _ = load_split_with_report(source, "eval", recipe.eval_fraction, recipe.seed, recipe.data_limit)
    if recipe.drop_guard_violations:
        train_rows = drop_guard_violations(train_rows, report)
    if recipe.eval_limit is not None:
        eval_rows = eval_rows[:recipe.eval_limit]
    train_examples = to_examples(train_rows, tokenizer, recipe.max_length, report)
    eval_examples = to_examples(eval_rows, tokenizer, recipe.max_length, report, split="eval")
    if not train_examples:
        raise ValueError(f"no usable training examples in {source}: {report.summary()}")
    info = {**report.as_dict(), **split_counts(train_rows, eval_rows),
            "train_examples": len(train_examples), "eval_examples": len(eval_examples)}
    eval_ds = Dataset.from_list(eval_examples) if eval_examples else None
    return Dataset.from_list(train_examples), eval_ds, info


# --- trainer -----------------------------------------------------------------------------------------------------

def sft_config(recipe: Recipe, run_dir: Path, device: str):
    from trl import SFTConfig

    liger = recipe.use_liger_kernel
    if liger:
        import importlib.util

        if importlib.util.find_spec("liger_kernel") is None or device != "cuda":
            # Speed only (the loss is the same): train without rather than stop.
            log.warning("use_liger_kernel: %s; training without Liger's fused kernels",
                        "not on a CUDA GPU" if device != "cuda" else
                        "the liger-kernel package is missing (pip install -e '.[train-gpu]')")
            liger = False
    return SFTConfig(
        output_dir=str(run_dir / "trainer"),
        seed=recipe.seed, data_seed=recipe.seed,
        learning_rate=recipe.learning_rate, lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio, max_grad_norm=recipe.max_grad_norm, optim=recipe.optim,
        weight_decay=recipe.weight_decay, neftune_noise_alpha=recipe.neftune_noise_alpha,
        num_train_epochs=recipe.num_train_epochs, max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        per_device_eval_batch_size=recipe.per_device_eval_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        gradient_checkpointing=recipe.gradient_checkpointing,
        use_liger_kernel=liger,
        bf16=use_bf16(recipe, device), fp16=False, use_cpu=device == "cpu",
        max_length=recipe.max_length,
        # Padding-free = BFD packing with per-example position ids: transformers builds a block-diagonal mask from
        # them, so packed examples never attend to each other (unlike the notebook's plain concatenation).
        packing=recipe.padding_free, packing_strategy="bfd", padding_free=recipe.padding_free,
        completion_only_loss=True,
        logging_steps=recipe.logging_steps, logging_first_step=True,
        save_strategy="no", eval_strategy="no", report_to="none", prediction_loss_only=True,
        dataloader_num_workers=0, dataset_num_proc=None,
    )


def build_trainer(recipe: Recipe, model, tokenizer, train_ds, eval_ds, run_dir: Path, device: str):
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=sft_config(recipe, run_dir, device), train_dataset=train_ds,
                      eval_dataset=eval_ds, processing_class=tokenizer)


# --- measurements ------------------------------------------------------------------------------------------------

def peak_memory_mb(device: str) -> dict[str, float]:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        out["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out


def eval_loss_unquantized(recipe: Recipe, base: str, tokenizer, eval_ds, run_dir: Path, device: str) -> float | None:
    """Eval loss of the unquantized base (the 4-bit model must not run inference before training on CPU)."""
    import gc

    from peft import get_peft_model

    model = get_peft_model(load_base_model(recipe, base, device, quantize=False), lora_config(recipe))
    trainer = build_trainer(recipe, model, tokenizer, eval_ds, eval_ds, run_dir, device)
    loss = trainer.evaluate().get("eval_loss")
    del trainer, model
    gc.collect()
    return loss


def loss_history(log_history: list[dict]) -> list[dict]:
    return [{"step": e["step"], "loss": e["loss"]} for e in log_history if "loss" in e and "step" in e]


def plot_loss(history: list[dict], eval_before: float | None, eval_after: float | None, path: Path,
              title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss (answer tokens)")
    last = history[-1]["step"] if history else 1
    if eval_before is not None:
        ax.scatter([0], [eval_before], color="tab:red", zorder=3, label=f"eval loss before {eval_before:.3f}")
    if eval_after is not None:
        ax.scatter([last], [eval_after], color="tab:green", zorder=3, label=f"eval loss after {eval_after:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_adapter(model, path: Path, save_dtype: str | None) -> Path:
    """Save the LoRA weights only, cast to `save_dtype` (bf16 halves the file: r=16 all-linear on SmolLM2 is
    ~9 MB instead of ~19 MB; peft casts them back to the adapter's dtype when loading)."""
    import torch

    state = None
    if save_dtype:
        dt = getattr(torch, save_dtype)
        state = {k: (v.detach().to(dt) if "lora_" in k and v.is_floating_point() else v)
                 for k, v in model.state_dict().items()}
    model.save_pretrained(path, state_dict=state)
    card = path / "README.md"  # peft's empty model-card template (with local paths); training_report.json says more
    if card.exists() and "[More Information Needed]" in card.read_text():
        card.unlink()
    return path


def dir_size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 2)


def new_run_dir(recipe: Recipe, run_dir: Path | None = None) -> Path:
    if run_dir is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_dir = Path(recipe.output_root) / f"{stamp}-{recipe.name}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} is not empty")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _ppl(loss: float | None) -> float | None:
    return round(math.exp(loss), 3) if loss is not None and loss < 50 else None


# --- main --------------------------------------------------------------------------------------------------------

def main(recipe: Recipe, run_dir: Path | None = None) -> RunResult:
    """Train one adapter as the recipe says and write the run directory. Returns where everything went."""
    import torch
    from transformers import set_seed

    run_dir = new_run_dir(recipe, run_dir)
    (run_dir / "config.yaml").write_text(recipe.to_yaml())
    set_seed(recipe.seed)
    device = training_device(recipe)
    log.info("run %s: recipe %s on %s (4-bit=%s)", run_dir, recipe.name, device, recipe.load_in_4bit)

    # 1. model + tokenizer (fresh: nothing has run inference on it)
    model, tokenizer, base = build_model(recipe, device=device)
    model.print_trainable_parameters()

    # 2. data: cleaned, split by question, rendered in the served prompt format
    train_ds, eval_ds, data_info = build_datasets(recipe, tokenizer)
    (run_dir / "data_report.json").write_text(json.dumps(data_info, indent=2))
    log.info("data: %d train / %d eval examples; dropped %s", data_info["train_examples"],
             data_info["eval_examples"], data_info["dropped"])

    # 3. trainer (completion-only loss: prompt tokens are masked out of the loss)
    trainer = build_trainer(recipe, model, tokenizer, train_ds, eval_ds, run_dir, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    # 4. eval loss before training (never a forward of the 4-bit model on CPU before training)
    before_source = "model"
    if eval_ds is None:
        eval_before = None
    elif recipe.load_in_4bit and device == "cpu":
        eval_before, before_source = eval_loss_unquantized(recipe, base, tokenizer, eval_ds, run_dir, device), \
            "unquantized base (4-bit on CPU)"
    else:
        eval_before = trainer.evaluate().get("eval_loss")

    # 5. train
    t0 = time.perf_counter()
    train_out = trainer.train()
    train_s = time.perf_counter() - t0

    # 6. eval after, save the adapter
    eval_after = trainer.evaluate().get("eval_loss") if eval_ds is not None else None
    adapter_dir = save_adapter(trainer.model, run_dir / "adapter", recipe.save_dtype)

    history = loss_history(trainer.state.log_history)
    tokens = next((e["num_tokens"] for e in reversed(trainer.state.log_history) if "num_tokens" in e), None)
    steps = trainer.state.global_step
    metrics = {
        "recipe": recipe.name, "base": base, "device": device, "load_in_4bit": recipe.load_in_4bit,
        "bf16": use_bf16(recipe, device), "padding_free": recipe.padding_free,
        "steps": steps, "epochs": round(trainer.state.epoch or 0, 3),
        "train_loss": history, "train_loss_mean": train_out.training_loss,
        "eval_loss_before": eval_before, "eval_loss_before_measured_on": before_source,
        "eval_loss_after": eval_after, "perplexity_before": _ppl(eval_before), "perplexity_after": _ppl(eval_after),
        "train_seconds": round(train_s, 2), "seconds_per_step": round(train_s / max(steps, 1), 3),
        "tokens_trained": tokens, "tokens_per_second": round(tokens / train_s, 1) if tokens else None,
        **peak_memory_mb(device),
        "adapter_mb": dir_size_mb(adapter_dir),
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "train_examples": data_info["train_examples"], "eval_examples": data_info["eval_examples"],
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (adapter_dir / "training_report.json").write_text(json.dumps(
        {"recipe": recipe.to_dict(), "metrics": {k: v for k, v in metrics.items() if k != "train_loss"},
         "data": data_info}, indent=2, default=str))
    plot_loss(history, eval_before, eval_after, run_dir / "loss.png", f"{recipe.name} on {device}")
    log.info("done: %d steps in %.0f s; eval loss %s -> %s; adapter %s (%.1f MB)", steps, train_s, eval_before,
             eval_after, adapter_dir, metrics["adapter_mb"])
    return RunResult(run_dir=run_dir, adapter_dir=adapter_dir, metrics=metrics)


def summary_lines(result: RunResult) -> list[str]:
    m = result.metrics
    return [f"run directory : {result.run_dir}",
            f"adapter       : {result.adapter_dir} ({m['adapter_mb']} MB)",
            f"steps         : {m['steps']} in {m['train_seconds']} s ({m['seconds_per_step']} s/step, "
            f"{m['tokens_per_second']} tokens/s)",
            f"eval loss     : {m['eval_loss_before']} -> {m['eval_loss_after']} "
            f"(perplexity {m['perplexity_before']} -> {m['perplexity_after']})",
            f"peak memory   : {m.get('peak_cuda_allocated_mb', m['peak_rss_mb'])} MB"]


if __name__ == "__main__":
    from bot.cli import app

    app(["train", *__import__("sys").argv[1:]])
