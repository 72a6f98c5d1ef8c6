"""LoRA's output added inside the adapter's second matrix product instead of by three more passes over memory.

peft computes a LoRA layer as `result = base(x) + lora_B(lora_A(dropout(x))) * scaling` (its 4-bit layer also clones
`result` first). On a 7B model at 16k tokens a step, the clone, the scaling and the add are each a full pass over a
(tokens x 4,096) bf16 tensor for every adapted layer, forward and backward, ~3% of a QLoRA step on an H100 (kernel
profile in benchmarks/RESULTS.md). `torch.addmm(result, h, B.T, alpha=scaling)` does the same sum in the product's
epilogue: one rounding instead of three, and autograd's backward of addmm scales the small (tokens x r) gradient only.

Only plain LoRA takes this path (one active adapter, not merged, no DoRA or other variant, no bias on B, no mixed
adapter batch); anything else, and float inputs of mixed dtypes outside autocast, runs peft's own forward.
"""
from __future__ import annotations

import types


def fuse_lora_output(model) -> int:
    """Give every peft LoRA linear layer of `model` the fused forward. Returns the number of layers changed."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and hasattr(module, "lora_A") and hasattr(module, "base_layer") \
                and not hasattr(module, "_peft_forward"):
            module._peft_forward = module.forward
            module.forward = types.MethodType(_fused_forward, module)
            n += 1
    return n


def _plain_adapter(layer, kwargs) -> str | None:
    """The one active adapter when the fused sum computes exactly what peft would, else None."""
    if layer.disable_adapters or layer.merged or kwargs.get("adapter_names") is not None:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    a = active[0]
    if a in getattr(layer, "lora_variant", {}) or getattr(layer.lora_B[a], "bias", None) is not None:
        return None
    if not hasattr(layer.lora_A[a], "weight"):
        return None
    return a


def _fused_forward(self, x, *args, **kwargs):
    import torch

    a = _plain_adapter(self, kwargs)
    autocast = torch.is_autocast_enabled(x.device.type)
    lora_A, lora_B = (self.lora_A[a], self.lora_B[a]) if a is not None else (None, None)
    if a is None or (not autocast and not x.dtype == lora_A.weight.dtype == lora_B.weight.dtype):
        return self._peft_forward(x, *args, **kwargs)
    self._check_forward_args(x, *args, **kwargs)
    kwargs.pop("adapter_names", None)
    result = self.base_layer(x, *args, **kwargs)
    h = lora_A(self.lora_dropout[a](x))
    acc = result if autocast else result.to(h.dtype)  # peft's sum promotes the same way, then casts back
    out = torch.addmm(acc.reshape(-1, acc.shape[-1]), h.reshape(-1, h.shape[-1]), lora_B.weight.t(),
                      alpha=self.scaling[a])
    return out.view(result.shape).to(result.dtype)
