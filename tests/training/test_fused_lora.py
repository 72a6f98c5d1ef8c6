"""training.fused_lora: LoRA's output summed inside the adapter's product computes what peft computes, forward and
backward, on small layers and on the real SmolLM2 with the training recipe's LoRA; peft's own forward still runs
wherever the fused sum would not be the same."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")


def _lora(dtype=torch.float32, dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 16)).to(dtype)
    return get_peft_model(net, LoraConfig(r=4, lora_alpha=8, target_modules=["0", "1"], lora_dropout=dropout,
                                          init_lora_weights="gaussian"))  # B != 0, so the adapter counts


def _run(model, x, seed: int = 1):
    torch.manual_seed(seed)
    model.zero_grad()
    y = model(x)
    y.float().square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return y.detach(), grads


def _fused_and_plain(dtype=torch.float32, dropout: float = 0.0):
    from training.fused_lora import fuse_lora_output

    plain = _lora(dtype, dropout)
    fused = copy.deepcopy(plain)
    assert fuse_lora_output(fused) == 2
    assert fuse_lora_output(fused) == 0  # idempotent
    return plain, fused


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_same_output_and_adapter_gradients_in_float32(dropout):
    plain, fused = _fused_and_plain(dropout=dropout)
    plain.train(), fused.train()
    x = torch.randn(2, 5, 32)
    y0, g0 = _run(plain, x)
    y1, g1 = _run(fused, x)  # same seed: the same dropout mask
    assert y1.shape == y0.shape and y1.dtype == y0.dtype
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) == 4
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5)


def test_bf16_base_under_autocast_matches_to_bf16_rounding():
    plain, fused = _fused_and_plain(torch.bfloat16)
    for m in (plain, fused):  # the recipe's layout: bf16 frozen base, float32 adapters
        for n, p in m.named_parameters():
            if "lora_" in n:
                p.data = p.data.float()
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y0, g0 = _run(plain, x)
        y1, g1 = _run(fused, x)
    assert y1.dtype == y0.dtype == torch.bfloat16
    torch.testing.assert_close(y1.float(), y0.float(), rtol=2e-2, atol=2e-2)
    for name in g0:
        assert g1[name].dtype == torch.float32
        torch.testing.assert_close(g1[name], g0[name], rtol=5e-2, atol=5e-2)


def test_peft_forward_runs_where_the_fused_sum_would_differ():
    plain, fused = _fused_and_plain(torch.bfloat16)
    calls = []
    for m in fused.modules():
        if hasattr(m, "_peft_forward"):
            original = m._peft_forward
            m._peft_forward = lambda *a, _f=original, **k: (calls.append(1), _f(*a, **k))[1]
    for n, p in fused.named_parameters():  # float32 adapters on bf16 inputs, no autocast: peft's promotion rules
        if "lora_" in n:
            p.data = p.data.float()
    for n, p in plain.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    assert torch.equal(fused(x), plain(x)) and len(calls) == 2
    with fused.disable_adapter(), plain.disable_adapter():
        assert torch.equal(fused(x), plain(x)) and len(calls) == 4
    # a merged adapter is part of the base weight: peft's forward
    fused.merge_adapter()
    fused(x)
    assert len(calls) == 6


def test_smollm2_loss_and_gradients_with_the_recipe_lora():
    """The real model with LoRA r=16 on every linear layer (the local recipe's targets): same answer-only loss and
    the same adapter gradients with the fused forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from model.loading import ModelSpec, load_tokenizer, resolve_base
    from model.prompt import training_example
    from training.fused_lora import fuse_lora_output

    base = resolve_base(ModelSpec())
    tok = load_tokenizer(base)
    ex = training_example(tok, "I can't sleep before exams.", "That sounds exhausting. A wind-down routine can help.")
    p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
    c = tok(ex["completion"], add_special_tokens=False)["input_ids"]
    batch = {"input_ids": torch.tensor([p + c]), "labels": torch.tensor([[-100] * len(p) + c])}

    def loss_and_grads(fuse: bool):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, init_lora_weights="gaussian",
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        if fuse:
            assert fuse_lora_output(model) == 7 * model.config.num_hidden_layers
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        return loss.item(), {n: q.grad for n, q in model.named_parameters() if q.requires_grad}

    loss0, g0 = loss_and_grads(False)
    loss1, g1 = loss_and_grads(True)
    assert loss1 == pytest.approx(loss0, rel=1e-5)
    worst = max(float((g1[n] - g0[n]).abs().max() / g0[n].abs().max().clamp_min(1e-12)) for n in g0)
    assert worst < 1e-3
