"""Each evaluation metric on small hand-computed cases, and the retrain gate."""

from __future__ import annotations

import math

import pytest
import torch

from training import metrics as M

# ---------------------------------------------------------------- text metrics


def test_words_lowercase_drop_punctuation_keep_apostrophes():
    assert M.words("I don't KNOW, really… I’m fine!") == ["i", "don't", "know", "really", "i'm", "fine"]


def test_distinct_2_on_a_tiny_string():
    # bigrams: (i feel) (feel sad) (sad i) (i feel) (feel tired): 5 in all, 4 distinct
    assert M.distinct_n(["I feel sad. I feel tired."], 2) == pytest.approx(4 / 5)


def test_distinct_2_counts_repeats_across_replies():
    # "a b a b" -> (a b) (b a) (a b); "a b" -> (a b): 4 bigrams, 2 distinct
    assert M.distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert M.distinct_n(["a b", "c d"], 2) == 1.0
    assert M.distinct_n(["one", ""], 2) == 0.0  # no bigrams at all


def test_distinct_1():
    assert M.distinct_n(["a b a"], 1) == pytest.approx(2 / 3)


def test_repeated_ngram_rate_within_a_reply():
    # trigrams: (the cat sat) (cat sat the) (sat the cat) (the cat sat): the 4th repeats the 1st
    assert M.repeated_ngram_rate(["the cat sat the cat sat"], 3) == pytest.approx(1 / 4)


def test_repeated_ngram_rate_ignores_repeats_across_replies_and_pools():
    assert M.repeated_ngram_rate(["a b c", "a b c"], 3) == 0.0
    # reply 1: 4 trigrams, 1 repeat; reply 2: "x y z w" 2 trigrams, 0 repeats -> 1 / 6
    assert M.repeated_ngram_rate(["the cat sat the cat sat", "x y z w"], 3) == pytest.approx(1 / 6)
    # a loop: "go " * 6 -> 4 trigrams (go go go), 3 of them repeats
    assert M.repeated_ngram_rate(["go " * 6], 3) == pytest.approx(3 / 4)
    assert M.repeated_ngram_rate(["too short"], 3) == 0.0


def test_mean_words():
    assert M.mean_words(["one two three", "four"]) == 2.0
    assert M.mean_words([]) == 0.0


# ---------------------------------------------------------------- safety figures


def test_pass_rate_with_the_real_output_guard():
    from bot.safety import Guard

    replies = ["That sounds really hard. What has helped you before?",
               "Call me at 555-123-4567 and take 50 mg of something."]
    assert M.pass_rate(replies, Guard().violations) == 0.5


def test_screen_scores_hand_case():
    labelled = [("c1", True), ("c2", True), ("c3", True), ("c4", True), ("s1", False), ("s2", False)]
    flagged = {"c1", "c2", "c3", "s1"}
    s = M.screen_scores(labelled, lambda t: t in flagged)
    assert (s.recall, s.false_positive_rate, s.n_crisis, s.n_safe) == (0.75, 0.5, 4, 2)
    empty = M.screen_scores([("s", False)], lambda t: False)
    assert empty.recall is None and empty.false_positive_rate == 0.0


# ---------------------------------------------------------------- perplexity


class _Bigram(torch.nn.Module):
    """A tiny causal LM whose logits at a position depend only on that position's token."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        class Out:
            pass

        out = Out()
        out.logits = self.table[input_ids]
        return out


class _CharTokenizer:
    """Characters 'a', 'b', 'c' are token ids 0, 1, 2; '.' is the pad token 3."""

    pad_token_id = 3

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": ["abc".index(ch) for ch in text]}


TABLE = [[2.0, 0.0, -1.0, -9.0], [0.0, 1.0, 0.5, -9.0], [1.0, 1.0, 1.0, -9.0], [0.0, 0.0, 0.0, 0.0]]


def _logp(row: int, target: int) -> float:
    z = sum(math.exp(v) for v in TABLE[row])
    return TABLE[row][target] - math.log(z)


def test_perplexity_against_a_hand_computation_with_padding():
    # example 1: prompt "ab", completion "ba" -> ids a b b a; counted: p(b | b), p(a | b)
    # example 2: prompt "c", completion "a" -> ids c a (padded to width 4 in the same batch); counted: p(a | c)
    nll1 = -(_logp(1, 1) + _logp(1, 0))
    nll2 = -_logp(2, 0)
    sums, counts = M.reference_nll(_Bigram(TABLE), _CharTokenizer(), [("ab", "ba"), ("c", "a")], token_budget=64)
    assert counts == [2, 1]
    assert sums == pytest.approx([nll1, nll2], rel=1e-6)
    assert M.perplexity(sums, counts) == pytest.approx(math.exp((nll1 + nll2) / 3), rel=1e-6)


def test_perplexity_is_token_weighted_not_a_mean_of_ratios():
    assert M.perplexity([6.0, 1.0], [3, 1]) == pytest.approx(math.exp(7 / 4))
    assert math.isnan(M.perplexity([], []))


def test_long_pairs_keep_the_prompt_and_cut_the_completion():
    ids, plen = M.encode_pair(_CharTokenizer(), "ab", "cabca", max_tokens=4)
    assert (ids, plen) == ([0, 1, 2, 0], 2)


def test_reference_nll_matches_a_per_example_computation_on_smollm2(engine):
    """Batched and padded through reference_nll == one example at a time, by hand from the real model's logits."""
    from model.prompt import training_example

    tok, model = engine.tokenizer, engine.model
    examples = [training_example(tok, "I can't sleep before exams.", "That sounds stressful. What helps you relax?"),
                training_example(tok, "My friend ignores me.", "It hurts to feel ignored by a friend. Have you "
                                 "been able to tell them how this feels, or does that seem hard right now?")]
    pairs = [(e["prompt"], e["completion"]) for e in examples]
    by_hand = []
    for prompt, completion in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        comp = tok(completion, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([p + comp])).logits[0].float()
        logp = torch.log_softmax(logits[len(p) - 1:-1], dim=-1)
        by_hand.append((-sum(float(logp[i, t]) for i, t in enumerate(comp)), len(comp)))
    rel = 2e-2 if model.dtype == torch.bfloat16 else 1e-4
    for share_prefix in (True, False):  # the system prompt's KV cache reused, or every token run per batch
        sums, counts = M.reference_nll(model, tok, pairs, token_budget=4096, share_prefix=share_prefix)
        assert counts == [n for _, n in by_hand]
        assert sums == pytest.approx([s for s, _ in by_hand], rel=rel)
    assert M.shared_prefix_len([M.encode_pair(tok, p, c, 1024) for p, c in pairs]) > 100  # the system prompt
    ppl = M.perplexity(sums, counts)
    assert 1.0 < ppl < 200.0


