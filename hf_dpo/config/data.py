"""`DataConfig`: where the preference pairs come from and how their columns are named."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_dpo.config.errors import RecipeError
from hf_dpo.validate import PAIRS, Range, check_values, up_to


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
        metadata={
            "range": Range(
                0, 1, high_inclusive=False, hint=" (the share of the train split held out; 0: none)"
            ),
            "help": "Share of the train split held out for evaluation when there is no test split.",
        },
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
        metadata={
            "range": up_to(1, PAIRS),
            "help": "Train on N pairs drawn at random (seeded by data_seed or seed).",
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "range": up_to(1, PAIRS),
            "help": "Evaluate on N held-out pairs drawn at random (seeded by data_seed or seed).",
        },
    )
    on_bad_rows: str = field(
        default="error",
        metadata={
            "one_of": ("error", "skip"),
            "help": "error: stop at the first bad row, naming file, row and column. skip: drop bad rows, "
            "count and report them.",
        },
    )

    def __post_init__(self):
        check_values(self, RecipeError)
