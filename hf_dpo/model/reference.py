"""The reference policy of a LoRA policy, in one place. No second model is loaded for it: the reference is the
policy's network with the LoRA adapters switched off (`reference_context`), or, when training continues from an
existing adapter, a frozen copy of that adapter named "reference" (`with_adapter(..., reference=...)`). (What the
reference of a training run is, a ref_model or full fine-tuning's included, `hf_dpo.train.reference` decides.) Here too: the one
way a base model gets an adapter from disk (a starting adapter, a trained run, an SFT adapter to sample from,
an adapter to merge), and the dequantized 4-bit weights that generation on CPU computes with.

    with reference_context(model):            # the reference's forward passes
        ref_logps = ...
    model = with_adapter(base, run_dir, reference=recipe.model.adapter_name_or_path)   # a trained run

    plan = decoding_plan(model)               # a dense copy or the model as loaded, in which dtype (logged)
    policy = dense_copy(model, plan.dtype)    # a plain transformers model: 4-bit dequantized, the LoRA folded in
    with reference_context(model):
        reference = dense_copy(model, plan.dtype)   # the same weights without the adapter

A decoding step reads every weight once. On a 4-bit base with LoRA adapters each step would dequantize every NF4
weight again and run two small LoRA matmuls per adapted layer; `dense_copy` does both once and gives a plain
model of the same architecture, in the dtype asked for, that `generate` and the report's decoder run.
`decoding_plan` says whether that copy fits beside what is already in memory (else the 4-bit model decodes,
dequantizing per step: a 7B model on a 24 GB card) and in which dtype to decode: bf16 on a CPU with native bf16
(its matmuls run at ~3-4x fp32's rate there; `hf-dpo bench --generation` measures what decoding gains, less:
a decoding step is also attention and elementwise work) or on a GPU that has it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from dataclasses import dataclass

import torch

from hf_dpo.model import unwrap
from hf_dpo.model.errors import ModelLoadError
from hf_dpo.model.memory import DENSE_SHARE_OF_FREE_MEMORY

logger = logging.getLogger(__name__)

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


def float_weight(layer) -> torch.Tensor:
    """The float weight a layer computes with: a bitsandbytes 4-bit weight dequantized exactly as its forward
    does (in its compute dtype), any other layer's weight as it is."""
    if not _is_4bit_param(layer.weight):
        return layer.weight.data
    import bitsandbytes as bnb

    data, state = layer.weight.data, layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # repacked by an eval-mode CPU forward
        data, state = bnb.functional._convert_weight_packed_for_cpu_inverse(data, state)
    return bnb.functional.dequantize_4bit(data, state).to(layer.compute_dtype or torch.float32)


def float_linear_of_4bit(child):
    """A torch Linear with exactly the weights a bitsandbytes Linear4bit computes with (dequantized once)."""
    weight = float_weight(child)
    linear = torch.nn.Linear(  # on the meta device: no weights allocated and initialised only to be replaced
        child.in_features, child.out_features, bias=child.bias is not None, dtype=weight.dtype, device="meta"
    )
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if child.bias is not None:
        linear.bias = torch.nn.Parameter(child.bias.data.to(weight.dtype), requires_grad=False)
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


def dequantized_fit(model, purpose: str = "the pass") -> tuple[bool, str | None]:
    """(whether `decoding_weights` should swap: a 4-bit model on CPU whose float weights take at most
    DENSE_SHARE_OF_FREE_MEMORY of the memory still free; why, to log (naming `purpose`), or None where there is
    nothing to swap)."""
    base = unwrap.base_model(model)
    param = next(base.parameters())
    if param.device.type != "cpu" or not any(_is_4bit_param(p) for p in base.parameters()):
        return False, None
    need, free = _dense_bytes(base, _compute_dtype(base)), free_memory_bytes(param.device)
    sizes = f"{need / 2**30:.2f} GiB of the {free / 2**30:.1f} GiB free"
    if need <= DENSE_SHARE_OF_FREE_MEMORY * free:
        return True, f"4-bit weights dequantized once for {purpose} ({sizes})"
    return False, f"4-bit weights dequantized at every forward: dequantized once they would take {sizes}"


@contextlib.contextmanager
def decoding_weights(model):
    """On CPU, the 4-bit base layers dequantized once for the duration (LoRA layers untouched), then put back.

    bitsandbytes' CPU path dequantizes every weight at every forward; a decoding loop makes hundreds of
    forwards, so this is the same function (tests/pairs/test_sampling.py checks the logits are equal) at a
    fraction of the cost. On a GPU, or without bitsandbytes, nothing changes.
    """
    swapped = swap_4bit_linears(model) if next(model.parameters()).device.type == "cpu" else []
    try:
        yield model
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)


# ---------------------------------------------------------------- a dense copy to decode from


