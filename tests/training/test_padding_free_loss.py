"""Padding-free packing changes how a batch is laid out, not what is learned: on the same examples the answer-only
loss is the same with and without it (real SmolLM2, trl's own collator as the SFT trainer uses it)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM

    from model.loading import ModelSpec, load_tokenizer, resolve_base

    base = resolve_base(ModelSpec())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return model, load_tokenizer(base)


def _examples(tokenizer) -> list[dict]:
    from model.prompt import training_example

    pairs = [("I can't sleep before exams.", "That sounds exhausting. A wind-down routine can help."),
             ("My friend stopped talking to me.", "It hurts when someone pulls away. Have you asked them why?"),
             ("How do I handle anger at work?", "Noticing the anger early is a good first step.")]
    out = []
    for q, a in pairs:
        ex = training_example(tokenizer, q, a)
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]
        out.append({"input_ids": p + c, "labels": [-100] * len(p) + c})  # the loss is on answer tokens only
    return out


def test_answer_only_loss_is_the_same_with_and_without_padding_free(model_and_tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, tok = model_and_tokenizer
    examples = _examples(tok)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    assert padded["input_ids"].shape[0] == 3 and packed["input_ids"].shape[0] == 1
    assert (padded["attention_mask"] == 0).any() and "attention_mask" not in packed  # padding vs none at all
    assert int((packed["position_ids"] == 0).sum()) == 3  # positions restart at every example
    with torch.no_grad():
        loss_padded = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                            labels=padded["labels"]).loss
        # use_cache=False as in training: with a KV cache transformers 5 ignores the position-id packing and the
        # examples attend to each other (what `loss_leaky` measures)
        loss_packed = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                            labels=packed["labels"], use_cache=False).loss
        loss_leaky = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                           labels=packed["labels"], use_cache=True).loss
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5, abs=1e-5)
    assert abs(loss_leaky.item() - loss_padded.item()) > 1e-3


def test_sequence_boundaries_of_packed_and_padded_rows():
    from training.attention import boundaries

    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [5, 6, 0, 1, 2, 3]])  # row 2 starts mid-example (a cut row)
    valid, cu, max_len = boundaries(pos)
    assert valid is None and cu.tolist() == [0, 3, 5, 6, 8, 12] and max_len == 4
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])  # left and right padding
    valid, cu, max_len = boundaries(torch.arange(6).expand(2, 6), mask)
    assert valid.tolist() == mask.bool().tolist() and cu.tolist() == [0, 4, 7] and max_len == 4


def test_varlen_attention_gives_the_same_loss_as_sdpa(model_and_tokenizer):
    """The `varlen` implementation (here its CPU path: SDPA with the block-diagonal mask from the same
    boundaries) matches transformers' own SDPA on packed rows and on padded rows."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from training import attention

    model, tok = model_and_tokenizer
    examples = _examples(tok)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    packed = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    name = attention.register()
    try:
        with torch.no_grad():
            ref_packed = model(**packed, use_cache=False).loss
            ref_padded = model(**padded, use_cache=False).loss
            model.set_attn_implementation(name)
            got_packed = model(**packed, use_cache=False).loss
            got_padded = model(**padded, use_cache=False).loss
    finally:
        model.set_attn_implementation("sdpa")
    assert got_packed.item() == pytest.approx(ref_packed.item(), rel=1e-5, abs=1e-5)
    assert got_padded.item() == pytest.approx(ref_padded.item(), rel=1e-5, abs=1e-5)
    assert got_packed.item() == pytest.approx(got_padded.item(), rel=1e-5, abs=1e-5)
