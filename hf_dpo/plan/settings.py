"""The knobs of a recipe that change its peak memory (`Settings`, read by `settings_from_recipe`), and the longest
row of its training data when that can be measured locally (`data_row_length`). `hf_dpo.plan.estimate` sums
the memory of these settings; `hf_dpo.plan.fit` varies them to find one that fits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hf_dpo.config import Recipe
from hf_dpo.errors import HfDpoError
from hf_dpo.plan.arch import PlanError

logger = logging.getLogger(__name__)

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Settings:
    """The knobs of a recipe that change peak memory; `plan` varies these to find a setting that fits."""

    device: str  # "cuda" or "cpu"
    batch_size: int  # pairs per device per step
    max_length: int
    max_prompt_length: int
    gradient_checkpointing: bool
    lora_r: int
    lora_targets: tuple[str, ...]
    lora_dropout: float
    quantization: str  # 4bit, 8bit, none
    double_quant: bool
    compute_bytes: int  # 2 (bf16/fp16) or 4 (float32)
    autocast: bool  # matmuls run in half precision under autocast (bf16/fp16 training on GPU)
    optimizer_state_bytes: int  # per trainable param: 8 for AdamW, 2 for 8-bit AdamW, 0 for SGD
    eager_attention: bool = False
    prefix_sharing: bool = False
    logps_chunk_size: int | None = None
    gradient_accumulation_steps: int = 1
    data_row_length: int | None = None  # longest batch row measured on the recipe's data (None: worst case)
    # gradient_checkpointing_kwargs every_n_layers: checkpoint every n-th decoder layer only
    checkpoint_every: int = 1
    float32_embeddings: bool = False  # k-bit: embeddings and lm_head left in peft's float32 upcast
    sharing_attention: str = "auto"  # prefix_sharing_attention: on CUDA auto means a FlexAttention block mask
    uncut: bool = (
        False  # max_length: null: no pair is cut, and max_length is only the length planned without data
    )
    full_finetune: bool = False  # use_peft: false: every weight trains, no LoRA adapter
    # a full fine-tune holds a frozen copy of the model as its reference (its log-probs not precomputed)
    reference_copy: bool = False
    # ref_model_name_or_path: a reference model held beside the policy (planned with the policy's architecture)
    ref_model: bool = False
    # CPU, 4-bit: training holds the decoder linears dequantized once, beside the 4-bit ones, where they fit
    # (`hf_dpo.plan.estimate.dense_copy_fits`, as `hf_dpo.model.reference.dequantized_fit` decides at run time)
    dense_base: bool = False

    @property
    def quantized(self) -> bool:
        return self.quantization in ("4bit", "8bit")

    @property
    def row_length(self) -> int:
        """Width of a [prompt, answer] row (batches pad to their longest): the longest pair in the data when
        known (uncut by max_length: null, however long), else max_length."""
        if not self.data_row_length:
            return self.max_length
        return self.data_row_length if self.uncut else min(self.data_row_length, self.max_length)

    @property
    def tokens(self) -> int:
        """Token positions in one forward pass, planned as chosen + rejected rows (2B rows). Prefix sharing
        packs a pair into one shorter row when the attention kernel takes its 4D mask, but the trainer checks
        that at run time and falls back to these rows when it does not, so the plan does not count on it."""
        return 2 * self.batch_size * self.row_length


def _targets(targets: list[str] | str) -> tuple[str, ...]:
    names = [targets] if isinstance(targets, str) else list(targets)
    if "all-linear" in names:
        return LINEAR_NAMES
    unknown = [n for n in names if n not in LINEAR_NAMES]
    if unknown:
        logger.warning("plan: LoRA targets %s are not Llama-style linears; counted as none.", unknown)
    return tuple(n for n in LINEAR_NAMES if n in names)


def settings_from_recipe(recipe: Recipe, device: str = "cuda") -> Settings:
    m, t = recipe.model, recipe.training
    if device == "cuda":
        compute = {"float32": 4}.get(m.torch_dtype, 2)
        autocast = compute == 2
    else:  # CPU: float32 unless the recipe forces a half dtype (slow on CPUs without bf16)
        compute = {"bfloat16": 2, "float16": 2}.get(m.torch_dtype, 4)
        autocast = bool(t.bf16 or t.fp16)
    optim = t.optim.value if isinstance(t.optim, Enum) else t.optim  # TrainingArguments makes it an enum
    return Settings(
        device=device,
        batch_size=t.per_device_train_batch_size,
        max_length=t.max_length or 1024,
        max_prompt_length=min(t.max_prompt_length or 0, t.max_length or 1024),
        uncut=t.max_length is None,
        gradient_checkpointing=bool(t.gradient_checkpointing),
        lora_r=m.lora_r,
        lora_targets=_targets(m.lora_target_modules),
        lora_dropout=m.lora_dropout,
        quantization=m.quantization if m.quantization in ("4bit", "8bit") else "none",
        double_quant=m.bnb_4bit_use_double_quant,
        compute_bytes=compute,
        autocast=autocast,
        optimizer_state_bytes=2 if "8bit" in optim else 0 if optim.startswith("sgd") else 8,
        eager_attention=m.attn_implementation == "eager",
        prefix_sharing=bool(t.prefix_sharing),
        logps_chunk_size=t.logps_chunk_size or None,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        checkpoint_every=max(1, int((t.gradient_checkpointing_kwargs or {}).get("every_n_layers", 1))),
        float32_embeddings=m.float32_embeddings,
        sharing_attention=t.prefix_sharing_attention,
        full_finetune=not m.use_peft,
        # TR-DPO's moving reference is never precomputed: the trainer keeps the copy then
        reference_copy=t.precompute_ref_log_probs is False or bool(t.sync_ref_model),
        ref_model=bool(m.ref_model_name_or_path),
    )


def data_row_length(recipe: Recipe) -> int | None:
    """The longest batch row of the recipe's training pairs, when its dataset and tokenizer are local files
    (tokenizes the data as training would); None when either would need the Hub."""
    from hf_dpo.model.loading import MODEL_ALIASES

    model, data = recipe.model.model_name_or_path, recipe.data.dataset_name
    if not data or not Path(data).exists():
        return None
    if model.lower() not in MODEL_ALIASES and not Path(model).is_dir():
        return None
    from hf_dpo.data import load_preference_dataset
    from hf_dpo.model.loading import load_tokenizer
    from hf_dpo.train.batching import pair_lengths

    try:
        tokenizer = load_tokenizer(recipe.model)
    except HfDpoError as err:  # the loader names what the directory lacks; the key is the recipe's
        raise PlanError(f"key 'model_name_or_path': {err}") from None
    except (OSError, ValueError) as err:  # a model directory without tokenizer files, or broken ones
        reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
        raise PlanError(
            f"key 'model_name_or_path': its tokenizer cannot be loaded to measure the data's rows ({reason}). "
            "Give a model directory with its tokenizer files, or a Hub id."
        ) from None
    train = load_preference_dataset(recipe.data, tokenizer, recipe.training).train
    return max(pair_lengths(train, prefix_sharing=False))
