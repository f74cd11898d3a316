"""`SamplingConfig`: step 1 of DPO (sampling completions from the reference policy and labelling them). The
judge that labels them and the held-out prompts it samples are the report's keys (`judge`, `test_prompts_file`
in `hf_dpo.config.report`): one judge and one held-out set serve both."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_dpo.config.errors import RecipeError
from hf_dpo.validate import BATCH, SAMPLES_PER_PROMPT, TOKENS, Range, check_values, up_to


@dataclass
class SamplingConfig:
    """Step 1 of DPO: sampling completions from the reference policy and labelling them."""

    prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Prompts to sample for: a .txt (one per line), .jsonl/.json/.csv/.parquet with a prompt column."
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
    num_samples_per_prompt: int = field(
        default=4,
        metadata={
            "range": up_to(
                2, SAMPLES_PER_PROMPT, hint=" (a preference pair needs two answers of the same prompt)"
            ),
            "help": "Completions sampled per prompt (K).",
        },
    )
    sampling_temperature: float = field(
        default=1.0,
        metadata={
            "range": Range(0, hint=" (0: greedy)"),
            "help": "Sampling temperature, above 0 (0 is greedy decoding: every answer of a prompt the same, no pair).",
        },
    )
    sampling_top_p: float = field(
        default=1.0,
        metadata={
            "range": Range(
                0, 1, low_inclusive=False, hint=" (the share of probability mass sampled from; 1: all of it)"
            ),
            "help": "Nucleus sampling top-p.",
        },
    )
    max_new_tokens: int = field(
        default=64, metadata={"range": up_to(1, TOKENS), "help": "Longest sampled completion, in tokens."}
    )
    sampling_batch_size: int = field(
        default=16, metadata={"range": up_to(1, BATCH), "help": "Prompts per generation batch."}
    )
    sampling_seed: int = field(
        default=0,
        metadata={
            "range": Range(0, 2**63 - 1),
            "help": "Seed for sampling; the same seed gives the same samples.",
        },
    )
    pairs_per_prompt: str = field(
        default="best_worst",
        metadata={
            "one_of": ("best_worst", "all"),
            "help": "best_worst: one pair per prompt (best vs worst completion). all: every two completions with "
            "different scores (more pairs from the same samples).",
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

    def __post_init__(self):
        check_values(self, RecipeError)
