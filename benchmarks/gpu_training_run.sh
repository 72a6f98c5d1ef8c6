#!/usr/bin/env bash
# Training on the lent GPU host (no network): the SmolLM2 QLoRA recipe for real on the shared data (the adapter shipped
# for the embedded default model), then the Llama-2-7B-shaped QLoRA recipe for a few hundred steps on random base
# weights (the 4-bit path end to end; the tokenizer is SmolLM2's, so the vocabulary is 49,152 instead of 32,000).
#
# Expects: $DATA (counsel_chat.csv), wheels in $WHEELS, $OUT (results come back from there); for the SmolLM2 stage
# $GGUF (the SmolLM2 GGUF, carried in parts and re-assembled); for the 7B stage a tokenizer folder $TOK (default: the
# converted SmolLM2). STAGES="smol l7b" picks the stages. Prints a short table last.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/log.txt"
train() { python3 -c "from bot.cli import app; app()" train "$@"; }

STAGES=${STAGES:-smol l7b}
if [[ " $STAGES " == *" smol "* ]]; then
# 1. SmolLM2, 4-bit NF4 QLoRA, r=16 all-linear, 3 epochs of the train split; eval on the val split.
timeout 330 bash -c "$(declare -f train); train --recipe smollm2-qlora --base '$GGUF' --data '$DATA' --run-dir /tmp/run-smol" \
  2>&1 | grep -vE "it/s\]|s/it\]" | tail -40 | tee -a "$OUT/log.txt"
if [ -d /tmp/run-smol/adapter ]; then
  tar -C /tmp/run-smol -cf "$OUT/smol_adapter.tar" adapter
  for f in metrics.json loss.png config.yaml data_report.json; do cp /tmp/run-smol/$f "$OUT/smol_$f" 2>/dev/null; done
fi

fi

if [[ " $STAGES " == *" l7b "* ]]; then
# 2. Llama-2-7B shape, random weights, NF4 QLoRA as in the notebook recipe (r=64 q/v, gradient checkpointing,
#    paged 8-bit AdamW, 4 x 2048 padding-free), a few hundred steps on the real data.
python3 - <<'PY' 2>&1 | tail -3 | tee -a "$OUT/log.txt"
import glob, time, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
t = time.time()
import os
tok = AutoTokenizer.from_pretrained(os.environ.get("TOK") or glob.glob("/root/.cache/counsel-bot/models/*")[0])
cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, vocab_size=len(tok), max_position_embeddings=4096, rms_norm_eps=1e-5,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    m = LlamaForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained("/tmp/l7b"); tok.save_pretrained("/tmp/l7b")
print(f"random 7B-shaped base saved in {time.time() - t:.0f} s")
PY
timeout ${L7B_TIMEOUT:-300} bash -c "$(declare -f train); train --recipe llama2-7b-qlora --base /tmp/l7b --data '$DATA' --max-steps ${L7B_STEPS:-200} --set eval_limit=48 --run-dir /tmp/run-l7b" \
  2>&1 | grep -vE "it/s\]|s/it\]" | tail -30 | tee -a "$OUT/log.txt"
for f in metrics.json loss.png; do cp /tmp/run-l7b/$f "$OUT/l7b_$f" 2>/dev/null; done
fi
python3 - <<'PY'
import json, os
out = os.environ["OUT"]
print(f"{'run':<10} {'steps':>6} {'s/step':>7} {'tok/s':>8} {'peak GB':>8} {'eval loss before':>17} {'after':>7} {'adapter MB':>10}")
for name in ("smol", "l7b"):
    try:
        m = json.load(open(f"{out}/{name}_metrics.json"))
    except OSError:
        print(name, "no metrics"); continue
    peak = (m.get("peak_cuda_allocated_mb") or 0) / 1024
    print(f"{name:<10} {m['steps']:>6} {m['seconds_per_step']:>7} {m['tokens_per_second'] or 0:>8} {peak:>8.1f} "
          f"{m['eval_loss_before'] or 0:>17.3f} {m['eval_loss_after'] or 0:>7.3f} {m['adapter_mb']:>10}")
PY
