"""What the bench runs: each line is one trainer (TRL or hf_dpo) with its options, in one memory regime.

A regime is a checkpointing setting applied to both sides alike, so each hf_dpo line is compared with the
TRL lines of its own regime: TRL as is and TRL with a precomputed reference (`trl_precompute`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_dpo.errors import HfDpoError, shortened


class BenchError(HfDpoError, ValueError):
    """A bench that cannot run as asked: TRL missing, an unknown line or data set, too few pairs."""


NO_CHECKPOINTING = "no checkpointing"
CHECKPOINTING = "checkpointing every layer"  # TRL's default
REGIMES = (NO_CHECKPOINTING, CHECKPOINTING)

# hf_dpo with every speed switch on (DPOConfig keys).
HF_ALL = {
    "prefix_sharing": True,
    "logps_chunk_size": 256,
    "precompute_ref_log_probs": True,
    "train_sampling_strategy": "group_by_length",
}
# A bench-only option for TRL lines: the allocator setting hf_dpo applies on CPU (return_freed_memory), applied
# to TRL's process too, so that line shows how much of the memory gap is the allocator and how much the method.
SAME_ALLOCATOR = "_return_freed_memory"


def checkpointing(every_n_layers: int = 1) -> dict:
    return {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False, "every_n_layers": every_n_layers},
    }


REGIME_OPTIONS = {NO_CHECKPOINTING: {"gradient_checkpointing": False}, CHECKPOINTING: checkpointing(1)}


@dataclass(frozen=True)
class Line:
    impl: str  # "trl" or "hf_dpo"
    regime: str
    options: dict = field(default_factory=dict)
    baseline: str | None = (
        None  # "trl" or "trl_precompute": what the other lines of the regime are divided by
    )
    warm_cache_of: str | None = None  # an hf_dpo line whose reference cache this one reads (run after it)

    def trainer_options(self) -> dict:
        """The trainer's options: the regime's checkpointing setting unless the line sets its own."""
        if "gradient_checkpointing" in self.options:
            return dict(self.options)
        return {**REGIME_OPTIONS[self.regime], **self.options}


TRL_PRE = {"precompute_ref_log_probs": True}
LINES = {
    "trl": Line("trl", NO_CHECKPOINTING, baseline="trl"),
    "trl_precompute": Line("trl", NO_CHECKPOINTING, TRL_PRE, baseline="trl_precompute"),
    "hf_dpo": Line("hf_dpo", NO_CHECKPOINTING, HF_ALL),
    "hf_dpo_warm_cache": Line("hf_dpo", NO_CHECKPOINTING, HF_ALL, warm_cache_of="hf_dpo"),
    "trl_ckpt": Line("trl", CHECKPOINTING, baseline="trl"),
    "trl_precompute_ckpt": Line("trl", CHECKPOINTING, TRL_PRE, baseline="trl_precompute"),
    "hf_dpo_ckpt": Line("hf_dpo", CHECKPOINTING, HF_ALL),
    "hf_dpo_ckpt_warm_cache": Line("hf_dpo", CHECKPOINTING, HF_ALL, warm_cache_of="hf_dpo_ckpt"),
    # On request (--lines): hf_dpo with one switch off, selective checkpointing, allocator settings.
    "hf_dpo_ckpt_every_2": Line("hf_dpo", CHECKPOINTING, {**HF_ALL, **checkpointing(2)}),
    "hf_dpo_no_prefix_sharing": Line("hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "prefix_sharing": False}),
    "hf_dpo_no_ref_cache": Line("hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "precompute_ref_log_probs": False}),
    "hf_dpo_no_chunking": Line("hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "logps_chunk_size": 0}),
    "hf_dpo_no_length_grouping": Line(
        "hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "train_sampling_strategy": "random"}
    ),
    "hf_dpo_return_freed_memory": Line("hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "return_freed_memory": True}),
    # bf16 autocast on CPU (matmuls in bf16, the 4-bit layers' compute dtype float32): what bf16 compute gains
    # for training and for the reference pass, and how far its log-probs move (loss@1, logps@1 beside hf_dpo's)
    "hf_dpo_bf16": Line("hf_dpo", NO_CHECKPOINTING, {**HF_ALL, "bf16": True}),
    "trl_same_allocator": Line("trl", NO_CHECKPOINTING, {SAME_ALLOCATOR: True}),
}
DEFAULT_LINES = [
    "trl",
    "trl_precompute",
    "hf_dpo",
    "hf_dpo_warm_cache",
    "trl_ckpt",
    "trl_precompute_ckpt",
    "hf_dpo_ckpt",
    "hf_dpo_ckpt_warm_cache",
]
QUICK_LINES = ["trl", "trl_precompute", "hf_dpo", "hf_dpo_warm_cache"]

# The targets hf_dpo is held to, end to end (issue 15): wall time of TRL over hf_dpo's (>= 2x), of TRL with a
# precomputed reference over hf_dpo's (>= 1.4x), and hf_dpo's peak memory over TRL's (<= 1x), same regime.
TARGETS = {"speed_vs_trl": 2.0, "speed_vs_trl_precompute": 1.4, "memory_vs_trl": 1.0}


def check_lines(names: list[str]) -> list[str]:
    """`names` in run order (a warm-cache line after the line that fills its cache); BenchError on unknown."""
    unknown = [n for n in names if n not in LINES]
    if unknown:
        raise BenchError(
            f"unknown bench line(s) {shortened(', '.join(unknown), 200)}; choose from {', '.join(LINES)}"
        )
    missing = [n for n in names if LINES[n].warm_cache_of and LINES[n].warm_cache_of not in names]
    if missing:
        raise BenchError(
            f"{', '.join(missing)} read(s) the cache of a line not in the run: add "
            + ", ".join(sorted({LINES[n].warm_cache_of for n in missing}))
        )
    cold = [n for n in names if not LINES[n].warm_cache_of]
    return cold + [n for n in names if LINES[n].warm_cache_of]
