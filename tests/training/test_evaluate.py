"""The evaluation run: question selection, labels, the report, the gate on the command line, and
`counsel-bot eval` end to end on the real data, the real SmolLM2 and a real (tiny) PEFT adapter."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA_CSV, REPO
from training import evaluate as E
from training import metrics as M
from training.data import QA

COUNSEL_BOT = Path(sys.executable).parent / "counsel-bot"


def test_select_questions_groups_answers_and_limits_questions():
    qas = [QA("1", "q1", "a"), QA("1", "q1", "b"), QA("2", "q2", "c"), QA("3", "q3", "d"), QA("2", "q2", "e")]
    questions, refs = E.select_questions(qas, limit=2)
    assert [(q.question_id, q.text) for q in questions] == [("1", "q1"), ("2", "q2")]
    assert [[refs[i] for i in q.references] for q in questions] == [["a", "b"], ["c", "e"]]
    assert len(E.select_questions(qas, None)[0]) == 3


def test_adapter_labels_are_directory_names_and_unique(tmp_path):
    from model.loading import SHIPPED_ADAPTER_DIR

    assert E.adapter_label(str(tmp_path / "runs" / "r16-lr3e-4")) == "r16-lr3e-4"
    assert E.adapter_label(str(tmp_path / "smollm2-counsel" / "current")) == "smollm2-counsel"
    assert E.adapter_label(str(SHIPPED_ADAPTER_DIR / "v3")) == "smollm2-counsel"
    assert E.adapter_label(str(tmp_path / "a"), taken=["base", "a"]) == "a-2"
    assert E.adapter_label(str(tmp_path / "base")) == "base-2"


def test_no_adapter_given_and_no_default_adapter_means_base_only(monkeypatch, tmp_path):
    import model.loading as loading

    monkeypatch.setattr(loading, "SHIPPED_ADAPTER_DIR", tmp_path / "missing")
    targets, notes = E.models_to_evaluate(None, None)
    assert targets == [("base", None)] and "only the base model" in notes[0]
    targets, notes = E.models_to_evaluate(None, [str(tmp_path / "mine")])
    assert targets == [("base", None), ("mine", str(tmp_path / "mine"))] and notes == []


def test_load_thresholds_from_a_recipe_gate_section_and_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: smollm2\ngate:\n  max_perplexity_ratio: 0.9\n  min_similarity_delta: -0.01\n")
    th = E.load_thresholds(recipe, ["min_distinct_2_delta=null", "max_perplexity_ratio=0.8"])
    assert (th.max_perplexity_ratio, th.min_similarity_delta, th.min_distinct_2_delta) == (0.8, -0.01, None)
    assert E.load_thresholds(None).max_perplexity_ratio == 0.85
    with pytest.raises(ValueError):
        E.load_thresholds(None, ["max_perplexity_ratio"])


def _cli(*args: str, cwd: Path = REPO, timeout: int = 280) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    return subprocess.run([str(COUNSEL_BOT), "eval", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_compare_on_the_command_line_passes_and_fails(tmp_path):
    base = {"perplexity": 24.0, "similarity": 0.40, "distinct_2": 0.60, "repeated_ngram_rate": 0.05,
            "guard_pass_rate": 1.0, "crisis_recall": 0.9, "crisis_false_positive_rate": 0.05}
    good = {**base, "perplexity": 18.0, "similarity": 0.42}
    bad = {**base, "perplexity": 22.0, "distinct_2": 0.50}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"base": base, "good": good}))
    ok = _cli("--compare", "--metrics", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "gate good vs base: PASS" in ok.stdout and "PASS perplexity" in ok.stdout

    path.write_text(json.dumps({"base": base, "good": good, "bad": bad}))
    fail = _cli("--compare", "--metrics", str(path))
    assert fail.returncode == 1
    assert "gate bad vs base: FAIL" in fail.stdout
    assert "FAIL perplexity" in fail.stdout and "FAIL distinct_2" in fail.stdout
    # a looser threshold from the command line lets the perplexity check pass
    loose = _cli("--compare", "--metrics", str(path), "--threshold", "max_perplexity_ratio=0.95",
                 "--threshold", "min_distinct_2_delta=-0.2")
    assert loose.returncode == 0, loose.stdout


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory) -> Path:
    """A real LoRA adapter (r=2 on q/v, non-zero weights) made with peft on the converted SmolLM2."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from model.loading import ModelSpec, resolve_base

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_base(ModelSpec()), dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("adapters") / "tiny-adapter"
    peft_model.save_pretrained(out)
    return out


