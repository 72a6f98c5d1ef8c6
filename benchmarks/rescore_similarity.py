"""Recompute the similarity column of an eval folder with the real all-MiniLM-L6-v2 weights.

`benchmarks/gpu_recipe_sweep.sh` evaluates on the GPU host, where the 88 MB similarity model cannot be carried:
there the column is computed with random weights. This script re-reads the folder's replies (`replies.jsonl`) and the
held-out questions named in `run.json`, scores every reply against its question's reference answers with the real
model, rewrites `metrics.json` (marking `similarity_rescored`) and prints the comparison table.

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
    by_model: dict[str, dict[str, str]] = defaultdict(dict)
    for line in (folder / "replies.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_model[row["model"]][row["question_id"]] = row["reply"]
    embedder = M.Embedder()
    ref_vecs = embedder.encode(references)
    metrics = json.loads((folder / "metrics.json").read_text())
    for label, replies in by_model.items():
        missing = [q.question_id for q in questions if q.question_id not in replies]
        if missing:
            raise SystemExit(f"{label}: no reply for {len(missing)} held-out questions (was the data the same?)")
        vecs = embedder.encode([replies[q.question_id] for q in questions])
        sims = M.mean_reference_similarity(vecs, ref_vecs, [q.references for q in questions])
        metrics[label]["similarity"] = sum(sims) / len(sims)
        metrics[label]["similarity_rescored"] = True
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
