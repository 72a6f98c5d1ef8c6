"""Crisis-screen benchmark on the labelled set: recall on crises, false-positive rate on non-crises, per-category
recall and milliseconds per message, for the dev split (used while writing the rules) and the held-out test split.

    make bench-safety            # rules (+ the embedding layer when it is enabled, see bot/safety/screen.py)
    python benchmarks/safety.py --misses   # also list what was missed / wrongly flagged (texts from the set)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.safety.screen import CATEGORIES, screen  # noqa: E402

SET = Path(__file__).with_name("safety_set.jsonl")
FRESH = Path(__file__).with_name("safety_fresh.jsonl")  # written after the rules were frozen; never tuned on


def load(path: Path = SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(rows: list[dict], fn=screen) -> dict:
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
    ap.add_argument("--test-misses", action="store_true", help="also list them for the held-out test split")
    args = ap.parse_args()
    rows = load()
    fresh = load(FRESH)
    results = {}
    for split in ("dev", "test"):
        results[split] = evaluate([r for r in rows if r["split"] == split])
    results["fresh"] = evaluate(fresh)
    results["all"] = evaluate(rows + fresh)
    print(f"Crisis screen on {SET.name} ({len(rows)} messages; 'test' = 30% held out from rule tuning) and "
          f"{FRESH.name} ({len(fresh)} messages written after the rules were frozen).")
    print(table(results))
    if args.misses or args.test_misses:
        for split in ("dev", "test", "fresh") if args.test_misses else ("dev",):
            for text in results[split]["missed"]:
                print(f"MISSED  [{split}] {text}")
            for text, rule in results[split]["false_pos"]:
                print(f"FALSE+  [{split}] {text}  ({rule})")


if __name__ == "__main__":
    main()