def test_counsel_bot_eval_end_to_end(tmp_path, tiny_adapter):
    out = tmp_path / "tmp"
    proc = _cli("--data", str(DATA_CSV), "--limit", "3", "--out", str(out), "--adapter", str(tiny_adapter),
                "--max-new-tokens", "16", "--max-reference-tokens", "320", "--no-progress", "--samples", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["base", "tiny-adapter"]
    for label, m in metrics.items():
        assert m["n_questions"] == 3 and m["n_references"] >= 3
        assert 1.0 < m["perplexity"] < 1e6 and math.isfinite(m["perplexity"])
        assert -1.0 <= m["similarity"] <= 1.0
        assert 0.0 <= m["distinct_2"] <= 1.0 and 0.0 <= m["repeated_ngram_rate"] <= 1.0
        assert m["mean_words"] > 0 and m["completion_tokens"] > 0 and m["tokens_per_second"] > 0
        assert 0.0 <= m["guard_pass_rate"] <= 1.0
        assert 0.0 <= m["crisis_recall"] <= 1.0 and 0.0 <= m["crisis_false_positive_rate"] <= 1.0
        # two sampled replies per question (seeds 0 and 1): the figures are the means of the two samples'
        assert m["samples"] == 2 and m["seeds"] == [0, 1] and len(m["per_sample"]["similarity"]) == 2
        assert m["similarity"] == pytest.approx(sum(m["per_sample"]["similarity"]) / 2)
        assert m["distinct_2"] == pytest.approx(sum(m["per_sample"]["distinct_2"]) / 2)
        assert m["seed_se"]["similarity"] is not None and m["seed_se"]["similarity"] >= 0
    vs = metrics["tiny-adapter"]["vs_base"]
    assert set(vs) == set(M.PAIRED_METRICS) and vs["similarity"]["n_questions"] == 3
    assert vs["similarity"]["delta"] == pytest.approx(metrics["tiny-adapter"]["similarity"]
                                                      - metrics["base"]["similarity"])
    assert vs["distinct_2"]["se"] >= 0 and "vs_base" not in metrics["base"]
    assert metrics["base"]["adapter"] is None and metrics["tiny-adapter"]["adapter"] == str(tiny_adapter)
    # the adapter was really applied: the same reference answers get another likelihood
    assert metrics["tiny-adapter"]["perplexity"] != pytest.approx(metrics["base"]["perplexity"], rel=1e-3)

    report = (out / "report.md").read_text()
    assert "| metric | `base` | `tiny-adapter` |" in report and "reference perplexity" in report
    assert "## Example replies (sample 0: seed 0)" in report and "**tiny-adapter**" in report
    assert "2 replies per question (seeds 0..1)" in report and "## Adapter − base, paired over questions" in report
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    replies = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == 12 and {r["model"] for r in replies} == {"base", "tiny-adapter"}
    assert {(r["sample"], r["seed"]) for r in replies} == {(0, 0), (1, 1)}
    run = json.loads((out / "run.json").read_text())
    assert run["sampling"] == {"samples": 2, "seeds": [0, 1]}
    assert run["data"]["questions"] == 3 and run["safety_set"]["n_crisis"] > 0
    assert "base:" in proc.stdout and "tiny-adapter:" in proc.stdout

    # the gate on the figures just written (a random adapter does not lower perplexity by 15%)
    gate = _cli("--compare", "--metrics", str(out / "metrics.json"))
    assert gate.returncode == 1 and "FAIL perplexity" in gate.stdout


def test_report_renders_gate_and_missing_safety_set(tmp_path):
    q = [E.Question("7", "How do I stop worrying?", (0,))]
    base = {"perplexity": 20.0, "similarity": 0.3, "distinct_2": 0.5, "crisis_recall": None,
            "crisis_false_positive_rate": None}
    cand = {**base, "perplexity": 15.0, "similarity": 0.35}
    result = E.EvalResult({"base": base, "cand": cand}, {"base": ["Try this."], "cand": ["Breathe slowly."]}, q,
                          ["A therapist's answer."], {"notes": ["The safety set x is missing."]},
                          {"cand": M.compare(base, cand, M.Thresholds())})
    E.write_outputs(tmp_path, result, {"base": [], "cand": []})
    report = (tmp_path / "report.md").read_text()
    assert "| reference perplexity (lower is better) | 20.00 | 15.00 (-25%) |" in report
    assert "crisis screen recall (higher is better) | n/a | n/a" in report
    assert "## Gate: `cand` vs `base`: PASS" in report and "> The safety set x is missing." in report
    assert "- **cand**: Breathe slowly." in report
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"base": base, "cand": cand}


