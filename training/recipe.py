"""Training recipes: a dataclass loaded from YAML (`training/recipes/*.yaml`), overridable with `key=value`.

Every field has a default; a YAML file names only what differs. Unknown keys are errors (a typo must not be a
silently ignored setting). Values given as strings on the command line are parsed as YAML scalars
(`max_steps=10`, `bf16=false`, `target_modules=[q_proj,v_proj]`, `base=null`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/counsel_chat.csv"


class RecipeError(ValueError):
    """A recipe file or override that cannot be used."""


@dataclass
class Recipe:
    name: str = "recipe"
    # --- model ---
    base: str | None = None  # hub id, HF folder or .gguf; None = the embedded SmolLM2 default
    load_in_4bit: bool = False  # QLoRA: NF4 weights via bitsandbytes
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = True
    bnb_4bit_compute_dtype: str = "bfloat16"
    kbit_upcast: bool = True  # 4-bit: peft's k-bit preparation (fp32 norms/embeddings/head); false = keep bf16
    attn_implementation: str | None = None  # None = transformers' default (sdpa); varlen = training/attention.py
    device: str = "auto"
    # --- LoRA ---
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    # --- data ---
    data: str = DEFAULT_DATA  # hub id, counsel-chat CSV, or CSV/JSONL with Context/Response
    data_limit: int | None = None  # raw rows read
    eval_fraction: float = 0.1  # used when the source has no split column
    eval_limit: int | None = 64  # eval answers used for eval loss before/after (None = all)
    max_length: int = 384
    drop_guard_violations: bool = False  # leave out training answers the served output guard would block
    padding_free: bool = False  # position-id packing (BFD) without cross-example attention
    # --- optimisation ---
    seed: int = 0
    learning_rate: float = 3e-4
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    weight_decay: float = 0.0
    neftune_noise_alpha: float | None = None  # NEFTune: uniform noise on input embeddings while training
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    use_liger_kernel: bool = False
    bf16: bool | None = None  # None = where the hardware supports it (CUDA bf16, CPU with AVX512-BF16)
    logging_steps: int = 1
    # --- promotion gate (counsel-bot retrain) ---
    # Quality bar against the base model, measured by `counsel-bot eval` on `gate_questions` held-out questions:
    # training.metrics.Thresholds fields ({} = the project's bar: perplexity -15%, no loss of similarity,
    # distinct-2, guard pass rate or crisis figures); None = perplexity against the adapter in service only.
    gate: dict[str, Any] | None = None
    gate_questions: int = 100
    # Sampled replies per question in that eval (`counsel-bot eval --samples`): the figures are means over the
    # samples and the "no loss" checks allow `noise_z` (in `gate`, default 1) paired standard errors.
    gate_samples: int = 1
    # --- output ---
    output_root: str = "runs"
    save_dtype: str | None = "bfloat16"  # dtype of the saved LoRA weights (None = as trained, fp32)

    def overrides(self, items: Iterable[str]) -> Recipe:
        return apply_overrides(self, items)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def _allowed(tp: Any) -> tuple[type, ...]:
    tp = typing.get_type_hints(Recipe)[tp] if isinstance(tp, str) else tp
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)
    return tuple(typing.get_origin(a) or a for a in args)


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise RecipeError(f"unknown recipe field {name!r}; known: {', '.join(sorted(_FIELDS))}")
    allowed = _allowed(name)
    if isinstance(value, str) and str not in allowed:  # YAML 1.1 reads "1e-3" as text
        for conv in (int, float):
            if conv in allowed or (conv is int and float in allowed):
                try:
                    value = conv(value)
                    break
                except ValueError:
                    pass
    if value is None:
        if type(None) in allowed:
            return None
        raise RecipeError(f"{name} cannot be null")
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and int in allowed:
        return value
    elif isinstance(value, (int, float)) and float in allowed:
        return float(value)
    elif isinstance(value, str) and str in allowed:
        return value
    elif isinstance(value, list) and list in allowed:
        return [str(v) for v in value]
    elif isinstance(value, dict) and dict in allowed:
        return {str(k): v for k, v in value.items()}
    elif isinstance(value, (int, float)) and str in allowed:
        return str(value)
    raise RecipeError(f"{name}: {value!r} is not a valid {' | '.join(a.__name__ for a in allowed)}")


def from_dict(data: dict[str, Any], base: Recipe | None = None) -> Recipe:
    recipe = dataclasses.replace(base) if base else Recipe()
    for key, value in (data or {}).items():
        setattr(recipe, key, _coerce(key, value))
    return recipe


def resolve_path(path: str | Path) -> Path:
    """A recipe path, or a bare name of a file in training/recipes/ ("smollm2-cpu")."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    for cand in (RECIPES_DIR / p.name, RECIPES_DIR / f"{p.name}.yaml"):
        if cand.exists():
            return cand
    raise RecipeError(f"recipe not found: {path} (see {RECIPES_DIR})")


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    p = resolve_path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe is a mapping of field: value")
    data.setdefault("name", p.stem)
    return apply_overrides(from_dict(data), overrides)


def apply_overrides(recipe: Recipe, items: Iterable[str]) -> Recipe:
    """`key=value` strings (value parsed as a YAML scalar/list) applied on a copy of `recipe`."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not key=value")
        key = key.strip().replace("-", "_")
        value = yaml.safe_load(raw) if raw.strip() else None
        if key in _FIELDS and str in _allowed(key) and not isinstance(value, (list, type(None))):
            if not (bool in _allowed(key) or int in _allowed(key) or float in _allowed(key)):
                value = raw  # paths and ids stay text ("007" is not 7)
        parsed[key] = value
    return from_dict(parsed, recipe)


def resolve_data(data: str) -> str:
    """A data path as given, or relative to the repository root (recipes say ../shared/data/...), or a hub id."""
    p = Path(data).expanduser()
    if p.exists():
        return str(p)
    repo_relative = REPO_ROOT / data
    return str(repo_relative.resolve()) if repo_relative.exists() else data


def field_names() -> list[str]:
    return list(_FIELDS)


__all__ = ["Recipe", "RecipeError", "load_recipe", "apply_overrides", "from_dict", "resolve_path", "resolve_data",
           "field_names", "RECIPES_DIR"]