# ---------------------------------------------------------------- similarity


@pytest.fixture(scope="module")
def embedder():
    return M.Embedder()


def test_similarity_identical_text_is_one(embedder):
    text = "I have been feeling anxious about work lately."
    assert embedder.similarity(text, text) == pytest.approx(1.0, abs=1e-5)


def test_similarity_paraphrase_beats_unrelated(embedder):
    a = "I feel very anxious and can't stop worrying."
    paraphrase = "I'm really nervous and my worries won't go away."
    unrelated = "The recipe needs two cups of flour and an egg."
    assert embedder.similarity(a, paraphrase) > embedder.similarity(a, unrelated) + 0.2


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[3.0, 4.0], [100.0, 100.0]]])
    v = M.mean_pool(hidden, torch.tensor([[1, 0]]))
    assert v[0].tolist() == pytest.approx([0.6, 0.8])


def test_mean_reference_similarity_hand_case():
    replies = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    refs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert M.mean_reference_similarity(replies, refs, [(0, 1), (2,)]) == pytest.approx([0.5, 0.8])


# ---------------------------------------------------------------- the gate

BASE = {"perplexity": 20.0, "similarity": 0.40, "distinct_2": 0.60, "repeated_ngram_rate": 0.05,
        "guard_pass_rate": 0.95, "crisis_recall": 0.9, "crisis_false_positive_rate": 0.05}


def test_compare_passes_a_better_adapter():
    cand = {**BASE, "perplexity": 16.0, "similarity": 0.43, "distinct_2": 0.61, "guard_pass_rate": 1.0}
    ok, checks = M.compare(BASE, cand, M.Thresholds())
    assert ok, [c.line() for c in checks]
    ppl = next(c for c in checks if c.name == "perplexity")
    assert ppl.value == pytest.approx(0.8) and ppl.passed
    assert all(c.line().startswith("PASS") for c in checks)


def test_compare_fails_on_too_little_perplexity_gain_and_lost_similarity():
    cand = {**BASE, "perplexity": 18.0, "similarity": 0.39}
    ok, checks = M.compare(BASE, cand, M.Thresholds())
    assert not ok
    failed = {c.name for c in checks if not c.passed}
    assert failed == {"perplexity", "similarity"}
    assert next(c for c in checks if c.name == "perplexity").line().startswith("FAIL perplexity")


def test_compare_thresholds_from_a_mapping_and_switched_off_checks():
    cand = {**BASE, "perplexity": 18.0, "similarity": 0.39}
    ok, checks = M.compare(BASE, cand, {"gate": {"max_perplexity_ratio": 0.95, "min_similarity_delta": -0.02}})
    assert ok
    ok, checks = M.compare(BASE, cand, {"max_perplexity_ratio": None, "min_similarity_delta": None})
    assert ok and {c.name for c in checks}.isdisjoint({"perplexity", "similarity"})
    with pytest.raises(ValueError, match="unknown gate thresholds"):
        M.Thresholds.from_mapping({"max_perplexity_ration": 0.9})


def test_compare_missing_figures():
    base = {k: v for k, v in BASE.items() if not k.startswith("crisis")}
    ok, checks = M.compare(base, {**base, "perplexity": 10.0}, M.Thresholds())
    assert ok  # the safety set was missing for both: nothing lost
    assert any("not measured" in c.line() for c in checks)
    ok, checks = M.compare(BASE, {**base, "perplexity": 10.0}, M.Thresholds())
    assert not ok and {c.name for c in checks if not c.passed} == {"crisis_recall", "crisis_false_positive_rate"}


def test_shared_prefix_len_leaves_the_last_prompt_token():
    assert M.shared_prefix_len([([1, 2, 3, 4, 9], 4), ([1, 2, 3, 5, 9], 4)]) == 3
    assert M.shared_prefix_len([([1, 2, 3, 4, 9], 3), ([1, 2, 3, 4, 8], 4)]) == 2  # keeps token 3 of pair 1
    assert M.shared_prefix_len([([1, 2], 1)]) == 0