def test_the_sampling_seed_does_not_move_the_held_out_split(tmp_path):
    """Without a split column the held-out questions depend on the split seed (as in training), never on --seed."""
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"Context": f"Question number {i} about my worries?",
                                       "Response": f"A considered answer to question {i}, long enough to keep."}) + "\n"
                           for i in range(40)))
    base = E.EvalConfig(data=str(src), limit=None)
    held_out = [q.text for q in E.held_out_questions(base)[0]]
    assert len(held_out) == 4
    assert [q.text for q in E.held_out_questions(E.EvalConfig(data=str(src), limit=None, seed=7))[0]] == held_out
    assert [q.text for q in E.held_out_questions(E.EvalConfig(data=str(src), limit=None, split_seed=7))[0]
            ] != held_out
    from training.data import load_split

    train = {qa.question for qa in load_split(str(src), "train")}
    assert train.isdisjoint(held_out)


def test_samples_per_question_and_their_seeds():
    assert E.effective_samples(3, 0.7) == (3, None)
    k, note = E.effective_samples(3, 0.0)  # greedy: the same reply every time
    assert k == 1 and "collapsed to 1" in note
    assert E.effective_samples(1, 0.0) == (1, None)
    with pytest.raises(ValueError, match="at least 1"):
        E.effective_samples(0, 0.7)
    assert E.sample_seeds(5, 3) == [5, 6, 7] and E.sample_seeds(0, 1) == [0]


def test_samples_below_one_are_refused_before_any_model_loads(tmp_path):
    proc = _cli("--samples", "0", "--limit", "1", "--out", str(tmp_path / "x"), timeout=60)
    assert proc.returncode == 1 and "at least 1" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_report_shows_sample_errors_and_the_paired_differences(tmp_path):
    q = [E.Question("7", "How do I stop worrying?", (0,))]
    base = {"perplexity": 20.0, "similarity": 0.5, "distinct_2": 0.6, "seed_se": {"similarity": 0.004}}
    cand = {**base, "perplexity": 15.0, "similarity": 0.495, "seed_se": {"similarity": 0.003},
            "vs_base": {"similarity": {"delta": -0.005, "se": 0.01}}}
    info = {"config": {"temperature": 0.7, "top_p": 0.9, "seed": 0}, "sampling": {"samples": 3, "seeds": [0, 1, 2]}}
    result = E.EvalResult({"base": base, "cand": cand}, {"base": ["a"], "cand": ["b"]}, q, ["ref"], info,
                          {"cand": M.compare(base, cand, {"min_distinct_2_delta": None})})
    E.write_outputs(tmp_path, result, {"base": [], "cand": []})
    report = (tmp_path / "report.md").read_text()
    assert "3 replies per question (seeds 0..2)" in report
    assert "| similarity to references (higher is better) | 0.500 ± 0.004 | 0.495 ± 0.003 (-1%) |" in report
    assert "| `cand` | similarity | -0.0050 | 0.0100 | [-0.0246, +0.0146] |" in report
    assert "## Gate: `cand` vs `base`: PASS" in report and "-0.005 ± 0.01 SE (need candidate-base + 1*SE >= +0)" \
        in report
