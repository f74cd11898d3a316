"""Preference data: read any common shape, validate row by row, apply the chat template, tokenize.

Rows may be
- standard: `prompt`, `chosen`, `rejected` strings;
- conversational: `chosen`/`rejected` lists of `{"role", "content"}` messages, `prompt` a string or messages
  (chosen/rejected that are whole conversations, prompt turns included, UltraFeedback-style: the prompt once);
- implicit-prompt: no prompt column, the prompt is the whole turns chosen and rejected share (TRL's implicit-prompt
  conversations; Anthropic HH transcripts cut after their last `\n\nAssistant:`, as the original DPO code).
Column names are mapped from the recipe (`prompt_column`, ...). Bad rows raise `DataError` naming the
source, row and column, or with `on_bad_rows: skip` are dropped and counted in the data report.

One pipeline over the same row dicts, each module used by the next: `reading` (files, directories of splits,
save_to_disk, the Hub), `rows` (row checks), `templates` (the chat template), `dataset` (tokenizing, truncation,
the data report, `load_preference_dataset`). Batching lives in `hf_dpo.train.batching`.

    data = load_preference_dataset(recipe.data, tokenizer, recipe.training)
    data.train, data.eval, data.report
"""

from hf_dpo.data.errors import SKIP_HINT, DataError
from hf_dpo.data.reading import read_csv_text, read_data, read_splits
from hf_dpo.data.rows import (
    CHAT_ROLES,
    BadRow,
    check_columns,
    check_data,
    check_eval_strategy,
    normalize_row,
    not_text,
)
from hf_dpo.data.templates import (
    checked_prompt_token_ids,
    format_pair,
    format_prompt,
    prompt_token_ids,
    uses_chat_template,
)

# Imported when first asked for: `dataset` imports torch, which reading and checking the rows does without (a
# command names a data error before it imports the training stack).
_FROM_DATASET = {
    "TOKENIZED_COLUMNS",
    "DataReport",
    "PreferenceData",
    "_seeded_subset",
    "length_advice",
    "load_preference_dataset",
    "prepare_rows",
    "tokenize_dataset",
    "tokenize_pair",
    "truncate_pair",
}


def __getattr__(name: str):
    if name in _FROM_DATASET:
        from hf_dpo.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'hf_dpo.data' has no attribute {name!r}")


__all__ = [
    "BadRow",
    "CHAT_ROLES",
    "DataError",
    "DataReport",
    "PreferenceData",
    "SKIP_HINT",
    "TOKENIZED_COLUMNS",
    "_seeded_subset",
    "check_columns",
    "check_data",
    "check_eval_strategy",
    "format_pair",
    "format_prompt",
    "length_advice",
    "load_preference_dataset",
    "normalize_row",
    "not_text",
    "prepare_rows",
    "prompt_token_ids",
    "checked_prompt_token_ids",
    "read_csv_text",
    "read_data",
    "read_splits",
    "tokenize_dataset",
    "tokenize_pair",
    "truncate_pair",
    "uses_chat_template",
]
