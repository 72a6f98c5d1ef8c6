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


# ---------------------------------------------------------------- several samples per question


def _r(text: str, sim: float = 0.0, guard_pass: bool = True, truncated: bool = False) -> M.ReplyStats:
    return M.ReplyStats(tuple(text.split()), sim, guard_pass, truncated)


def test_reply_stats_uses_words_and_the_guard():
    s = M.reply_stats("I don't know. Call 555-123-4567", 0.3, truncated=True,
                      violations=lambda t: ["phone"] if "555" in t else [])
    assert s.tokens == ("i", "don't", "know", "call", "555", "123", "4567")
    assert (s.similarity, s.guard_pass, s.truncated) == (0.3, False, True)
    assert M.reply_stats("fine", 0.1).guard_pass


def test_aggregate_samples_means_per_sample_figures_with_their_standard_error():
    # samples[k][q]: 2 samples of 2 questions
    samples = [[_r("a b a b", 0.4), _r("a b", 0.6, guard_pass=False)],
               [_r("c d", 0.2, truncated=True), _r("e f", 0.4)]]
    agg = M.aggregate_samples(samples)
    assert agg["samples"] == 2
    # similarity: sample 0 mean 0.5, sample 1 mean 0.3 -> 0.4; SE = sd(0.5, 0.3) / sqrt(2) = 0.1414 / 1.414 = 0.1
    assert agg["per_sample"]["similarity"] == pytest.approx([0.5, 0.3])
    assert agg["similarity"] == pytest.approx(0.4) and agg["seed_se"]["similarity"] == pytest.approx(0.1)
    # distinct-2 per sample (pooled over its replies): (ab)(ba)(ab)+(ab) = 2/4; (cd)+(ef) = 2/2 -> mean 0.75,
    # SE = sd(0.5, 1.0) / sqrt(2) = 0.25. Not 4/6 (all 6 bigrams pooled): the scale of one reply per question.
    assert agg["per_sample"]["distinct_2"] == pytest.approx([0.5, 1.0])
    assert agg["distinct_2"] == pytest.approx(0.75) and agg["seed_se"]["distinct_2"] == pytest.approx(0.25)
    assert agg["guard_pass_rate"] == pytest.approx((0.5 + 1.0) / 2)
    assert agg["truncated_rate"] == pytest.approx((0.0 + 0.5) / 2)
    assert agg["mean_words"] == pytest.approx((3 + 2) / 2)
    # one sample: the figures of the single-reply functions, and no error across samples
    one = M.aggregate_samples(samples[:1])
    assert one["distinct_2"] == M.distinct_n(["a b a b", "a b"], 2) and one["seed_se"]["similarity"] is None


def test_std_error_and_jackknife_of_a_mean_agree():
    values = [1.0, 2.0, 3.0, 6.0]  # mean 3, sd = sqrt(14/3), SE = sd / 2
    assert M.std_error(values) == pytest.approx(math.sqrt(14 / 3) / 2)
    full, se = M.jackknife(lambda keep: sum(values[i] for i in keep) / len(keep), len(values))
    assert full == pytest.approx(3.0) and se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert M.std_error([1.0]) is None and M.jackknife(lambda keep: 1.0, 1) == (1.0, None)


def test_paired_difference_of_similarity_is_the_mean_per_question_difference():
    base = [[_r("x", 0.5), _r("x", 0.4), _r("x", 0.3)]]
    cand = [[_r("x", 0.6), _r("x", 0.4), _r("x", 0.5)]]
    d = M.paired_difference(base, cand, "similarity")
    # per-question differences 0.1, 0, 0.2: mean 0.1, SE = sd / sqrt(3) = 0.1 / sqrt(3)
    assert (d.n_questions, d.samples) == (3, 1)
    assert d.delta == pytest.approx(0.1) and d.se == pytest.approx(0.1 / math.sqrt(3))
    # pairing: the same gain on easy and hard questions is no noise at all
    easy_hard = [[_r("x", 0.9), _r("x", 0.5), _r("x", 0.1)]]
    lifted = [[_r("x", 0.95), _r("x", 0.55), _r("x", 0.15)]]
    d = M.paired_difference(easy_hard, lifted, "similarity")
    assert d.delta == pytest.approx(0.05) and d.se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same questions"):
        M.paired_difference(base, [[_r("x", 0.1)]], "similarity")