@dataclass(frozen=True)
class DecodingPlan:
    """dense: decode from a dense copy (else from the model as it is); dtype: the dense copy's dtype."""

    dense: bool
    dtype: torch.dtype
    reason: str


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): ~4x the fp32 matmul rate there; without
    it bf16 is emulated and slower than fp32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def decoding_dtype(device: torch.device, compute_dtype: torch.dtype) -> torch.dtype:
    """bf16 on a CPU with native bf16 (decoding there is faster than in fp32; `hf-dpo bench --generation`) and
    on a GPU that has it; otherwise the model's compute dtype."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else compute_dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return compute_dtype


def free_memory_bytes(device: torch.device) -> int:
    """Memory still free on `device`: CUDA's free bytes, or the system's MemAvailable on CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def decoding_plan(model, dtype: torch.dtype | None = None) -> DecodingPlan:
    """Dense copy or the model as it is, and the dtype; logged. `dtype` None: `decoding_dtype`'s choice."""
    base = unwrap.base_model(model)
    param = next(base.parameters())
    device = param.device
    compute_dtype = _compute_dtype(base)
    dtype = dtype or decoding_dtype(device, compute_dtype)
    if not _foldable(model):
        plan = DecodingPlan(
            False, compute_dtype, "its adapters cannot be folded into the weights (DoRA or a variant)"
        )
    else:
        need = _dense_bytes(base, dtype)
        free = free_memory_bytes(device)
        if need <= DENSE_SHARE_OF_FREE_MEMORY * free:
            plan = DecodingPlan(
                True, dtype, f"a dense copy takes {need / 2**30:.2f} GiB of {free / 2**30:.1f} GiB free"
            )
        else:
            plan = DecodingPlan(
                False,
                compute_dtype,
                f"a dense copy would take {need / 2**30:.2f} GiB, more than half of the {free / 2**30:.1f} GiB free",
            )
    logger.info(
        "Decoding from %s in %s: %s.",
        "dense weights (any 4-bit weight dequantized once, any active adapter folded in)"
        if plan.dense
        else "the model as loaded",
        str(plan.dtype).replace("torch.", ""),
        plan.reason,
    )
    return plan


def _compute_dtype(base) -> torch.dtype:
    """The dtype the model computes in: a 4-bit layer's compute dtype, else its first float weight's."""
    for module in base.modules():
        compute = getattr(module, "compute_dtype", None)
        if isinstance(compute, torch.dtype):
            return compute
    return next(p.dtype for p in base.parameters() if p.is_floating_point())


def _dense_bytes(base, dtype: torch.dtype) -> int:
    """Bytes of a dense copy of `base` in `dtype` (a 4-bit weight stores half a byte per parameter)."""
    numel = 0
    for module in base.modules():
        for param in module.parameters(recurse=False):
            numel += param.numel() * (2 if _is_4bit_param(param) else 1)
    return numel * torch.finfo(dtype).bits // 8


def _is_4bit_param(param) -> bool:
    return getattr(param, "quant_state", None) is not None


def _foldable(model) -> bool:
    """Whether every active adapter is plain LoRA, whose update is B·A·scale added to the weight."""
    from peft.tuners.lora import LoraLayer

    for module in unwrap.base_model(model).modules():
        if isinstance(module, LoraLayer):
            if any(module.use_dora.get(name, False) for name in module.active_adapters):
                return False
            if getattr(module, "lora_variant", {}) and any(
                n in module.lora_variant for n in module.active_adapters
            ):
                return False
    return True


def _active_weight(source) -> torch.Tensor:
    """The weight `source` (a plain layer, or a LoRA layer around one) computes with now: the base weight plus
    each active adapter's B·A·scale, unless the adapters are disabled."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(source, LoraLayer):
        return float_weight(source)
    weight = float_weight(source.get_base_layer())
    if source.disable_adapters:
        return weight
    delta = [source.get_delta_weight(name) for name in source.active_adapters if name in source.lora_A]
    if not delta:
        return weight
    # summed in float32: a bf16 base would otherwise round the small update away before the cast
    return (weight.float() + sum(d.float() for d in delta)).to(weight.dtype)


def _active_module(source):
    """The module whose parameters count: a LoRA layer's base layer, a modules_to_save wrapper's active copy."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    if isinstance(source, ModulesToSaveWrapper):
        return source.active_module if not source.disable_adapters else source.original_module
    if isinstance(source, LoraLayer):
        return source.get_base_layer()
    return source


@torch.no_grad()
def dense_copy(model, dtype: torch.dtype):
    """A plain transformers model of `model`'s architecture that computes what `model` computes now, in `dtype`:
    4-bit weights dequantized, the active adapters folded in (none inside `reference_context` without a
    reference adapter), in eval mode, with the KV cache on. `model` is not changed."""
    from transformers import AutoModelForCausalLM

    base = unwrap.base_model(model)
    device = next(base.parameters()).device
    config = copy.deepcopy(base.config)
    config.__dict__.pop("quantization_config", None)
    config.use_cache = True
    attention = base.config._attn_implementation
    if attention not in ("eager", "sdpa") and not str(attention).startswith("flash_attention"):
        # training's own attention (a FlexAttention block mask for prefix sharing, a Hub kernel) serves training
        # batches; one query row per step over a KV cache is what SDPA's kernels are built for
        attention = "sdpa"
    with torch.device("meta"):
        dense = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    output, inputs = dense.get_output_embeddings(), dense.get_input_embeddings()
    tied = output is not None and output.weight is inputs.weight
    # to_empty gives every module its own tensors: a tied head is filled on its own (from the source's head,
    # which may carry LoRA or be a trained copy) and tied again below when it equals the embeddings
    dense.to_empty(device=device)
    for name, module in dense.named_modules():
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if not own:
            continue
        source = base.get_submodule(name)
        for key, tensor in own:
            value = _active_weight(source) if key == "weight" else getattr(_active_module(source), key)
            tensor.data.copy_(value.data if isinstance(value, torch.nn.Parameter) else value)
    if tied and torch.equal(output.weight, inputs.weight):
        output.weight = inputs.weight
    dense.requires_grad_(False)
    dense.generation_config = copy.deepcopy(base.generation_config)
    return dense.eval()
