"""The tokenized dataset: normalised rows through the template and the tokenizer, truncated to max_length, into
`datasets.Dataset`s with a report of what happened to every row; `load_preference_dataset` is the whole pipeline
(read, check, template, tokenize) for a recipe's splits. Batching lives in `hf_dpo.train.batching`.

    data = load_preference_dataset(recipe.data, tokenizer, recipe.training)
    data.train, data.eval, data.report
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_dpo.config import DataConfig, DPOConfig
from hf_dpo.data.errors import DataError
from hf_dpo.data.reading import read_splits
from hf_dpo.data.rows import SHARED_TEXT, BadRow, check_columns, ends_inside_a_turn, normalize_row
from hf_dpo.data.templates import CHAT_TEMPLATE, RAW_TEXT, format_pair, uses_chat_template

logger = logging.getLogger(__name__)

TOKENIZED_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")


@dataclass
class DataReport:
    """What happened to the rows of one split: read, used, skipped (by reason), truncated."""

    source: str
    rows_read: int = 0
    pairs_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    prompt_truncated: int = 0
    completion_truncated: int = 0
    # How the used pairs' prompts were found ({method: pairs}, methods of PROMPT_METHODS), and how many of those
    # taken from the shared start of two texts stop inside a turn (`ends_inside_a_turn`).
    prompt_methods: Counter = field(default_factory=Counter)
    prompts_inside_a_turn: int = 0
    # How the used pairs reach the model ({CHAT_TEMPLATE or RAW_TEXT: pairs}): the card's usage example follows it.
    prompt_formats: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "pairs_used": self.pairs_used,
            "skipped": dict(self.skipped),
            "prompt_truncated": self.prompt_truncated,
            "completion_truncated": self.completion_truncated,
            "prompt_methods": dict(self.prompt_methods),
            "prompts_inside_a_turn": self.prompts_inside_a_turn,
            "prompt_formats": dict(self.prompt_formats),
        }

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "none"
        methods = ", ".join(f"{n} {how}" for how, n in self.prompt_methods.items()) or "none"
        return (
            f"{self.source}: {self.rows_read} rows -> {self.pairs_used} pairs; skipped: {skipped}; "
            f"truncated prompts: {self.prompt_truncated}, truncated completions: {self.completion_truncated}; "
            f"prompts: {methods}"
        )


@dataclass
class PreferenceData:
    train: Any  # datasets.Dataset with TOKENIZED_COLUMNS (+ prompt/chosen/rejected text)
    eval: Any | None
    report: dict[str, dict[str, Any]]
    # The tokenizer that made train and eval: the run trains with this one rather than loading it again.
    tokenizer: Any = None


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_pair(pair: dict, tokenizer, cfg: DataConfig) -> dict[str, list[int]]:
    """Token ids of prompt, chosen and rejected. The prompt+completion texts are tokenized whole and split
    where they diverge from the prompt, so no token is ever split across the boundary."""
    prompt_text, chosen_text, rejected_text = format_pair(pair, tokenizer, cfg)
    # A rendered chat template already holds its special tokens; plain text gets the tokenizer's own.
    special = not uses_chat_template(pair["prompt"], tokenizer, cfg, pair.get("implicit", False))
    prompt_ids = tokenizer(prompt_text, add_special_tokens=special)["input_ids"]
    chosen_full = tokenizer(chosen_text, add_special_tokens=special)["input_ids"]
    rejected_full = tokenizer(rejected_text, add_special_tokens=special)["input_ids"]
    n = min(_common_prefix_len(prompt_ids, chosen_full), _common_prefix_len(prompt_ids, rejected_full))
    return {
        "prompt_input_ids": prompt_ids[:n],
        "chosen_input_ids": chosen_full[n:],
        "rejected_input_ids": rejected_full[n:],
    }


def truncate_pair(
    ids: dict[str, list[int]], max_length: int | None, max_prompt_length: int | None, report: DataReport
):
    """Fit prompt+completion into max_length: first cut the prompt to max_prompt_length (keeping its end),
    then the completions (keeping their start). Returns None when nothing trainable is left (counted)."""
    prompt, chosen, rejected = ids["prompt_input_ids"], ids["chosen_input_ids"], ids["rejected_input_ids"]
    if max_length is None or len(prompt) + max(len(chosen), len(rejected)) <= max_length:
        return ids
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
        report.prompt_truncated += 1
    room = max_length - len(prompt)
    if room <= 0:
        report.skipped["prompt longer than max_length"] += 1
        return None
    if len(chosen) > room or len(rejected) > room:
        report.completion_truncated += 1
        chosen, rejected = chosen[:room], rejected[:room]
    if chosen == rejected:
        report.skipped["identical after truncation"] += 1
        return None
    return {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}


NO_PAIRS_HINT = (
    "If prompts are longer than max_length, raise max_length or set max_prompt_length to cut them "
    "(keeping their end)."
)


LENGTH_DROPS = ("prompt longer than max_length", "identical after truncation")


def length_advice(report: DataReport, max_length: int | None, max_prompt_length: int | None) -> str:
    """What to change when pairs were dropped for length: the keys, with the values they have now."""
    advice = []
    if report.skipped["prompt longer than max_length"]:
        advice.append(
            f"prompts over max_length ({max_length}) are dropped: raise max_length, or set max_prompt_length "
            f"below it (e.g. {max(1, (max_length or 2) // 2)}) to cut long prompts to their end"
        )
    if report.skipped["identical after truncation"]:
        room = f"max_length {max_length}" + (
            f", max_prompt_length {max_prompt_length}" if max_prompt_length else ""
        )
        lever = (
            "lower max_prompt_length" if max_prompt_length else "set max_prompt_length to cut long prompts"
        )
        advice.append(
            f"chosen and rejected are identical once cut to fit ({room}): raise max_length, or {lever} to leave "
            "the answers more room"
        )
    return "; ".join(advice) + "." if advice else NO_PAIRS_HINT


def _warn_length_drops(report: DataReport, max_length: int | None, max_prompt_length: int | None) -> None:
    """Pairs lost to truncation are never silent: a warning naming the keys (none left at all: an error)."""
    dropped = sum(report.skipped[why] for why in LENGTH_DROPS)
    if dropped and report.pairs_used:
        logger.warning(
            "%s: %d of %d pairs dropped for length; %s",
            report.source,
            dropped,
            report.rows_read,
            length_advice(report, max_length, max_prompt_length),
        )


def prepare_rows(
    rows: list[dict],
    source: str,
    tokenizer,
    data_cfg: DataConfig,
    max_length,
    max_prompt_length,
    row_numbers: list[int] | None = None,
) -> tuple[dict[str, list], DataReport]:
    """Validate, format and tokenize raw rows into columns; errors name `source`, the row and the column.
    `row_numbers`: each row's number in its file (rows may be a seeded subset of it); 0, 1, ... by default."""
    report = DataReport(source=source, rows_read=len(rows))
    columns: dict[str, list] = {k: [] for k in (*TOKENIZED_COLUMNS, "prompt", "chosen", "rejected")}
    check_columns(source, rows, data_cfg)
    numbers = row_numbers if row_numbers is not None else range(len(rows))
    for index, row in zip(numbers, rows):
        try:
            pair = normalize_row(row, data_cfg)
            ids = tokenize_pair(pair, tokenizer, data_cfg)  # a chat template refusing the row: a BadRow too
        except BadRow as bad:
            if data_cfg.on_bad_rows == "skip":
                report.skipped[bad.reason] += 1
                continue
            raise bad.error(source, index) from None
        except DataError as err:  # a problem of the whole dataset (no chat template), met at this row
            raise DataError(f"{source}, row {index}: {err}") from None
        ids = truncate_pair(ids, max_length, max_prompt_length, report)
        if ids is None:
            continue
        if not ids["chosen_input_ids"] or not ids["rejected_input_ids"]:
            report.skipped["no completion tokens"] += 1
            continue
        for key, value in ids.items():
            columns[key].append(value)
        for key in ("prompt", "chosen", "rejected"):
            value = pair[key]
            columns[key].append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        report.pairs_used += 1
        count_prompt_method(report, pair)
        templated = uses_chat_template(pair["prompt"], tokenizer, data_cfg, pair["implicit"])
        report.prompt_formats[CHAT_TEMPLATE if templated else RAW_TEXT] += 1
    _warn_length_drops(report, max_length, max_prompt_length)
    _warn_prompts_inside_a_turn(report)
    return columns, report


