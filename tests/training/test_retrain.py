"""The admins' retrain path: registry versions and the atomic `current` link, the gate's decision, and
promotion / refusal / rollback end to end with the real SmolLM2 scoring held-out answers and a real Redis signal."""

from __future__ import annotations

import json
import os
import time

import pytest
from typer.testing import CliRunner

from model import keys
from training.gate import Score, decide
from training.recipe import apply_overrides, load_recipe
from training.registry import ROOT_LABEL, AdapterRegistry, RegistryError

# --- registry (file system only) ---------------------------------------------------------------------------------


def _fake_adapter(path, tag: str):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"tag": tag}))
    (path / "adapter_model.safetensors").write_bytes(tag.encode())
    return path


def test_registry_versions_current_link_and_history(tmp_path):
    reg = AdapterRegistry(tmp_path / "reg")
    assert reg.current_path() is None and reg.next_version() == "v0001"
    with pytest.raises(RegistryError):
        reg.rollback_target()
    with pytest.raises(RegistryError):
        reg.promote(tmp_path)  # no adapter_config.json there

    private = _fake_adapter(tmp_path / "a", "a")
    for f in private.iterdir():
        f.chmod(0o600)  # as safetensors may leave a trained adapter
    v1 = reg.promote(private, extra_files={"gate.json": "{}"})
    v2 = reg.promote(_fake_adapter(tmp_path / "b", "b"))
    assert (v1, v2) == ("v0001", "v0002") and reg.versions() == [v1, v2]
    link = reg.root / "current"
    assert os.readlink(link) == "v0002"  # relative: the registry folder can move
    assert reg.current_path() == (reg.root / "v0002").resolve()
    assert (reg.root / "v0001" / "gate.json").exists()
    assert (reg.root / "v0001").stat().st_mode & 0o777 == 0o755  # readable by workers running as another user
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in (reg.root / "v0001").iterdir())
    assert json.loads((reg.current_path() / "adapter_config.json").read_text())["tag"] == "b"
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".")]  # no temp leftovers

    assert reg.rollback() == "v0001" and reg.current_version() == "v0001"
    with pytest.raises(RegistryError):  # v0001 was the first version ever served
        reg.rollback()
    assert reg.promote(_fake_adapter(tmp_path / "c", "c")) == "v0003"  # numbers are never reused
    assert reg.history() == ["v0001", "v0003"]


def test_registry_root_adapter_is_the_bottom_of_the_history(tmp_path):
    """The shipped folder held an adapter before versioning: rolling back past v0001 serves it again."""
    root = _fake_adapter(tmp_path / "smollm2-counsel", "shipped")
    reg = AdapterRegistry(root)
    assert reg.current_label() == ROOT_LABEL and reg.current_path() == root.resolve()
    reg.promote(_fake_adapter(tmp_path / "new", "new"))
    assert reg.current_path() == (root / "v0001").resolve()
    assert reg.rollback() == ROOT_LABEL
    assert not (root / "current").exists() and reg.current_path() == root.resolve()


def test_resolve_adapter_follows_the_current_link(tmp_path, monkeypatch):
    from model import loading

    root = tmp_path / "smollm2-counsel"
    reg = AdapterRegistry(root)
    reg.promote(_fake_adapter(tmp_path / "a", "a"))
    monkeypatch.setattr(loading, "SHIPPED_ADAPTER_DIR", root)
    assert loading.resolve_adapter(loading.ModelSpec()) == str((root / "v0001").resolve())


# --- the gate's decision (pure) ----------------------------------------------------------------------------------

def _score(label: str, ppl: float) -> Score:
    import math

    return Score(label=label, adapter=None, loss=math.log(ppl), perplexity=ppl, tokens=100, answers=4)


@pytest.mark.parametrize("candidate, current, tolerance, promote", [
    (17.0, 24.0, 0.0, True),
    (24.0, 24.0, 0.0, True),  # not worse
    (24.1, 24.0, 0.0, False),
    (24.1, 24.0, 0.01, True),
    (float("nan"), 24.0, 0.5, False),
])
def test_decide(candidate, current, tolerance, promote):
    d = decide(_score("candidate", candidate), _score("v0001", current), tolerance)
    assert d.promote is promote and ("v0001" in d.reason or "finite" in d.reason)


# --- end to end with the real model and Redis --------------------------------------------------------------------

