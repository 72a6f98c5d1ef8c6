"""Recipes, the completion-only loss mask, padding-free packing, and a CPU smoke run with the real SmolLM2."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import DATA_CSV
from training.recipe import RECIPES_DIR, Recipe, RecipeError, apply_overrides, load_recipe

# --- recipes -----------------------------------------------------------------------------------------------------


def test_every_shipped_recipe_parses():
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert names == ["llama2-7b-qlora", "smollm2-cpu", "smollm2-lora", "smollm2-qlora"]
    for name in names:
        r = load_recipe(name)
        assert r.name == name and r.target_modules


def test_llama2_recipe_matches_the_original_notebook():
    r = load_recipe(RECIPES_DIR / "llama2-7b-qlora.yaml")
    assert r.base == "meta-llama/Llama-2-7b-chat-hf" and r.data == "Amod/mental_health_counseling_conversations"
    assert (r.load_in_4bit, r.bnb_4bit_quant_type, r.bnb_4bit_use_double_quant, r.bnb_4bit_compute_dtype) == \
        (True, "nf4", True, "bfloat16")
    assert (r.lora_r, r.lora_alpha, r.lora_dropout, r.target_modules) == (64, 16, 0.1, ["q_proj", "v_proj"])
    assert (r.learning_rate, r.lr_scheduler_type, r.warmup_ratio, r.max_grad_norm, r.optim) == \
        (1e-4, "constant_with_warmup", 0.03, 0.3, "paged_adamw_8bit")
    assert (r.num_train_epochs, r.max_length, r.padding_free) == (3, 2048, True)
    # trained the fast way (issue #10): same loss, 2.4x the notebook's tokens/s on an H100
    assert (r.attn_implementation, r.use_liger_kernel, r.gradient_checkpointing, r.kbit_upcast) == \
        ("varlen", True, False, False)


def test_smollm2_recipes():
    cpu, gpu = load_recipe("smollm2-cpu"), load_recipe("smollm2-qlora")
    for r in (cpu, gpu):
        assert r.base is None and (r.lora_r, r.lora_alpha, r.target_modules, r.learning_rate) == \
            (16, 32, "all-linear", 3e-4)
    assert not cpu.load_in_4bit and cpu.max_steps == 120
    assert gpu.load_in_4bit and gpu.optim == "paged_adamw_8bit"


def test_overrides_are_typed_and_checked(tmp_path):
    r = load_recipe("smollm2-cpu", ["max_steps=3", "bf16=true", "learning-rate=1e-3", "target_modules=[q_proj,v_proj]",
                                    "data=007", "eval_limit=null", "num_train_epochs=2"])
    assert (r.max_steps, r.bf16, r.learning_rate, r.target_modules, r.data, r.eval_limit, r.num_train_epochs) == \
        (3, True, 1e-3, ["q_proj", "v_proj"], "007", None, 2.0)
    for bad in (["max_stepz=3"], ["max_steps=many"], ["lora_r"], ["padding_free=[1]"], ["lora_r=null"]):
        with pytest.raises(RecipeError):
            load_recipe("smollm2-cpu", bad)
    # the resolved recipe written to a run directory reloads to the same recipe
    path = tmp_path / "config.yaml"
    path.write_text(r.to_yaml())
    assert load_recipe(path) == r
    with pytest.raises(RecipeError):
        load_recipe(tmp_path / "missing.yaml")


# --- data as the trainer sees it ---------------------------------------------------------------------------------

def _real_rows(n: int, max_answer_chars: int = 400) -> list[dict]:
    """Real rows short enough to fit 256 tokens whole (system prompt + question + answer)."""
    with DATA_CSV.open(encoding="utf-8", newline="") as f:
        return [r for r in csv.DictReader(f) if len(r["questionTitle"] + r["questionText"]) < 200
                and len(r["answerText"]) < max_answer_chars][:n]


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """8 short real answers: 6 from the train split, 2 from val (few, so a few steps see each one twice)."""
    with DATA_CSV.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    short = [r for r in rows if len(r["questionTitle"] + r["questionText"]) < 200 and len(r["answerText"]) < 400]
    chosen = [r for r in short if r["split"] == "train"][:6] + [r for r in short if r["split"] == "val"][:2]
    path = tmp_path_factory.mktemp("data") / "small.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(chosen)
    return path


def _tiny(**kw) -> Recipe:
    base = ["max_length=256", "per_device_train_batch_size=2", "per_device_eval_batch_size=4", "logging_steps=1"]
    return apply_overrides(load_recipe("smollm2-cpu"), base + [f"{k}={v}" for k, v in kw.items()])


def _trainer(recipe: Recipe, tmp_path, rows: list[dict]):
    from datasets import Dataset

    from model.prompt import training_example
    from training.train import build_model, build_trainer

    model, tok, _ = build_model(recipe, device="cpu")
    examples = [training_example(tok, r["questionTitle"] + "\n\n" + r["questionText"], r["answerText"])
                for r in rows]
    trainer = build_trainer(recipe, model, tok, Dataset.from_list(examples), None, tmp_path, "cpu")
    return trainer, tok, examples


def test_loss_is_on_the_answer_tokens_only(tmp_path):
    trainer, tok, examples = _trainer(_tiny(), tmp_path, _real_rows(2))
    for row, ex in zip(trainer.train_dataset, examples, strict=True):
        n_prompt = len(tok(ex["prompt"], add_special_tokens=False)["input_ids"])
        labels = row["labels"]
        assert all(lab == -100 for lab in labels[:n_prompt])  # system prompt + question: no loss
        assert labels[n_prompt:] == row["input_ids"][n_prompt:]  # the answer (and its end-of-turn): loss
        answer = tok.decode(labels[n_prompt:])
        assert answer.endswith(tok.eos_token)
        assert ex["completion"].startswith(answer.removesuffix(tok.eos_token)[:80])


def test_padding_free_packing_never_attends_across_examples(tmp_path):
    """A packed batch (one row, position ids restarting per example) gives each example exactly the logits it
    gets alone: the notebook's plain concatenation would let example 2 attend to example 1."""
    import torch

    trainer, tok, _ = _trainer(_tiny(padding_free="true"), tmp_path, _real_rows(3, max_answer_chars=300))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    pos = batch["position_ids"][0]
    starts = [i for i in range(len(pos)) if pos[i] == 0]
    assert len(starts) == 2  # two examples packed in one row of at most max_length tokens
    model = trainer.model.eval()
    ids = batch["input_ids"]
    with torch.inference_mode():
        packed = model(input_ids=ids, position_ids=batch["position_ids"]).logits[0]
        for a, b in zip(starts, starts[1:] + [ids.shape[1]], strict=True):
            alone = model(input_ids=ids[:, a:b]).logits[0]
            assert torch.allclose(packed[a:b], alone, atol=1e-3), (a, b)
    labels = batch["labels"][0]
    assert labels[starts[1]] == -100  # the second example's first token is prompt, never a target