def count_prompt_method(report: DataReport, pair: dict) -> None:
    """Count how `pair`'s prompt was found, and whether a shared-start text prompt stops inside a turn."""
    report.prompt_methods[pair["prompt_method"]] += 1
    if pair["prompt_method"] == SHARED_TEXT and ends_inside_a_turn(pair["prompt"]):
        report.prompts_inside_a_turn += 1


def _warn_prompts_inside_a_turn(report: DataReport) -> None:
    """A prompt cut from the shared start of chosen and rejected that is no whole turn: the answers' common first
    words were taken as prompt (and never trained on). Warned with the count, never silent."""
    if report.prompts_inside_a_turn:
        logger.warning(
            "%s: %d of %d prompts were taken from the shared start of chosen and rejected and end inside a turn "
            "(not after an assistant header such as '\\n\\nAssistant:'): the answers' shared first words became "
            "prompt. Give a prompt column, or whole transcripts in the Anthropic HH format, so each prompt is whole "
            "turns (`hf-dpo data RECIPE` shows the rows).",
            report.source,
            report.prompts_inside_a_turn,
            report.pairs_used,
        )


def tokenize_dataset(dataset, tokenizer, data_cfg: DataConfig | None = None, args: DPOConfig | None = None):
    """A datasets.Dataset (or list of rows) with prompt/chosen/rejected -> tokenized Dataset (TRL-style input)."""
    import datasets

    data_cfg = data_cfg or DataConfig()
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if rows and all(c in rows[0] for c in TOKENIZED_COLUMNS):
        return dataset if hasattr(dataset, "column_names") else datasets.Dataset.from_list(rows)
    # no DPOConfig: no truncation
    max_length, max_prompt_length = (
        (args.max_length, args.max_prompt_length) if args is not None else (None, None)
    )
    columns, report = prepare_rows(
        rows,
        "dataset",
        tokenizer,
        data_cfg,
        max_length,
        max_prompt_length,
    )
    logger.info("%s", report.summary())
    if rows and report.pairs_used == 0:
        # Otherwise training starts on an empty dataset and fails deep in the reference pass.
        advice = length_advice(report, max_length, max_prompt_length)
        raise DataError(f"dataset: no usable pairs left of {len(rows)}: {report.summary()}. {advice}")
    return datasets.Dataset.from_dict(columns)