@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """Real LoRA adapters on the real SmolLM2: two that leave the model unchanged (LoRA's B = 0: 'not worse')
    and one with large random weights that wrecks it (a bad training run)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from model.loading import ModelSpec, resolve_base

    base = resolve_base(ModelSpec())
    out = tmp_path_factory.mktemp("candidates")
    made = {}
    for name, r, noise in (("neutral-a", 4, 0.0), ("neutral-b", 8, 0.0), ("broken", 4, 0.3)):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                               LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))
        if noise:
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "lora_A" in n or "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=gen) * noise)
        model.save_pretrained(out / name)
        made[name] = out / name
    return made


@pytest.fixture
def recipe():
    # scored on the first 4 held-out (val) answers of the real data, cut to 256 tokens
    # (the quality gate against the base model has its own test below)
    return apply_overrides(load_recipe("smollm2-cpu"), ["eval_limit=4", "max_length=256", "gate=null"])


def _listen(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    sub = client.pubsub()
    sub.subscribe(keys.ADAPTER_RELOAD_CHANNEL)
    assert sub.get_message(timeout=5)["type"] == "subscribe"
    return client, sub


def _next_message(sub, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            return msg
    return None


def test_promote_refuse_and_rollback_tell_the_workers(tmp_path, candidates, recipe, redis_url):
    from training.retrain import main

    reg_dir = tmp_path / "registry"
    client, sub = _listen(redis_url)
    try:
        # 1. first adapter vs the base model: equal perplexity is "not worse" -> promoted, workers told
        out = main(recipe, reg_dir, redis_url, candidate=candidates["neutral-a"])
        assert out.action == "promoted" and out.version == "v0001" and out.notified == 1
        v1 = str((reg_dir / "v0001").resolve())
        msg = _next_message(sub)
        assert msg and msg["channel"] == keys.ADAPTER_RELOAD_CHANNEL and msg["data"] == v1
        assert client.get(keys.ADAPTER_CURRENT) == v1
        gate = json.loads((reg_dir / "v0001" / "gate.json").read_text())
        assert gate["promote"] and gate["current"]["label"] == "base" and gate["current"]["tokens"] > 100

        # 2. a broken candidate is refused: nothing changes, nobody is told
        out = main(recipe, reg_dir, redis_url, candidate=candidates["broken"])
        assert out.action == "refused" and out.version is None, out.lines
        assert out.decision.candidate.perplexity > 1.5 * out.decision.current.perplexity
        assert out.decision.current.label == "v0001"
        assert AdapterRegistry(reg_dir).versions() == ["v0001"]
        assert os.readlink(reg_dir / "current") == "v0001"
        assert _next_message(sub, timeout=1.0) is None
        assert client.get(keys.ADAPTER_CURRENT) == v1

        # 3. a second version, then roll back to the first: workers are told again
        out = main(recipe, reg_dir, redis_url, candidate=candidates["neutral-b"])
        assert out.action == "promoted" and out.version == "v0002"
        assert _next_message(sub)["data"] == str((reg_dir / "v0002").resolve())
        out = main(recipe, reg_dir, redis_url, do_rollback=True)
        assert out.action == "rolled back" and out.version == "v0001"
        assert _next_message(sub)["data"] == v1 and client.get(keys.ADAPTER_CURRENT) == v1
        assert os.readlink(reg_dir / "current") == "v0001"
    finally:
        sub.close()
        client.close()


def test_cli_dry_run_changes_nothing_and_rollback_reports_errors(tmp_path, candidates, redis_url):
    from bot.cli import app

    reg_dir = tmp_path / "registry"
    AdapterRegistry(reg_dir).promote(candidates["neutral-a"])
    before = sorted(p.name for p in reg_dir.iterdir())
    runner = CliRunner()
    res = runner.invoke(app, ["retrain", "--registry", str(reg_dir), "--redis-url", redis_url, "--dry-run",
                              "--candidate", str(candidates["broken"])])
    assert res.exit_code == 0, res.output
    assert "would copy to" in res.output and str(reg_dir / "v0002") in res.output and "v0001" in res.output
    res = runner.invoke(app, ["retrain", "--registry", str(reg_dir), "--rollback", "--dry-run"])
    assert res.exit_code == 2 and "nothing to roll back to" in res.output  # v0001 is the only version
    assert sorted(p.name for p in reg_dir.iterdir()) == before
    assert os.readlink(reg_dir / "current") == "v0001"


def test_cli_refusal_exits_1(tmp_path, candidates, redis_url):
    from bot.cli import app

    reg_dir = tmp_path / "registry"
    AdapterRegistry(reg_dir).promote(candidates["neutral-a"])
    res = CliRunner().invoke(app, ["retrain", "--registry", str(reg_dir), "--redis-url", redis_url, "--json",
                                   "--candidate", str(candidates["broken"]), "--set", "eval_limit=2",
                                   "--set", "max_length=192"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["action"] == "refused" and not out["decision"]["promote"]


def test_quality_gate_refuses_a_candidate_that_fails_the_recipe_thresholds(tmp_path, candidates, recipe):
    """Perplexity alone passes (the candidate equals the adapter in service); the recipe's gate then runs
    `counsel-bot eval --compare` against the base model and its failing check stops the promotion."""
    from training.retrain import gate_and_promote

    reg_dir = tmp_path / "registry"
    registry = AdapterRegistry(reg_dir)
    registry.promote(candidates["neutral-a"])
    strict = apply_overrides(recipe, ["gate={min_distinct_2_delta: 0.5, max_perplexity_ratio: null}",
                                      "gate_questions=1", "gate_samples=2", "eval_limit=2", "max_length=192"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = gate_and_promote(strict, registry, candidates["neutral-b"], None, run_dir=run_dir)
    assert out.action == "refused" and "quality gate failed" in out.lines[0]
    assert any(line.strip().startswith("FAIL distinct_2") for line in out.lines), out.lines
    assert os.readlink(reg_dir / "current") == "v0001"  # nothing changed
    gate = json.loads((run_dir / "gate.json").read_text())
    assert gate["promote"] is False and gate["quality_gate"]["passed"] is False
    assert (run_dir / "eval" / "report.md").exists() and (run_dir / "eval" / "metrics.json").exists()
    assert any("1 held-out questions x 2 replies" in line for line in out.lines), out.lines
    assert all(m["samples"] == 2 for m in json.loads((run_dir / "eval" / "metrics.json").read_text()).values())
