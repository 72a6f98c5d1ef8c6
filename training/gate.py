"""The promotion gate: is a candidate adapter at least as good as the one in service on held-out answers?

The score is the perplexity of the therapists' reference answers to held-out questions (answer tokens only, in the
served prompt format), measured by `training.metrics.reference_nll` on a freshly loaded model, never the model that
was just trained (see the bitsandbytes CPU trap in train.py). Lower is better. The decision itself is pure.
"""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import asdict, dataclass

from training.data import QA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Score:
    label: str
    adapter: str | None  # None = the base model alone
    loss: float  # mean NLL per answer token
    perplexity: float
    tokens: int
    answers: int


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    candidate: Score
    current: Score
    tolerance: float

    def as_dict(self) -> dict:
        return asdict(self)


def decide(candidate: Score, current: Score, tolerance: float = 0.0) -> Decision:
    """Promote when the candidate's perplexity is not worse than the current one's (within `tolerance`, a
    fraction: 0.01 accepts up to 1% worse)."""
    if not math.isfinite(candidate.perplexity):
        return Decision(False, "candidate perplexity is not finite", candidate, current, tolerance)
    limit = current.perplexity * (1 + tolerance)
    change = candidate.perplexity / current.perplexity - 1
    if candidate.perplexity <= limit:
        return Decision(True, f"perplexity {current.perplexity:.3f} -> {candidate.perplexity:.3f} "
                              f"({change:+.1%}); not worse than {current.label}", candidate, current, tolerance)
    return Decision(False, f"perplexity {current.perplexity:.3f} -> {candidate.perplexity:.3f} ({change:+.1%}): "
                           f"worse than {current.label} (tolerance {tolerance:.1%})", candidate, current, tolerance)


def score_adapter(label: str, adapter: str | None, rows: list[QA], base: str | None = None,
                  load_in_4bit: bool = False, max_tokens: int = 1024, device: str = "auto") -> Score:
    """Reference-answer perplexity of base (+ adapter) on `rows`, loaded fresh for inference."""
    from model.loading import ModelSpec, load
    from model.prompt import training_example
    from training.metrics import reference_nll

    if not rows:
        raise ValueError("no held-out answers to score on")
    loaded = load(ModelSpec(base=base, adapter=adapter or "none", load_in_4bit=load_in_4bit, device=device))
    try:
        pairs = []
        for qa in rows:
            ex = training_example(loaded.tokenizer, qa.question, qa.answer)
            pairs.append((ex["prompt"], ex["completion"]))
        sums, counts = reference_nll(loaded.model, loaded.tokenizer, pairs, max_tokens=max_tokens)
    finally:
        del loaded
        gc.collect()
    tokens = sum(counts)
    loss = sum(sums) / tokens if tokens else float("nan")
    ppl = math.exp(loss) if tokens else float("nan")
    log.info("%s: perplexity %.3f over %d answer tokens of %d answers", label, ppl, tokens, len(rows))
    return Score(label=label, adapter=adapter, loss=loss, perplexity=ppl, tokens=tokens, answers=len(rows))
