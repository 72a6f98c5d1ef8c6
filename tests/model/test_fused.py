"""model.fused.fuse_projections on the real SmolLM2: one matrix product for q/k/v and one for gate/up give the
model's own logits (the GPU serving path fuses them; here checked in float32 on CPU)."""

from __future__ import annotations

import copy

import torch

from model.fused import fuse_projections


def test_fused_projections_give_the_same_logits_and_no_extra_weights(engine):
    model = copy.deepcopy(engine.model).float().eval()
    ids = engine.tokenizer("I keep worrying that my friends secretly dislike me.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    n_params = sum(p.numel() for p in model.parameters())
    layers = model.config.num_hidden_layers
    assert fuse_projections(model) == layers
    assert fuse_projections(model) == 0  # idempotent
    assert sum(p.numel() for p in model.parameters()) == n_params  # moved, not copied
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert after[0, -1].argmax() == before[0, -1].argmax()