# --- CPU smoke run -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(small_csv, tmp_path_factory):
    from bot.cli import app

    run_dir = tmp_path_factory.mktemp("run")
    args = ["train", "--recipe", "smollm2-cpu", "--data", str(small_csv), "--max-steps", "6", "--run-dir",
            str(run_dir), "--set", "per_device_train_batch_size=2", "--set", "max_length=256",
            "--set", "learning_rate=3e-3", "--set", "eval_limit=2"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir, result.output


def test_smoke_run_learns_and_writes_the_run_directory(smoke_run):
    run_dir, output = smoke_run
    assert f"run directory : {run_dir}" in output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = [h["loss"] for h in metrics["train_loss"]]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # train loss falls
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]  # held-out answers became likelier
    assert metrics["tokens_trained"] > 0 and metrics["tokens_per_second"] > 0 and metrics["peak_rss_mb"] > 0
    adapter = run_dir / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert metrics["adapter_mb"] <= 10
    report = json.loads((adapter / "training_report.json").read_text())
    assert report["recipe"]["max_steps"] == 6 and report["data"]["train_questions"] > 0
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["max_steps"] == 6 and config["learning_rate"] == 3e-3
    data = json.loads((run_dir / "data_report.json").read_text())
    assert data["rows_read"] == 8 and data["train_examples"] == 6 and data["eval_answers"] == 2
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_adapter_reloads_and_changes_the_output(smoke_run):
    import torch

    from model.loading import ModelSpec, load
    from model.prompt import render

    run_dir, _ = smoke_run
    question = _real_rows(40)[-1]["questionText"]

    def greedy(adapter: str | None) -> str:
        lm = load(ModelSpec(adapter=adapter or "none", device="cpu", dtype="float32"))
        assert lm.adapter == adapter
        prompt = render(lm.tokenizer, [], question)
        enc = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = lm.model.generate(**enc, max_new_tokens=24, do_sample=False)
        return lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    tuned = greedy(str(run_dir / "adapter"))
    assert tuned.strip() and tuned != greedy(None)


def test_answers_the_output_guard_would_block_are_not_taught():
    from training.data import QA, DataReport
    from training.train import drop_guard_violations

    rows = [QA("q1", "I feel low.", "That sounds heavy. What has the last week been like for you?"),
            QA("q2", "Who can I call?", "Call my office at 555-867-5309 and we can set up a session."),
            QA("q3", "Are you real?", "As a licensed therapist with twenty years of practice, I can tell you it gets better."),
            QA("q4", "Where do I read more?", "Read more at https://example.com/anxiety-tips for exercises.")]
    report = DataReport(rows_read=4, kept=4, dropped={})
    kept = drop_guard_violations(rows, report)
    assert [qa.question_id for qa in kept] == ["q1"]
    assert report.dropped == {"guard: phone_number": 1, "guard: claims_human_or_clinician": 1, "guard: link": 1}


def test_lora_inputs_stay_bf16_under_autocast_with_the_same_output():
    """training.train.keep_lora_inputs_bf16: peft copies a bf16 layer's input to float32 before a float32 adapter,
    and autocast casts it straight back for the matrix product; with the copy skipped under autocast the output is
    identical, and without autocast the copy still happens (float32 weights need float32 inputs)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.train import keep_lora_inputs_bf16

    torch.manual_seed(0)
    model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(64, 64)).to(torch.bfloat16),
                           LoraConfig(r=4, target_modules=["0"], lora_dropout=0.0, init_lora_weights="gaussian"))
    seen: list[torch.dtype] = []
    model.base_model.model[0].lora_A["default"].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(x)
    assert keep_lora_inputs_bf16(model) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(x)
    plain = model(x)
    assert seen == [torch.float32, torch.bfloat16, torch.float32]
    assert torch.equal(before, after) and plain.dtype == torch.bfloat16


def test_the_recipe_model_sums_lora_inside_its_product():
    """build_model gives every LoRA layer training.fused_lora's forward (tested against peft's in test_fused_lora)."""
    from peft.tuners.lora import LoraLayer

    from training.train import build_model

    model, _, _ = build_model(_tiny(), device="cpu")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 7 * model.config.num_hidden_layers  # all-linear in the smollm2-cpu recipe
    assert all(hasattr(m, "_peft_forward") for m in layers)
