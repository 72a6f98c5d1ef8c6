"""Shared pieces of the GPU benchmarks: the Llama-2-7B shape with random weights, a 32k-vocabulary tokenizer trained
on the counsel-chat text (so prompts are real text of realistic length), and that text.

Nothing here downloads anything: the GPU host reaches no network. `prepare_assets()` runs on the development machine
and writes `.bench/` (git-ignored), which the GPU call carries.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / ".bench"
TOKENIZER_DIR = ASSETS / "tok32k"
DATA_CSV = ASSETS / "counsel_chat.csv"
SOURCE_CSV = REPO.parent / "shared" / "data" / "counsel_chat.csv"

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)


def llama2_config(**overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{**LLAMA2_7B, **overrides})


def random_model(dtype=None, device: str = "cuda", **overrides):
    """Llama-2-7B shape with random weights, built directly on the device (seconds, not minutes)."""
    import torch
    from transformers import LlamaForCausalLM

    dtype = dtype or torch.bfloat16
    with torch.device(device):
        model = LlamaForCausalLM._from_config(llama2_config(**overrides), dtype=dtype)
    return model.eval()


def texts(path: Path | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs of the counsel-chat CSV."""
    path = path or (DATA_CSV if DATA_CSV.exists() else SOURCE_CSV)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        q = f"{r.get('questionTitle') or ''}\n{r.get('questionText') or ''}".strip()
        a = (r.get("answerText") or "").strip()
        if q and a:
            out.append((q, a))
    return out


def prepare_assets(vocab_size: int = 32000) -> Path:
    """Train a byte-level BPE tokenizer (vocab <= 32k, ids 0/1/2 = unk/bos/eos as in Llama 2) on the counsel text."""
    import shutil

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    ASSETS.mkdir(exist_ok=True)
    if not DATA_CSV.exists():
        shutil.copy(SOURCE_CSV, DATA_CSV)
    if (TOKENIZER_DIR / "tokenizer.json").exists():
        return TOKENIZER_DIR
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([q + "\n" + a for q, a in texts(SOURCE_CSV)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(TOKENIZER_DIR)
    return TOKENIZER_DIR


def load_tokenizer():
    from model.loading import load_tokenizer as project_loader

    return project_loader(str(TOKENIZER_DIR))


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def out_dir() -> Path:
    p = Path(os.environ.get("OUT") or (REPO / "runs" / "bench"))
    p.mkdir(parents=True, exist_ok=True)
    return p


if __name__ == "__main__":
    print(prepare_assets())
