"""`DPOKeys`: the DPO objective's keys and its data limits (TRL's DPOConfig keys and hf_dpo's), each with the
help text `hf-dpo keys` prints and its range. A plain dataclass, so they are known without importing
transformers; `hf_dpo.config.dpo.DPOConfig` adds them to `transformers.TrainingArguments`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_dpo.config.dpo_checks import LOSS_TYPES
from hf_dpo.validate import BATCH, PROCESSES, STEPS, TOKENS, Range, up_to


@dataclass
class DPOKeys:
    """The DPO objective and its data limits (names as in TRL), and TRL's overrides of TrainingArguments'
    defaults."""

    # TRL 1.16's DPOConfig overrides these TrainingArguments defaults; a TRL script that leaves them unset must train
    # and log the same here (transformers' own defaults: 5e-5, 500).
    learning_rate: float = field(
        default=1e-6,
        metadata={
            "range": Range(0),
            "help": "Initial learning rate of AdamW (TRL's DPO default 1e-6, not transformers' 5e-5).",
        },
    )
    # TRL turns these two on by default; None resolves to TRL's value where the hardware allows (a GPU; bf16 where
    # it has bf16), else off, and the difference is logged once (`resolve_trl_defaults`)
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Recompute activations in the backward instead of keeping them: less memory, about a fifth more "
            "compute. None: TRL's default (true) on a GPU; false on CPU, where memory is rarely the limit (logged)."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision. None: TRL's default (true unless fp16) on a GPU that has bf16; "
            "false on CPU, where bf16 autocast made DPO steps slower in this project's measurements (logged)."
        },
    )
    logging_steps: float = field(
        default=10,
        metadata={
            "range": up_to(0, STEPS, low_inclusive=False),
            "help": "Log every X update steps (TRL's default 10); a float in [0, 1) is a share of the total steps.",
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "range": Range(0, low_inclusive=False),
            "help": "DPO temperature: strength of the KL pull towards the reference. Lower: drift further.",
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
            "range": Range(0, 1, high_inclusive=False, hint=" (an assumed share of flipped labels)"),
            "help": "ε, the assumed share of flipped labels: robust (rDPO, must be < 0.5), exo_pair (EXO, must be "
            "> 0; the paper uses 1e-3), aot and aot_unpaired. The other losses ignore it, as in TRL.",
        },
    )
    ld_alpha: float | None = field(
        default=None,
        metadata={
            "range": Range(0, 1),
            "help": "LD-DPO α in [0, 1]: completion tokens beyond the shorter completion of a pair count α times in "
            "its log-probs (policy and reference). None (or 1.0): no down-weighting; 0.0: only the shared length.",
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
        default=0.05,
        metadata={
            "range": Range(0, low_inclusive=False),
            "help": "τ of the discopop loss (DiscoPOP paper default 0.05).",
        },
    )
    rpo_alpha: float | None = field(
        default=None,
        metadata={
            "range": Range(0),
            "help": "RPO: weight of an SFT (negative log-likelihood) term on chosen responses; an alias of "
            "loss_type [<loss>, sft] with loss_weights [1, rpo_alpha]. None: off.",
        },
    )
    max_length: int | None = field(
        default=1024,
        metadata={
            "range": up_to(1, TOKENS),
            "help": "Longest prompt+response in tokens (TRL's default); longer pairs are truncated and counted.",
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "range": up_to(1, TOKENS),
            "help": "Longest prompt in tokens when a pair exceeds max_length (the prompt keeps its end). None: the "
            "prompt is kept whole and the completions cut (TRL's keep_start).",
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
            "one_of": ("auto", "mask4d", "flex"),
            "help": "How the prefix-shared layout's mask reaches attention. auto: a FlexAttention block mask on "
            "CUDA when available (fused, skips masked blocks; an SDPA model keeps SDPA for everything else), "
            "a dense 4D mask otherwise (fastest on CPU). mask4d / flex: force one.",
        },
    )
    logps_chunk_size: int | None = field(
        default=256,
        metadata={
            "range": up_to(0, TOKENS),
            "help": "Tokens per chunk when computing log-probs through the LM head: only completion positions are "
            "projected, one chunk at a time, so (tokens x vocabulary) logits never exist for the whole batch. "
            "Higher: a little faster, more memory. 0 or null: off (full logits, as TRL).",
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
        default=None, metadata={"range": up_to(1, PROCESSES), "help": "Processes for dataset tokenization."}
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={
            "range": up_to(1, BATCH),
            "help": "Pairs per batch of the one-off reference pass (forward only, shortest pairs first). None: as "
            "many as make about 8192 tokens a batch (fewer with full logits of a large vocabulary; at most 64, never "
            "fewer than per_device_train_batch_size), logged.",
        },
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
            "help": "TR-DPO: every ref_model_sync_steps steps the reference moves towards the policy, weight by "
            "weight (π_ref <- α·π_θ + (1-α)·π_ref). Needs a reference model to move: full fine-tuning's copy, or a "
            "ref_model passed to DPOTrainer (a LoRA policy mixes in its merged weights); not with "
            "precompute_ref_log_probs: true."
        },
    )
    ref_model_mixup_alpha: float = field(
        default=0.6,
        metadata={
            "range": Range(0, 1),
            "help": "TR-DPO's α: the policy's share in each reference update (sync_ref_model).",
        },
    )
    ref_model_sync_steps: int = field(
        default=512,
        metadata={
            "range": up_to(1, STEPS),
            "help": "TR-DPO's τ: optimizer steps between reference updates (sync_ref_model).",
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that already holds a run (its adapter, run_info.json, or the "
            "checkpoints of one that stopped), writing over it. false: such a run is refused before any model "
            "loads, so a re-run never replaces one silently (resume_from_checkpoint continues one instead)."
        },
    )
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Mixture-of-Experts models: weight of the router's load-balancing loss added to the DPO loss. "
            "None: the model config's own coefficient; 0: off. An error on a model without a router."
        },
    )
