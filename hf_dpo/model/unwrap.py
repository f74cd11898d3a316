"""One way to see through a model's wrappers: DDP / DeepSpeed / torch.compile first (accelerate's
`extract_model_from_parallel`, the same as `Accelerator.unwrap_model`), then peft.

    peft_model(model)   # the PeftModel (or plain model) inside any parallel wrapper
    base_model(model)   # the transformers model under the LoRA adapters
"""

from __future__ import annotations

from accelerate.utils import extract_model_from_parallel


def peft_model(model):
    """The model inside DDP / DeepSpeed / compile wrappers: a PeftModel when adapters are attached."""
    if not hasattr(model, "module") and "_orig_mod" not in model.__dict__:
        # Nothing wraps it. accelerate would still walk every submodule looking for compiled regions
        # (~0.05-0.15 s on a 30-layer model), and this runs a few times per forward pass.
        return model
    return extract_model_from_parallel(model)


def base_model(model):
    """The transformers model inside every wrapper, peft's included."""
    inner = peft_model(model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def is_peft(model) -> bool:
    return hasattr(peft_model(model), "peft_config")
