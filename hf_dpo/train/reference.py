"""The reference policy π_ref of a run, and the one place that decides what it is:

    LoRA, no ref_model          the policy with its adapters off: no second model; a PeftModel passed with a
                                trained adapter (TRL's "pretrained adapter") keeps a frozen copy of it instead
    ref_model given             that model, frozen (LoRA or full fine-tuning; e.g. an SFT checkpoint)
    full, precomputed           the policy itself, before its first step: the reference log-probs of every dataset
                                the trainer holds are computed once then (and cached on disk), no second model is held
    full, otherwise             a frozen copy of the policy, made at construction (one more copy of the weights)

TR-DPO (`sync_ref_model`, arXiv 2404.09656) moves a reference model towards the policy every
`ref_model_sync_steps` optimizer steps: π_ref <- α·π_θ + (1 - α)·π_ref, weight by weight (α =
`ref_model_mixup_alpha`), as TRL's `SyncRefModelCallback` does. A LoRA policy mixes its merged weights
(base + adapter) into a ref_model; without one, its reference (the base, adapters off) is no model that could move.
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import TrainerCallback

from hf_dpo.config import DPOConfig
from hf_dpo.model.reference import REFERENCE_ADAPTER
from hf_dpo.model.unwrap import base_model, is_peft, peft_model
from hf_dpo.train.setup import TrainerSetupError, disable_dropout, is_quantized

logger = logging.getLogger(__name__)

ALL_AHEAD = "all ahead"  # precompute_setting: every dataset's reference log-probs before the first step


def precompute_setting(policy, ref_model, args: DPOConfig, train_dataset) -> bool | str:
    """When the reference log-probs are computed: `args.precompute_ref_log_probs` (True, False, auto), or ALL_AHEAD
    for full fine-tuning without a ref_model, whose reference (the untrained policy) exists only before the first
    step. `auto` becomes ALL_AHEAD there (no second model is held) unless the training data streams; TR-DPO's
    moving reference turns `auto` off."""
    import datasets

    setting = args.precompute_ref_log_probs
    if args.sync_ref_model:
        if setting == "auto":
            logger.info("Reference log-probs computed at each step: sync_ref_model moves the reference.")
            return False
        return setting
    if is_peft(policy) or ref_model is not None:
        return setting
    if setting is True or (setting == "auto" and not isinstance(train_dataset, datasets.IterableDataset)):
        logger.info(
            "Full fine-tuning: the reference log-probs of every dataset are computed once, before the first step "
            "(precompute_ref_log_probs: %s), so no second copy of the model is held.",
            setting,
        )
        return ALL_AHEAD
    return setting


def reference_model(policy, ref_model, args: DPOConfig, precompute_everything: bool):
    """The reference as a model (frozen, eval mode, dropout off as the policy's), or None where there is none to
    hold: LoRA without a ref_model (adapters off), or full fine-tuning whose reference log-probs are all computed
    before the first step (`precompute_everything`)."""
    if ref_model is not None:
        if ref_model is policy:
            raise TrainerSetupError(
                "`model` and `ref_model` cannot be the same object. In most cases you should omit `ref_model`: "
                "the reference is then the model before training (LoRA: its adapters off)."
            )
        return frozen(ref_model, args)
    if is_peft(policy) or precompute_everything:
        return None
    logger.info(
        "Full fine-tuning: the reference is a frozen copy of the model (%.2f GB more). "
        "precompute_ref_log_probs: true computes its log-probs once before training and holds no copy.",
        parameter_bytes(policy) / 2**30,
    )
    return frozen(copy.deepcopy(base_model(policy)), args)


def keep_starting_adapter(model) -> bool:
    """A PeftModel given with an adapter that already changes the model (a lora_B not zero: trained, or custom
    initialised) and no ref_model: its reference is that adapter as it starts (TRL's meaning), kept as a frozen
    copy, the adapter `reference` that `reference_context` switches to. A fresh adapter (every lora_B zero) adds
    nothing: the adapters off are the same reference, with nothing to keep. Returns whether a copy was made."""
    inner = peft_model(model)
    active = inner.active_adapter
    if REFERENCE_ADAPTER in inner.peft_config or not isinstance(active, str):
        return False
    lora_b = [p for name, p in inner.named_parameters() if f"lora_B.{active}." in name]
    if not any(bool(p.detach().any()) for p in lora_b):
        return False
    inner.add_adapter(REFERENCE_ADAPTER, inner.peft_config[active])
    inner.set_adapter(active)  # the policy trains its own adapter; the copy is frozen
    with torch.no_grad():
        for name, param in inner.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name:
                param.copy_(inner.get_parameter(name.replace(f".{REFERENCE_ADAPTER}.", f".{active}.")))
                param.requires_grad_(False)
    logger.info(
        "The reference is the model's adapter '%s' as it starts (a frozen copy, as TRL keeps).", active
    )
    return True


def frozen(model, args: DPOConfig):
    model.eval()
    model.requires_grad_(False)
    if args.disable_dropout:
        disable_dropout(model)
    return model


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def check_sync(policy, ref_model, args: DPOConfig) -> None:
    """TR-DPO needs a reference model to move (given, or the copy full fine-tuning makes), with the policy's weights
    (names and shapes), and a reference whose log-probs are not computed once ahead (TRL's two errors)."""
    if not args.sync_ref_model:
        return
    if ref_model is None and is_peft(policy):
        raise NotImplementedError(
            "You passed `sync_ref_model=True` with a LoRA (PEFT) model and no `ref_model`: the reference is the "
            "base with the adapters off, no model that could be synchronized. Pass `ref_model=` (e.g. the base "
            "model loaded once more) for its weights to follow the policy, set `sync_ref_model=False`, or fine-tune "
            "the whole model (no peft_config)."
        )
    if args.precompute_ref_log_probs is True:
        raise TrainerSetupError(
            "You cannot use `sync_ref_model=True` together with `precompute_ref_log_probs=True`. "
            "`precompute_ref_log_probs=True` assumes a fixed reference model, but with `sync_ref_model=True` the "
            "reference model is periodically updated during training, making any precomputed reference log-probs "
            "stale. Set `precompute_ref_log_probs=False` or disable `sync_ref_model`."
        )
    if ref_model is None:
        return  # full fine-tuning: the reference will be a copy of the policy
    if is_quantized(ref_model) or (is_peft(policy) and is_quantized(policy)):
        raise TrainerSetupError(
            "sync_ref_model mixes the policy's weights into the reference's, and 4-bit / 8-bit weights cannot be "
            "mixed: load the base and the ref_model in float32/bfloat16/float16, or set sync_ref_model=False."
        )
    ours = {name: tuple(p.shape) for name, p in policy_weights(policy)}
    theirs = {name: tuple(p.shape) for name, p in base_model(ref_model).named_parameters()}
    if ours != theirs:
        differ = sorted(set(ours.items()) ^ set(theirs.items()))[:3]
        raise TrainerSetupError(
            "sync_ref_model mixes the policy's weights into ref_model's, but their weights differ in names or "
            f"shapes (e.g. {differ}): pass a ref_model of the policy's architecture and size."
        )


def policy_weights(policy):
    """(name, weight) of every weight the policy computes with, under its base model's names: a LoRA layer's
    merged weight (base + scale·B·A, no grad) for a peft policy, the parameters themselves otherwise."""
    inner = peft_model(policy)
    if not is_peft(inner):
        yield from base_model(inner).named_parameters()
        return
    adapter = inner.active_adapter
    modules = dict(base_model(inner).named_modules())
    for name, param in base_model(inner).named_parameters():
        if "lora_" in name:
            continue
        module_name, _, leaf = name.rpartition(".")
        if module_name.endswith(".base_layer"):  # the frozen weight a LoRA layer wraps
            lora_layer = modules[module_name.removesuffix(".base_layer")]
            if leaf == "weight" and adapter in getattr(lora_layer, "lora_A", {}):
                with torch.no_grad():
                    param = param + lora_layer.get_delta_weight(adapter).to(param.dtype)
            name = f"{module_name.removesuffix('.base_layer')}.{leaf}"
        yield name, param


@torch.no_grad()
def mix_into_reference(policy, ref_model, alpha: float) -> None:
    """π_ref <- α·π_θ + (1 - α)·π_ref, every weight (TR-DPO's soft update)."""
    reference = dict(base_model(ref_model).named_parameters())
    for name, weight in policy_weights(policy):
        target = reference[name]
        target.mul_(1.0 - alpha).add_(weight.detach().to(target.device, target.dtype), alpha=alpha)


class SyncReferenceCallback(TrainerCallback):
    """TR-DPO: after every `ref_model_sync_steps`-th optimizer step, the reference moves towards the policy."""

    def __init__(self, ref_model, accelerator):
        self.ref_model, self.accelerator = ref_model, accelerator

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % args.ref_model_sync_steps == 0:
            mix_into_reference(
                self.accelerator.unwrap_model(model), self.ref_model, args.ref_model_mixup_alpha
            )
