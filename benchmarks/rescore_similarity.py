"""Recompute the similarity column of an eval folder with the real all-MiniLM-L6-v2 weights.

`benchmarks/gpu_recipe_sweep.sh` evaluates on the GPU host, where the 88 MB similarity model cannot be carried:
there the column is computed with random weights. This script re-reads the folder's replies (`replies.jsonl`) and the
held-out questions named in `run.json`, scores every reply (every sample, with `--samples`) against its question's
reference answers with the real model, rewrites the similarity figures of `metrics.json` (the mean, its error across
samples and the paired difference with the base; marking `similarity_rescored`) and prints the comparison table.

    python benchmarks/rescore_similarity.py runs/sweep/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rescore(folder: Path) -> dict:
    from training import metrics as M
    from training.evaluate import EvalConfig, held_out_questions

    run = json.loads((folder / "run.json").read_text())
    cfg = run.get("config", {})
    ecfg = EvalConfig(data=cfg.get("data", EvalConfig.data), limit=cfg.get("limit"),
                      split_seed=cfg.get("split_seed", 0), eval_fraction=cfg.get("eval_fraction", 0.1))
    questions, references = held_out_questions(ecfg)
    # model -> sample -> question id -> row (folders written before --samples have no `sample`: one sample)
    rows: dict[str, dict[int, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for line in (folder / "replies.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["model"]][int(row.get("sample", 0))][row["question_id"]] = row
    from bot.safety import Guard

    violations = Guard().violations
    embedder = M.Embedder()
    ref_vecs = embedder.encode(references)
    metrics = json.loads((folder / "metrics.json").read_text())
    stats: dict[str, list[list[M.ReplyStats]]] = {}
    for label, by_sample in rows.items():
        stats[label] = []
        for k in sorted(by_sample):
            replies = by_sample[k]
            missing = [q.question_id for q in questions if q.question_id not in replies]
            if missing:
                raise SystemExit(f"{label} sample {k}: no reply for {len(missing)} held-out questions "
                                 "(was the data the same?)")
            picked = [replies[q.question_id] for q in questions]
            vecs = embedder.encode([r["reply"] for r in picked])
            sims = M.mean_reference_similarity(vecs, ref_vecs, [q.references for q in questions])
            stats[label].append([M.reply_stats(r["reply"], s, r.get("finish_reason") == "length", violations)
                                 for r, s in zip(picked, sims)])
        agg = M.aggregate_samples(stats[label])
        metrics[label]["similarity"] = agg["similarity"]
        if "per_sample" in metrics[label]:
            metrics[label]["per_sample"]["similarity"] = agg["per_sample"]["similarity"]
            metrics[label]["seed_se"]["similarity"] = agg["seed_se"]["similarity"]
        metrics[label]["similarity_rescored"] = True
    for label in metrics:
        if label != "base" and "vs_base" in metrics[label] and "base" in stats and label in stats:
            metrics[label]["vs_base"]["similarity"] = M.paired_difference(
                stats["base"], stats[label], "similarity").as_dict()
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="an eval output folder (metrics.json, replies.jsonl, run.json)")
    args = ap.parse_args()
    metrics = rescore(args.folder)
    base = metrics.get("base", {})
    keys = ("perplexity", "similarity", "distinct_2", "repeated_ngram_rate", "mean_words", "guard_pass_rate")
    print(f"{'model':<24}" + "".join(f"{k[:12]:>14}" for k in keys))
    for label, m in metrics.items():
        cells = []
        for k in keys:
            v, b = m.get(k), base.get(k)
            rel = f" {(v - b) / abs(b):+.0%}" if label != "base" and isinstance(v, float) and b else ""
            cells.append(f"{v:>9.3f}{rel:>5}" if isinstance(v, (int, float)) else f"{'n/a':>14}")
        print(f"{label:<24}" + "".join(cells))


if __name__ == "__main__":
    main()
