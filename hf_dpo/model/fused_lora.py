"""LoRA's forward on the layers hf_dpo trains, with the adapter's product added into the base output by one matmul.

peft computes a plain LoRA layer as

    result = base_layer(x)                   # (N, out); a 4-bit layer's copied once more ("defensive clone")
    result = result + lora_B(lora_A(dropout(x))) * scaling

which writes and reads the (N, out) output three or four times more than it needs (the clone, the product, its
scaled copy, the sum), forward and again in the backward's scaling. `torch.addmm(result, h, B.T, alpha=scaling)`
does the same in one pass: result + scaling · (h @ B.T), the scaling inside the matmul, also in the backward.
Measured on the bench's 4-bit SmolLM2 demo line (CPU, float32): 240-300 MB less peak RSS; the time per step
within this VM's noise (a few percent) of peft's.

Only the plain case is taken: one or more active adapters without a variant (DoRA, ...) or a lora_B bias, no
mixed-batch `adapter_names`, not merged, not disabled, no autocast, every tensor in one dtype. Anything else goes
to peft's own forward, as does any layer whose peft version lacks the attributes read here.
"""

from __future__ import annotations

import types

import torch

_READS = (
    "base_layer",
    "lora_A",
    "lora_B",
    "lora_dropout",
    "scaling",
    "active_adapters",
    "merged",
    "disable_adapters",
)


def fused_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`layer`'s LoRA forward: base output + scaling · B(A(dropout(x))), the last matmul adding into the output."""
    if args or kwargs or layer.disable_adapters or layer.merged or torch.is_autocast_enabled(x.device.type):
        return type(layer).forward(layer, x, *args, **kwargs)
    adapters = [name for name in layer.active_adapters if name in layer.lora_A]
    variants = getattr(layer, "lora_variant", {})
    if any(name in variants or layer.lora_B[name].bias is not None for name in adapters):
        return type(layer).forward(layer, x, *args, **kwargs)
    result = layer.base_layer(x)  # (..., out)
    out = result.reshape(-1, result.shape[-1])  # (N, out)
    for name in adapters:
        lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
        h = lora_a(layer.lora_dropout[name](x.to(lora_a.weight.dtype)))  # (..., r)
        h = h.reshape(-1, h.shape[-1])  # (N, r)
        if h.dtype == out.dtype == lora_b.weight.dtype:
            out = torch.addmm(out, h, lora_b.weight.t(), alpha=layer.scaling[name])  # (N, out)
        else:  # peft's way: the product in the adapter's dtype, added in the output's
            out = out + (lora_b(h) * layer.scaling[name]).to(out.dtype)
    return out.view(result.shape)


def install_fused_lora(model) -> int:
    """Give every plain peft LoRA linear of `model` (`peft.tuners.lora.Linear`, and bitsandbytes' 4-bit one) the
    fused forward, as a method of the layer (a deep copy of the model keeps its own); returns how many."""
    classes = []
    try:
        from peft.tuners.lora import Linear

        classes.append(Linear)
        from peft.tuners.lora.bnb import Linear4bit

        classes.append(Linear4bit)
    except ImportError:  # no bitsandbytes: the plain Linear only
        pass
    count = 0
    for module in model.modules():
        if type(module) in classes and all(hasattr(module, attr) for attr in _READS):
            module.forward = types.MethodType(fused_forward, module)
            count += 1
    return count