def _seeded_subset(rows: list, n: int | None, seed: int) -> list:
    """n rows drawn without replacement (seeded, file order kept): a slice representative of the whole file,
    which is often grouped (e.g. several pairs per prompt in a row)."""
    if n is None or n >= len(rows):
        return rows
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    return [rows[i] for i in sorted(order[:n])]


def load_preference_dataset(
    data_cfg: DataConfig, tokenizer, args: DPOConfig, splits: dict[str, tuple[str, list[dict]]] | None = None
) -> PreferenceData:
    """Read, validate and tokenize the train (and held-out) split of a recipe's dataset. `splits`: what
    `read_splits(data_cfg)` returned, when the caller has read the files already."""
    import datasets

    splits = splits if splits is not None else read_splits(data_cfg)
    report = {}
    built = {}
    for name, source, rows, numbers in split_parts(splits, data_cfg, args):
        columns, split_report = prepare_rows(
            [rows[i] for i in numbers],
            source,
            tokenizer,
            data_cfg,
            args.max_length,
            args.max_prompt_length,
            row_numbers=numbers,
        )
        logger.info("%s", split_report.summary())
        report[name] = split_report.to_dict()
        built[name] = datasets.Dataset.from_dict(columns)
        if len(built[name]) == 0:
            raise _no_pairs_left(name, source, split_report, args)
    return PreferenceData(train=built["train"], eval=built.get("eval"), report=report, tokenizer=tokenizer)


def split_parts(
    splits: dict[str, tuple[str, list[dict]]], data_cfg: DataConfig, args: DPOConfig
) -> list[tuple[str, str, list[dict], list[int]]]:
    """[(name, source, rows, row numbers used)] for "train" and, when there is one, "eval": the held-out share
    (eval_fraction) and the seeded subsets (max_train_samples, max_eval_samples) drawn as training draws them."""
    seed = args.data_seed if args.data_seed is not None else args.seed
    train_source, train_rows = splits[data_cfg.dataset_train_split]
    eval_source, eval_rows = splits.get(data_cfg.dataset_test_split, (None, None))
    # Row numbers in the file, kept through the held-out draw and the subsets so errors name the file's row.
    train_numbers = list(range(len(train_rows)))
    eval_numbers = list(range(len(eval_rows))) if eval_rows is not None else None
    if eval_rows is not None and data_cfg.eval_fraction > 0:
        logger.warning(
            "eval_fraction %s is not used: the dataset's '%s' split is the held-out set. Set dataset_test_split: "
            "null to hold out a share of the train split instead.",
            data_cfg.eval_fraction,
            data_cfg.dataset_test_split,
        )
    if eval_rows is None and data_cfg.eval_fraction > 0:
        order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed)).tolist()
        n_eval = max(1, round(len(train_rows) * data_cfg.eval_fraction))
        eval_numbers, train_numbers = sorted(order[:n_eval]), sorted(order[n_eval:])
        eval_rows = train_rows
        eval_source = f"{train_source} (held-out {data_cfg.eval_fraction:.0%})"
    train_numbers = _seeded_subset(train_numbers, data_cfg.max_train_samples, seed)
    if eval_numbers is not None:
        eval_numbers = _seeded_subset(eval_numbers, data_cfg.max_eval_samples, seed)

    parts = [("train", train_source, train_rows, train_numbers)]
    if eval_numbers is not None:
        parts.append(("eval", eval_source, eval_rows, eval_numbers))
    return parts


def _no_pairs_left(name: str, source: str, report: DataReport, args: DPOConfig) -> DataError:
    """The error for a split left with no pair: lost to length (name the keys), or to bad rows."""
    lost_to_length = any(report.skipped[why] for why in LENGTH_DROPS)
    if name == "train" or lost_to_length:
        advice = length_advice(report, args.max_length, args.max_prompt_length)
        what = "the held-out split has" if name == "eval" else "there are"
        return DataError(f"{source}: {what} no usable pairs left ({report.to_dict()}). {advice}")
    return DataError(
        f"{source}: the held-out split has no usable pairs ({report.to_dict()}). Add pairs to it, or set "
        "dataset_test_split: null (and eval_fraction: 0) to train without one."
    )