def test_paired_difference_of_distinct_2_by_the_jackknife():
    # base: q0 "a b a b", q1 "c d" -> (ab)(ba)(ab)(cd): 3/4; candidate: "a b c", "c d" -> (ab)(bc)(cd): 3/3
    base = [[_r("a b a b"), _r("c d")]]
    cand = [[_r("a b c"), _r("c d")]]
    d = M.paired_difference(base, cand, "distinct_2")
    assert d.delta == pytest.approx(1 - 3 / 4)
    # leave q0 out: 1 - 1 = 0; leave q1 out: 1 - 2/3 = 1/3; SE^2 = (2-1)/2 * 2 * (1/6)^2 -> SE = 1/6
    assert d.se == pytest.approx(1 / 6)


def test_paired_difference_averages_the_samples_of_each_model():
    base = [[_r("x", 0.2), _r("x", 0.4)], [_r("x", 0.4), _r("x", 0.6)]]  # K = 2: per question 0.3, 0.5
    cand = [[_r("x", 0.5), _r("x", 0.5)]]  # K = 1
    d = M.paired_difference(base, cand, "similarity")
    # per-question differences 0.2, 0.0 -> 0.1, SE = sd(0.2, 0) / sqrt(2) = 0.1
    assert d.delta == pytest.approx(0.1) and d.se == pytest.approx(0.1) and d.samples == 1


def _with_se(metrics: dict, **se: float) -> dict:
    return {**metrics, "vs_base": {k: {"delta": metrics[k] - BASE[k], "se": v} for k, v in se.items()}}


def test_gate_allows_a_loss_within_noise_z_standard_errors():
    cand = {**BASE, "perplexity": 16.0, "similarity": 0.395}  # -0.005
    ok, checks = M.compare(BASE, _with_se(cand, similarity=0.01), M.Thresholds())  # -0.005 + 1 * 0.01 >= 0
    sim = next(c for c in checks if c.name == "similarity")
    assert ok and sim.se == 0.01 and sim.value == pytest.approx(-0.005)
    assert sim.line() == ("PASS similarity: base 0.4, candidate 0.395, candidate-base = -0.005 ± 0.01 SE "
                          "(need candidate-base + 1*SE >= +0)")
    ok, checks = M.compare(BASE, _with_se(cand, similarity=0.004), M.Thresholds())  # -0.005 + 0.004 < 0
    assert not ok and {c.name for c in checks if not c.passed} == {"similarity"}
    # noise_z = 2 lets it pass; noise_z 0 or null compares the point figures (the rule names no SE then)
    assert M.compare(BASE, _with_se(cand, similarity=0.004), {"noise_z": 2})[0]
    for z in (0, None):
        ok, checks = M.compare(BASE, _with_se(cand, similarity=0.01), {"noise_z": z})
        assert not ok and "SE >=" not in next(c for c in checks if c.name == "similarity").rule
    # without a measured SE (a one-sample metrics.json of old) the rule is the plain one
    assert not M.compare(BASE, cand, M.Thresholds())[0]


def test_gate_noise_on_an_upper_bound_and_never_on_perplexity():
    cand = {**BASE, "perplexity": 18.0, "repeated_ngram_rate": 0.07}  # ppl ratio 0.9 > 0.85; repeats +0.02
    th = {"max_repeated_ngram_rate_delta": 0.0}
    ok, checks = M.compare(BASE, {**_with_se(cand, repeated_ngram_rate=0.03),
                                  "vs_base": {"repeated_ngram_rate": {"se": 0.03}, "perplexity": {"se": 9.0}}}, th)
    by = {c.name: c for c in checks}
    assert by["repeated_ngram_rate"].passed and by["repeated_ngram_rate"].rule == "candidate-base - 1*SE <= +0"
    assert not by["perplexity"].passed and by["perplexity"].se is None and not ok
    ok, checks = M.compare(BASE, _with_se(cand, repeated_ngram_rate=0.01), th)
    assert not next(c for c in checks if c.name == "repeated_ngram_rate").passed
