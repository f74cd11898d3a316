"""The reference policy, in one place. hf_dpo never loads a second model for it: the reference is the policy's
network with the LoRA adapters switched off (`reference_context`), or, when training continues from an existing
adapter, a frozen copy of that adapter named "reference" (`with_adapter(..., reference=...)`). Here too: the one
way a base model gets an adapter from disk (a starting adapter, a trained run, an SFT adapter to sample from,
an adapter to merge), and the dequantized 4-bit weights that generation on CPU computes with.

    with reference_context(model):            # the reference's forward passes
        ref_logps = ...
    model = with_adapter(base, run_dir, reference=recipe.model.adapter_name_or_path)   # a trained run
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from hf_dpo.model import unwrap
from hf_dpo.model.errors import ModelLoadError

REFERENCE_ADAPTER = "reference"


@contextlib.contextmanager
def quiet_peft_checkpointing_alias():
    """Around every PeftModel construction (get_peft_model, PeftModel.from_pretrained): PeftModel.__init__ reads
    `model.is_gradient_checkpointing`, which transformers deprecated for `is_activation_checkpointing` with a
    FutureWarning that every run printed and no user can act on. Only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def with_adapter(model, adapter: str, *, is_trainable: bool = False, reference: str | None = None):
    """`model` (a base model) wrapped in a PeftModel holding the LoRA adapter saved at `adapter` (a directory or
    a Hub id), active and trainable when `is_trainable`. `reference`: a starting adapter, loaded beside it as the
    frozen adapter "reference" that `reference_context` switches to."""
    from peft import PeftModel

    with quiet_peft_checkpointing_alias():
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    if reference:
        model.load_adapter(reference, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    return model


@contextlib.contextmanager
def reference_context(model):
    """Make `model` compute the reference policy: the frozen 'reference' adapter if present, else no adapter."""
    peft_model = unwrap.peft_model(model)
    if not hasattr(peft_model, "peft_config"):
        raise ModelLoadError(
            "hf_dpo computes the reference by switching LoRA adapters off; the model has none. "
            "Pass peft_config=LoraConfig(...) or a PeftModel."
        )
    if REFERENCE_ADAPTER in peft_model.peft_config:
        active = peft_model.active_adapter
        peft_model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            peft_model.set_adapter(active)
            # set_adapter marks only the active adapter trainable; restore the reference as frozen.
            for name, param in peft_model.named_parameters():
                if f".{REFERENCE_ADAPTER}." in name:
                    param.requires_grad_(False)
    else:
        with peft_model.disable_adapter():
            yield


# ---------------------------------------------------------------- dequantized weights for generation


def float_linear_of_4bit(child):
    """A torch Linear with exactly the weights a bitsandbytes Linear4bit computes with (dequantized once)."""
    import bitsandbytes as bnb

    dtype = child.compute_dtype or torch.float32
    data, state = child.weight.data, child.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # repacked by an eval-mode CPU forward
        data, state = bnb.functional._convert_weight_packed_for_cpu_inverse(data, state)
    weight = bnb.functional.dequantize_4bit(data, state).to(dtype)
    linear = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, dtype=dtype)
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if child.bias is not None:
        linear.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
    return linear


def swap_4bit_linears(model) -> list[tuple[torch.nn.Module, str, torch.nn.Module]]:
    """Replace every bitsandbytes Linear4bit of `model` by `float_linear_of_4bit` of it; the (parent, name,
    4-bit layer) swapped, to put back. Nothing without bitsandbytes."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    swapped = []
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                swapped.append((module, name, child))
                setattr(module, name, float_linear_of_4bit(child))
    return swapped


def dequantize_on_cpu(model):
    """On CPU, swap 4-bit linears for float ones holding exactly the weights the 4-bit layer computes with.

    bitsandbytes' CPU path (without the optional `kernels` package) dequantizes every weight on every
    forward and then multiplies in the compute dtype; doing the dequantization once gives the same
    function (the NF4-rounded weights, in the same dtype) ~1.7x faster. On a GPU the 4-bit kernels stay.
    """
    if model.device.type == "cpu":
        swap_4bit_linears(model)
    return model


@contextlib.contextmanager
def decoding_weights(model):
    """On CPU, the 4-bit base layers dequantized once for the duration (LoRA layers untouched), then put back.

    bitsandbytes' CPU path dequantizes every weight at every forward; a decoding loop makes hundreds of
    forwards, so this is the same function (tests/test_sampling.py checks the logits are equal) at a
    fraction of the cost. On a GPU, or without bitsandbytes, nothing changes.
    """
    swapped = swap_4bit_linears(model) if next(model.parameters()).device.type == "cpu" else []
    try:
        yield model
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)
