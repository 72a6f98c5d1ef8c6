"""Crisis-screen benchmark on the labelled sets: recall on crises, false-positive rate on non-crises, per-category
recall and milliseconds per message: the rules alone, rules + the nearest-example embedding layer (the earlier
layer), and rules + the learned classifier (what the screen runs).

    make bench-safety                          # the three tables
    python benchmarks/safety.py --misses       # also list what the dev split missed / wrongly flagged
    python benchmarks/safety.py --loso --misses        # leave one set out over fresh4-9: the held-out estimate
    python benchmarks/safety.py --loso --honest        # the same with, per fold, rules not written from that fold
    python benchmarks/safety.py --loso --loso-before   # the same with each fold fitted on the third round's data only
    python benchmarks/safety.py --sweep fresh5 # recall / FPR of rules + classifier per threshold on one set
    python benchmarks/safety.py --classifier-only --with fresh5 --with fresh6   # add more sets as columns
    python benchmarks/safety.py --classifier-only --set /path/to/blind.jsonl    # a set from anywhere, aggregates only

Round 4: every labelled set in the repo is training data (train.jsonl, safety_set, fresh, fresh2-7), so no column
here is unseen by the shipped classifier, and fresh4-7 were also read to write rules. The estimate of performance on
messages others write is leave-one-set-out (`--loso`): for each of fresh4, fresh5, fresh6 and fresh7 (each written
blind by a different writer), the classifier is fitted on every other labelled message (word-for-word duplicates of
the held-out set removed too) and rules + classifier are measured on the held-out set; the table gives each fold,
the mean and the worst, per threshold. The classifier half of that estimate is honest; the rules half is not fully,
since round 4's rules were written after reading the folds' misses (the table "classifier alone" is honest on every
fold). Round 5 added fresh8 (round 4's blind set, never read message by message: its fold is the one the rules were
not written from, and its messages are never listed). Round 6 added fresh9 (round 5's blind final measure, read
message by message in round 6 to write rules and training messages). A new blind set is measured from outside the
repo with `--set PATH` (any labelled jsonl, as many as wanted): aggregates only, its messages are never listed.
`--honest` counts, on each leave-one-set-out fold, rules that were not written from that fold (`HONEST_RULES`: each
fold's rules taken from a git commit). History and figures: benchmarks/SAFETY.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.safety.screen import CATEGORIES, screen_rules  # noqa: E402

SET = Path(__file__).with_name("safety_set.jsonl")
FRESH = Path(__file__).with_name("safety_fresh.jsonl")  # written after the first rules (then tuned on)
FRESH2 = Path(__file__).with_name("safety_fresh2.jsonl")  # written after the second round (then tuned on)
FRESH3 = Path(__file__).with_name("safety_fresh3.jsonl")  # written after the third round; measured once
FRESH4 = Path(__file__).with_name("safety_fresh4.jsonl")  # written blind while the classifier was built; never tuned on
FRESH5 = Path(__file__).with_name("safety_fresh5.jsonl")  # written blind; only its aggregates chose the threshold
FRESH6 = Path(__file__).with_name("safety_fresh6.jsonl")  # written blind; the second round's final measure
FRESH7 = Path(__file__).with_name("safety_fresh7.jsonl")  # written blind; the third round's final measure
FRESH8 = Path(__file__).with_name("safety_fresh8.jsonl")  # written blind outside the repo; round 4's final measure
FRESH9 = Path(__file__).with_name("safety_fresh9.jsonl")  # written blind outside the repo; round 5's final measure,
# read and trained on since round 6
BLIND = {"fresh3": FRESH3, "fresh4": FRESH4, "fresh5": FRESH5, "fresh6": FRESH6, "fresh7": FRESH7, "fresh8": FRESH8,
         "fresh9": FRESH9}
NEVER_LISTED = ("fresh8",)  # aggregates only: their messages are never printed (misses, false positives); so are
# the columns added with --set
# Leave one set out with rules no fold was read for (--honest): per fold, the commit whose rules (bot/safety/rules.py
# and screen.py) were written without reading that fold; None = the current rules. fresh4-7 were read for round 4's
# rules, so they get round 3's (a000a85); fresh8 was never read; fresh9 was read for round 6's rules, so it gets round
# 5's (db079df, unchanged since round 4).
HONEST_RULES = {"fresh4": "a000a85", "fresh5": "a000a85", "fresh6": "a000a85", "fresh7": "a000a85", "fresh8": None,
                "fresh9": "db079df"}
NEVER_LISTED_NOW: set[str] = set()  # the columns of this run added with --set
UNSEEN = tuple(BLIND)  # were blind until round 4 (now training data too: see --loso); --test-misses skips them


def load(path: Path = SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(rows: list[dict], fn=screen_rules) -> dict:
    """Recall, FPR, per-category recall (crisis caught, any category) and category accuracy, ms/message."""
    fn("warm-up")  # loads anything lazy before timing
    t0 = time.perf_counter()
    got = [fn(r["text"]) for r in rows]
    ms = (time.perf_counter() - t0) * 1000 / max(1, len(rows))
    pos = [(r, g) for r, g in zip(rows, got) if r["crisis"]]
    neg = [(r, g) for r, g in zip(rows, got) if not r["crisis"]]
    out = {
        "n_crisis": len(pos), "n_other": len(neg),
        "recall": sum(g.crisis for _, g in pos) / max(1, len(pos)),
        "fpr": sum(g.crisis for _, g in neg) / max(1, len(neg)),
        "category_acc": sum(g.category == r["category"] for r, g in pos) / max(1, len(pos)),
        "ms": ms,
        "per_category": {},
        "missed": [r["text"] for r, g in pos if not g.crisis],
        "false_pos": [(r["text"], g.rule) for r, g in neg if g.crisis],
    }
    for cat in CATEGORIES:
        hits = [g.crisis for r, g in pos if r["category"] == cat]
        out["per_category"][cat] = (sum(hits), len(hits))
    return out


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = [f"{'':26}" + "".join(f"{n:>16}" for n in names)]

    def row(label, fmt):
        lines.append(f"{label:26}" + "".join(f"{fmt(results[n]):>16}" for n in names))

    row("messages (crisis/other)", lambda r: f"{r['n_crisis']}/{r['n_other']}")
    row("recall on crises", lambda r: f"{r['recall']:.3f}")
    row("false-positive rate", lambda r: f"{r['fpr']:.3f}")
    row("right category", lambda r: f"{r['category_acc']:.3f}")
    for cat in CATEGORIES:
        row(f"  recall {cat}", lambda r, c=cat: "{}/{}".format(*r["per_category"][c]))
    row("ms / message", lambda r: f"{r['ms']:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--misses", action="store_true", help="list missed crises and false positives (dev split)")
    ap.add_argument("--test-misses", action="store_true", help="also list them for the other tuned columns")
    ap.add_argument("--rules-only", action="store_true", help="skip the embedding layers")
    ap.add_argument("--classifier-only", action="store_true", help="skip the nearest-example layer's table")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the embedding layer")
    ap.add_argument("--with", dest="extra", action="append", default=[],
                    choices=["fresh5", "fresh6", "fresh7", "fresh8", "fresh9"],
                    help="add a set as a column (fresh5-7: once blind, training data since round 4; fresh8: round "
                         "4's blind final measure, training data since round 5, never listed message by message; "
                         "fresh9: round 5's blind final measure, training data since round 6)")
    ap.add_argument("--set", dest="paths", action="append", default=[], type=Path, metavar="PATH",
                    help="add any labelled jsonl (text, crisis, category) as a column, named by its file name: "
                         "aggregates only, its messages are never listed (for a blind measure from outside the repo)")
    ap.add_argument("--loso", action="store_true",
                    help="leave one set out: for each of fresh4-9, fit the learned layer on every other labelled "
                         "message and measure rules + layer on the held-out set (per fold, mean and worst)")
    ap.add_argument("--honest", action="store_true",
                    help="with --loso: on each fold, the rules of the commit in HONEST_RULES (rules not written from "
                         "that fold) instead of the current ones")
    ap.add_argument("--rules-at", action="append", default=[], metavar="FOLD=COMMIT",
                    help="with --loso: measure this fold with the rules of this commit (overrides --honest for it; "
                         "COMMIT 'now' = the current rules)")
    ap.add_argument("--thresholds", metavar="LO:HI:STEP",
                    help="with --loso: the thresholds of the table (default: a fixed list from 0.5 to 0.98)")
    ap.add_argument("--loso-before", action="store_true",
                    help="with --loso: fit each fold only on the third round's training data (train.jsonl, "
                         "safety_set, fresh, fresh2), as the screen was before round 4")
    ap.add_argument("--threshold", type=float, help="with --loso: the threshold for the per-fold table and misses "
                                                     "(default: the shipped one)")
    ap.add_argument("--sweep", choices=["tuned", "fresh5"],
                    help="only print recall / FPR of rules + classifier per threshold on this set (no messages); "
                         "fresh5 is the set the threshold is chosen on, tuned = safety_set + fresh + fresh2")
    args = ap.parse_args()
    if args.loso:
        import torch

        torch.set_num_threads(args.threads)
        rules_at = dict(HONEST_RULES) if args.honest else {}
        for item in args.rules_at:
            fold, _, commit = item.partition("=")
            rules_at[fold] = None if commit in ("", "now") else commit
        grid = None
        if args.thresholds:
            lo, hi, step = (float(x) for x in args.thresholds.split(":"))
            grid = [round(lo + step * i, 4) for i in range(int(round((hi - lo) / step)) + 1)]
        print(loso_report(args.threshold, before=args.loso_before, misses=args.misses, thresholds=grid,
                          rules_at=rules_at))
        return
    if args.sweep:
        import torch

        torch.set_num_threads(args.threads)
        rows = load() + load(FRESH) + load(FRESH2) if args.sweep == "tuned" else load(BLIND[args.sweep])
        print(sweep(rows, args.sweep))
        return
    rows = load()
    columns = {"dev": [r for r in rows if r["split"] == "dev"], "test": [r for r in rows if r["split"] == "test"],
               "fresh": load(FRESH), "fresh2": load(FRESH2), "fresh3": load(FRESH3)}
    if FRESH4.exists():
        columns["fresh4"] = load(FRESH4)
    for name in args.extra:
        columns[name] = load(BLIND[name])
    for path in args.paths:
        name = path.name.removesuffix(".jsonl").replace("safety_", "")
        name = name if name not in columns else f"{name}*"  # never replaces a column of the repo's own sets
        columns[name] = load(path)
        NEVER_LISTED_NOW.add(name)
    every = [r for col in columns.values() for r in col]
    print("Crisis screen. Columns: safety_set dev / test (test = 30% held out from the first rules); fresh, fresh2 "
          "(each written after a round of rules, measured, then tuned on); fresh3 (written after the last round and "
          "the example bank). Since round 4 every column is training data of the classifier and fresh4-7 were read "
          "to write rules: these tables show fit, not generalization; the honest estimate is --loso.")
    results = {name: evaluate(col, screen_rules) for name, col in columns.items()}
    results["all"] = evaluate(every, screen_rules)
    print("\nRules only (bot.safety.rules):")
    print(table(results))
    _misses(args, results)
    print()
    print(guard_table())
    if args.rules_only:
        return
    if args.classifier_only:
        import torch

        torch.set_num_threads(args.threads)
        classifier_tables(columns, args)
        return
    import torch

    from bot.safety import embed

    torch.set_num_threads(args.threads)
    results = {}
    for name, col in columns.items():
        own = {r["text"] for r in col}
        bank = [r for r in embed.load_examples() if r["text"] not in own]  # never a column's own neighbours
        layer = embed.EmbeddingScreen(bank)
        results[name] = evaluate(col, lambda t, layer=layer: _two_layers(t, layer))
    print(f"\nRules + embedding layer (all-MiniLM-L6-v2, threshold {embed.THRESHOLD}, margin {embed.MARGIN}, "
          f"{args.threads} torch thread(s); the example bank for each column excludes that column's messages):")
    print(table(results))
    _misses(args, results)
    classifier_tables(columns, args)


def classifier_tables(columns: dict[str, list[dict]], args) -> None:
    """The learned layer (bot.safety.classifier) alone and behind the rules. Since round 4 it is fitted on every
    labelled set, so every column is seen data (the honest estimate is `--loso`)."""
    from bot.safety import classifier

    layer = classifier.default()
    own = {r["text"] for r in classifier_training_rows()}
    for name in (*UNSEEN, *sorted(NEVER_LISTED_NOW)):
        if name in columns:
            n = sum(r["text"] in own for r in columns[name])
            print(f"({name}: {n} of its {len(columns[name])} messages appear word for word in the training data)")
    alone = {name: evaluate(col, layer) for name, col in columns.items()}
    encoder = layer.meta.get("encoder_id", "minilm")
    print(f"\nClassifier alone (bot.safety.classifier: logistic regression over {encoder} + word n-grams, threshold "
          f"{layer.threshold}; fitted on every labelled set in the repo, so every column but those added with --set "
          f"is seen data):")
    print(table(alone))
    both = {name: evaluate(col, lambda t: _two_layers(t, layer)) for name, col in columns.items()}
    print("\nRules + classifier (what `screen()` runs; seen data, see --loso for held-out figures):")
    print(table(both))
    _misses(args, both)


def sweep(rows: list[dict], name: str, thresholds: list[float] | None = None, layer=None) -> str:
    """Rules + classifier on one set at many classifier thresholds: aggregate figures only (recall, false-positive
    rate, per-category counts), never a message. Each message is scored once: a rule match is a crisis at every
    threshold; otherwise its classifier score (worst window) is compared with each threshold."""
    from bot.safety import classifier
    from bot.safety.screen import SCREEN_CHARS

    layer = layer or classifier.default()
    own = {r["text"] for r in classifier_training_rows()}
    scored = []  # (row, caught by a rule, classifier score)
    for r in rows:
        text = r["text"][:SCREEN_CHARS]
        if screen_rules(text).crisis:
            scored.append((r, True, 1.0))
        else:
            enough = sum(c.isalpha() for c in text) >= 3
            scored.append((r, False, layer.score(text)[0] if enough else 0.0))
    pos = [x for x in scored if x[0]["crisis"]]
    neg = [x for x in scored if not x[0]["crisis"]]
    thresholds = thresholds or sorted({round(0.30 + 0.025 * i, 3) for i in range(27)}
                                      | {round(0.95 + 0.005 * i, 3) for i in range(10)} | {layer.threshold})
    cats = {c: sum(r["category"] == c for r, _, _ in pos) for c in CATEGORIES}
    lines = [f"Sweep on {name}: {len(pos)} crises / {len(neg)} others; {sum(r['text'] in own for r, _, _ in scored)} "
             f"messages word for word in the training data; rules alone catch {sum(h for _, h, _ in pos)} crises and "
             f"flag {sum(h for _, h, _ in neg)} others; shipped threshold {layer.threshold}.",
             f"{'threshold':>9} {'recall':>7} {'FPR':>6} {'caught':>7} {'false+':>7}  "
             + " ".join(f"{c[:12]:>12}" for c in CATEGORIES)]
    for t in thresholds:
        caught = [r for r, h, s in pos if h or s >= t]
        fp = sum(h or s >= t for _, h, s in neg)
        per = " ".join(f"{sum(r['category'] == c for r in caught):>7}/{cats[c]:<4}" for c in CATEGORIES)
        lines.append(f"{t:>9.4f} {len(caught) / max(1, len(pos)):>7.3f} {fp / max(1, len(neg)):>6.3f} "
                     f"{len(caught):>7} {fp:>7}  {per}" + ("   <- shipped" if t == layer.threshold else ""))
    return "\n".join(lines)


def rules_at(commit: str, texts: list[str]) -> list[tuple[bool, str | None]]:
    """(crisis, category) of the rule layer as it was at a git commit (its bot/safety/rules.py and screen.py, run in
    a separate process from a temporary copy), for each text."""
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "bot" / "safety"
        pkg.mkdir(parents=True)
        for name in ("rules.py", "screen.py"):
            source = subprocess.run(["git", "-C", str(root), "show", f"{commit}:bot/safety/{name}"], check=True,
                                    capture_output=True, text=True).stdout
            (pkg / name).write_text(source, encoding="utf-8")
        (pkg.parent / "__init__.py").write_text("")
        (pkg / "__init__.py").write_text("")
        code = ("import json, sys; from bot.safety.screen import screen_rules as f; "
                "print(json.dumps([(g.crisis, g.category) for g in map(f, json.load(sys.stdin))]))")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp, input=json.dumps(texts), capture_output=True,
                             text=True, check=True, env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"}).stdout
    return [tuple(x) for x in json.loads(out)]


def loso_scored(before: bool = False, setting=None, rules: dict[str, str | None] | None = None,
                ) -> dict[str, list[tuple[dict, bool, float, str]]]:
    """Leave-one-set-out scores (bot.safety.fit.loso) with the rules applied: per held-out set,
    (row, caught by a rule, classifier score, category). `rules`: per fold, a commit whose rules to apply instead of
    the current ones (None or absent: the current rules)."""
    from bot.safety import fit
    from bot.safety.screen import SCREEN_CHARS

    only = ("train", "set", "fresh", "fresh2") if before else None
    folds = fit.loso(fit.Vectors(), setting or fit.SETTING, only=only)
    out = {}
    for name, scored in folds.items():
        texts = [r["text"][:SCREEN_CHARS] for r, _, _ in scored]
        commit = (rules or {}).get(name)
        hits = rules_at(commit, texts) if commit else [(g.crisis, g.category) for g in map(screen_rules, texts)]
        out[name] = []
        for (r, s, cat), text, (hit, rule_cat) in zip(scored, texts, hits):
            enough = sum(c.isalpha() for c in text) >= 3
            out[name].append((r, hit, s if enough else 0.0, rule_cat if hit else cat))
    return out


def loso_figures(scored: dict[str, list], threshold: float) -> dict[str, tuple[float, float]]:
    """Per fold (recall, FPR) of rules + classifier at one threshold, plus "mean" and "worst"."""
    out = {}
    for name, rows in scored.items():
        pos = [h or s >= threshold for r, h, s, _ in rows if r["crisis"]]
        neg = [h or s >= threshold for r, h, s, _ in rows if not r["crisis"]]
        out[name] = (sum(pos) / max(1, len(pos)), sum(neg) / max(1, len(neg)))
    folds = list(out.values())
    out["mean"] = (sum(r for r, _ in folds) / len(folds), sum(f for _, f in folds) / len(folds))
    out["worst"] = (min(r for r, _ in folds), max(f for _, f in folds))
    return out


def loso_choice(scored: dict[str, list], thresholds: list[float]) -> str:
    """The threshold rule fixed before round 5's and round 6's figures (bot.safety.fit.LOSO_MEAN_FPR / LOSO_WORST_FPR):
    the lowest threshold whose mean false-positive rate over the folds and whose worst fold are within the limits."""
    from bot.safety import fit

    ok = [t for t in sorted(thresholds) if (f := loso_figures(scored, t))["mean"][1] <= fit.LOSO_MEAN_FPR + 1e-9
          and f["worst"][1] <= fit.LOSO_WORST_FPR + 1e-9]
    return (f"Rule (lowest threshold with mean FPR <= {fit.LOSO_MEAN_FPR} and worst fold <= {fit.LOSO_WORST_FPR}): "
            + (f"{ok[0]}" if ok else "none of these thresholds qualifies"))


def loso_report(threshold: float | None = None, before: bool = False, misses: bool = False,
                thresholds: list[float] | None = None, rules_at: dict[str, str | None] | None = None) -> str:
    """The leave-one-set-out table: a threshold sweep (recall / FPR per fold, mean and worst), per-category counts at
    `threshold` and, with `misses`, every missed crisis and false positive of each fold (these sets are training
    data since round 4, so they may be read)."""
    from bot.safety import classifier

    threshold = threshold if threshold is not None else classifier.load_weights()["threshold"]
    scored = loso_scored(before, rules=rules_at)
    names = list(scored)
    thresholds = sorted(set(thresholds or [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.97, 0.98])
                        | {threshold})
    rules_note = ", ".join(f"{n} {(rules_at or {}).get(n) or 'now'}" for n in names)
    lines = [f"Leave one set out ({'fitted on the third round data only' if before else 'fitted on all other sets'}): "
             f"rules + classifier, recall / FPR per held-out set; rules of: {rules_note}",
             f"{'threshold':>9}  " + "".join(f"{n:>14}" for n in names) + f"{'mean':>14}{'worst':>14}"]
    for t in thresholds:
        fig = loso_figures(scored, t)
        lines.append(f"{t:>9.3f}  " + "".join(f"{fig[n][0]:>7.3f}/{fig[n][1]:.3f}" for n in names + ["mean", "worst"])
                     + ("  <-" if t == threshold else ""))
    lines.append(loso_choice(scored, thresholds))
    lines.append("Classifier alone (no rules; no fold's own messages trained it):")
    alone = {name: [(r, False, s, c) for r, _, s, c in rows] for name, rows in scored.items()}
    for t in thresholds:
        fig = loso_figures(alone, t)
        lines.append(f"{t:>9.3f}  " + "".join(f"{fig[n][0]:>7.3f}/{fig[n][1]:.3f}" for n in names + ["mean", "worst"])
                     + ("  <-" if t == threshold else ""))
    lines.append(f"\nAt {threshold}: per category (caught/crises), rules alone, right category")
    for name in names:
        rows = scored[name]
        pos = [(r, h, s, c) for r, h, s, c in rows if r["crisis"]]
        per = " ".join(f"{cat[:8]} {sum(h or s >= threshold for r, h, s, _ in pos if r['category'] == cat)}/"
                       f"{sum(r['category'] == cat for r, *_ in pos)}" for cat in CATEGORIES)
        rules = sum(h for _, h, _, _ in pos) / max(1, len(pos))
        right = sum((h or s >= threshold) and c == r["category"] for r, h, s, c in pos) / max(1, len(pos))
        lines.append(f"  {name:7} {per}  rules {rules:.3f}  right category {right:.3f}")
    if misses:
        for name in names:
            if name in NEVER_LISTED:
                lines.append(f"({name}: aggregates only, its messages are never listed)")
                continue
            for r, h, s, c in scored[name]:
                hit = h or s >= threshold
                if r["crisis"] and not hit:
                    lines.append(f"MISSED  [{name}] {s:.3f} ({r['category']}) {r['text']}")
                elif not r["crisis"] and hit:
                    lines.append(f"FALSE+  [{name}] {'rule' if h else f'{s:.3f}'} ({c}) {r['text']}")
    return "\n".join(lines)


def classifier_training_rows() -> list[dict]:
    from bot.safety import fit

    return fit.load_all()


def guard_table() -> str:
    """The output guard over real therapists' answers (counsel_chat.csv): how often it would flag them, by reason.
    Their answers link their websites, give office numbers and speak of 'my clients', which the bot must not do;
    'plain' answers are those without any of that."""
    import csv
    import re
    from collections import Counter

    from bot.safety.guard import Guard

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "counsel_chat.csv"
    if not path.exists():
        return f"(no {path}: guard table skipped)"
    with open(path, encoding="utf-8") as f:
        answers = [r["answerText"] for r in csv.DictReader(f) if r["answerText"].strip()]
    own = re.compile(r"http|www\.|\.com|\.org|\d{3}|my (clients|practice|office|patients)|as a (therapist|counsel)|"
                     r"i am (a|licensed)|i'm a", re.IGNORECASE)
    guard = Guard("US")
    t0 = time.perf_counter()
    found = [guard.violations(a) for a in answers]
    ms = (time.perf_counter() - t0) * 1000 / len(answers)
    reasons = Counter(r for v in found for r in v)
    plain = [v for a, v in zip(answers, found) if not own.search(a)]
    lines = [f"Output guard on {len(answers)} real therapists' answers ({path.name}), {ms:.2f} ms/answer:",
             f"  flagged, all answers          {sum(bool(v) for v in found):5d}  "
             f"({sum(bool(v) for v in found) / len(answers):.1%})",
             f"  flagged, 'plain' answers      {sum(bool(v) for v in plain):5d} of {len(plain)}  "
             f"({sum(bool(v) for v in plain) / len(plain):.1%})"]
    lines += [f"  {reason:30}{n:5d}" for reason, n in reasons.most_common()]
    return "\n".join(lines)


def _two_layers(text: str, layer):
    found = screen_rules(text)
    return found if found.crisis else layer(text)


def _misses(args, results: dict) -> None:
    if not (args.misses or args.test_misses):
        return
    for split in [c for c in results if c not in ("all", *UNSEEN, *NEVER_LISTED_NOW)] if args.test_misses else ["dev"]:
        for text in results[split]["missed"]:
            print(f"MISSED  [{split}] {text}")
        for text, rule in results[split]["false_pos"]:
            print(f"FALSE+  [{split}] {text}  ({rule})")


if __name__ == "__main__":
    main()
