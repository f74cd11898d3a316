"""Which attention carries the prefix-shared layout's mask, chosen by device and the kernels at hand:

    mask4d   a dense (B, 1, T, T) additive float mask through SDPA or eager attention: fastest on CPU, and the
             path every model that takes a 4D mask supports. On a GPU it keeps SDPA off its fused flash kernel.
    flex     a FlexAttention `BlockMask` (block-sparse, compiled; arXiv 2410.20305): attention stays fused on a
             GPU and whole blocks no query may see (chosen keys for rejected queries, padding) are skipped.

`prefix_sharing_attention: auto` picks flex on CUDA when FlexAttention is available and the model runs SDPA (or
already runs flex_attention), mask4d otherwise; `mask4d` / `flex` force one. An SDPA model is not switched to
flex wholesale: its attention becomes `SDPA_OR_FLEX`, which sends a batch carrying a `BlockMask` to FlexAttention
and everything else (plain batches, generation) to SDPA exactly as before.
"""

from __future__ import annotations

import logging

import torch

from hf_dpo.model.unwrap import base_model

logger = logging.getLogger(__name__)

MASK4D, FLEX = "mask4d", "flex"
SHARING_ATTENTION = ("auto", MASK4D, FLEX)
MASK_4D_ATTENTION = ("sdpa", "eager")  # attention kernels that take an arbitrary additive 4D mask
SDPA_OR_FLEX = "hf_dpo_sdpa_or_flex"  # a registered attention: FlexAttention for a BlockMask, else SDPA


def attention_implementation(model) -> str | None:
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
        from transformers.integrations.flex_attention import flex_attention_forward  # noqa: F401
    except ImportError:
        return False
    return True


def choose_sharing_attention(model, requested: str, device: str) -> tuple[str | None, str]:
    """(MASK4D, FLEX or None: the layout can't run on this model, the reason to log)."""
    impl = attention_implementation(model)
    takes_4d = impl is None or impl in (*MASK_4D_ATTENTION, SDPA_OR_FLEX)
    flex_model = impl in ("flex_attention", SDPA_OR_FLEX)
    can_flex = flex_available() and (flex_model or impl in (None, "sdpa"))
    if requested == FLEX:
        if can_flex:
            return FLEX, "prefix_sharing_attention: flex"
        why = (
            "FlexAttention is not available in this torch" if not flex_available() else f"attention '{impl}'"
        )
        return None, f"prefix_sharing_attention: flex, but {why} cannot run it (use sdpa or flex_attention)"
    if requested == MASK4D:
        if takes_4d:
            return MASK4D, "prefix_sharing_attention: mask4d"
        return None, f"attention '{impl}' takes no 4D mask (use sdpa or eager to enable it)"
    if impl == "flex_attention":
        return FLEX, "the model's attention is flex_attention"
    if device == "cuda" and can_flex:
        return FLEX, "on CUDA a FlexAttention block mask keeps attention fused and skips masked blocks"
    if takes_4d:
        why = "dense 4D mask: the fastest on CPU" if device != "cuda" else "FlexAttention is not available"
        return MASK4D, why
    return None, f"attention '{impl}' takes no 4D mask (use sdpa, eager or flex_attention to enable it)"


def sdpa_or_flex_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA, except for a batch whose mask is a FlexAttention `BlockMask` (the prefix-shared layout's)."""
    from torch.nn.attention.flex_attention import BlockMask
    from transformers.integrations.flex_attention import flex_attention_forward
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if isinstance(attention_mask, BlockMask):
        device = query.device.type
        if torch.is_autocast_enabled(device):
            # SDPA is on autocast's half-precision list, FlexAttention is not: without this cast it would run in
            # float32 (k-bit training's float32 norms make the queries float32) at twice SDPA's memory and time
            dtype = torch.get_autocast_dtype(device)
            query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
        return flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def enable_flex_for_block_masks(model) -> None:
    """Let an SDPA model take BlockMasks: register `SDPA_OR_FLEX` (with SDPA's mask builder, so 2D masks are
    built as before) and make it the model's attention."""
    if attention_implementation(model) in ("flex_attention", SDPA_OR_FLEX):
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SDPA_OR_FLEX, sdpa_or_flex_attention)
    AttentionMaskInterface.register(SDPA_OR_FLEX, sdpa_mask)
    base_model(model).set_attn_implementation(SDPA_OR_FLEX)
    if attention_implementation(base_model(model)) != SDPA_OR_FLEX:  # transformers only warns when it can't
        raise RuntimeError(f"{type(base_model(model)).__name__} cannot switch its attention implementation")


def sharing_attention(model, requested: str, device: str) -> str | None:
    """The attention the prefix-shared layout will use on `model` (logged with the reason), or None (logged as a
    warning): prefix sharing is off. Readies the model for a FlexAttention block mask when that is the choice."""
    choice, why = choose_sharing_attention(model, requested, device)
    if choice == FLEX:
        try:
            enable_flex_for_block_masks(model)
        except Exception as err:  # noqa: BLE001 - a model that can't switch attention keeps the dense mask
            fallback, _ = choose_sharing_attention(model, MASK4D, device)
            logger.warning(
                "Prefix sharing: FlexAttention unavailable on this model (%s: %s); %s.",
                type(err).__name__,
                err,
                "dense 4D mask instead" if fallback else "off",
            )
            return fallback
    if choice is None:
        logger.warning("Prefix sharing off: %s.", why)
    else:
        logger.info("Prefix sharing attention: %s (%s).", choice, why)
    return choice
