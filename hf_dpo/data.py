"""Preference data: read any common shape, validate row by row, apply the chat template, tokenize, collate.

Rows may be
- standard: `prompt`, `chosen`, `rejected` strings;
- conversational: `chosen`/`rejected` lists of `{"role", "content"}` messages, `prompt` a string or messages
  (chosen/rejected that are whole conversations, prompt turns included, UltraFeedback-style: the prompt once);
- implicit-prompt: no prompt column, the prompt is the shared prefix of chosen and rejected (HH-RLHF style).
Column names are mapped from the recipe (`prompt_column`, ...). Bad rows raise `DataError` naming the
source, row and column, or with `on_bad_rows: skip` are dropped and counted in the data report.

    data = load_preference_dataset(recipe.data, tokenizer, recipe.training)
    data.train, data.eval, data.report

Why one file of ~500 lines: its four parts (reading, validating, formatting/tokenizing, the split loader) are one
pipeline over the same row dicts and `DataReport`, each part used only by the next; batching lives in
`hf_dpo.train.batching`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_dpo.config import DataConfig, DPOConfig
from hf_dpo.errors import HfDpoError
from hf_dpo.files import read_jsonl, read_utf8_text

logger = logging.getLogger(__name__)

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TOKENIZED_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
IMAGE_COLUMNS = {"images", "image"}  # TRL's vision DPO columns
CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")
SKIP_HINT = "Fix the row, or set `on_bad_rows: skip` in the recipe to drop such rows (they are counted)."


class DataError(HfDpoError, ValueError):
    """Bad preference data; the message names the source, row and column and says what to do."""


@dataclass
class DataReport:
    """What happened to the rows of one split: read, used, skipped (by reason), truncated."""

    source: str
    rows_read: int = 0
    pairs_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    prompt_truncated: int = 0
    completion_truncated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "pairs_used": self.pairs_used,
            "skipped": dict(self.skipped),
            "prompt_truncated": self.prompt_truncated,
            "completion_truncated": self.completion_truncated,
        }

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "none"
        return (
            f"{self.source}: {self.rows_read} rows -> {self.pairs_used} pairs; skipped: {skipped}; "
            f"truncated prompts: {self.prompt_truncated}, truncated completions: {self.completion_truncated}"
        )


@dataclass
class PreferenceData:
    train: Any  # datasets.Dataset with TOKENIZED_COLUMNS (+ prompt/chosen/rejected text)
    eval: Any | None
    report: dict[str, dict[str, Any]]
    # The tokenizer that made train and eval: the run trains with this one rather than loading it again.
    tokenizer: Any = None


# ---------------------------------------------------------------- reading


def _read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in read_jsonl(path, error=DataError)]


def _check_row_objects(path: Path, rows: list) -> list[dict]:
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}, row {index}: expected an object with prompt/chosen/rejected keys, got "
                f"{type(row).__name__} {row!r:.60}. A .json file holds a list of such objects."
            )
    return rows


def _read_file(path: Path) -> list[dict]:
    """The rows of one data file; DataError naming the file for one that cannot be opened or parsed."""
    try:
        return _read_rows(path)
    except OSError as err:  # a directory named train.jsonl, a dangling symlink, no permission
        raise DataError(f"{path}: cannot be read ({err.strerror or err}).") from None


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        text = read_utf8_text(path, error=DataError)
        try:
            data = json.loads(text)
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply to read.") from None
        except json.JSONDecodeError as err:
            # Some ".json" files are really JSON lines.
            try:
                return _read_jsonl(path)
            except DataError:
                raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}).") from None
        if isinstance(data, dict):  # {"data": [...]} or column-oriented {"prompt": [...], ...}
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(data) == 1 and lists:
                data = lists[0]
            elif lists and len(lists) == len(data):
                lengths = {key: len(value) for key, value in data.items()}
                if len(set(lengths.values())) > 1:  # zip would silently cut every column to the shortest
                    counts = ", ".join(f"{key}: {n}" for key, n in lengths.items())
                    raise DataError(
                        f"{path}: its columns have different lengths ({counts}); a column-oriented .json needs "
                        "one value per row in every column."
                    )
                data = [dict(zip(data, values)) for values in zip(*data.values())]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of rows (objects), got {type(data).__name__}.")
        return _check_row_objects(path, data)
    if suffix in (".parquet", ".csv"):
        import datasets

        try:
            if suffix == ".csv":
                return read_csv_text(path)
            ds = datasets.load_dataset(LOCAL_FORMATS[suffix], data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - any parse failure becomes one clear message
            # datasets wraps the parser's own error in "An error occurred ..."
            while err.__cause__ is not None:
                err = err.__cause__
            reason = " ".join(str(err).split())  # pandas' messages span lines; the error is one line
            raise DataError(
                f"{path}: could not be read as {suffix[1:]} ({type(err).__name__}: {reason})."
            ) from None
        return ds.to_list()
    raise DataError(f"{path}: unsupported file type '{suffix}'. Use .json, .jsonl, .parquet or .csv.")


def read_csv_text(path: Path) -> list[dict]:
    """Every cell as the text it holds. CSV has no types: pandas' guessing (datasets' CSV loader) read a column of
    numeric answers as numbers, "1.50" as 1.5, and the answers NA, None or null as missing values."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return frame.to_dict(orient="records")


def _split_files(directory: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() in LOCAL_FORMATS:
            if path.stem in files:  # train.json and train.jsonl: reading one would silently ignore the other
                raise DataError(
                    f"{directory}: two files for split '{path.stem}' ({files[path.stem].name} and {path.name}). "
                    "Keep one of them in the directory."
                )
            files[path.stem] = path
    if not files:
        raise DataError(
            f"{directory}: no .json/.jsonl/.parquet/.csv files (name them by split, e.g. train.jsonl)."
        )
    return files


def _named_test_split(cfg: DataConfig) -> bool:
    """Whether the recipe named its held-out split: one the data lacks is then an error, where an absent default
    split ('test') means none (eval_fraction may carve one out). Otherwise the run silently had no held-out split."""
    default = DataConfig.__dataclass_fields__["dataset_test_split"].default
    return bool(cfg.dataset_test_split) and cfg.dataset_test_split != default


def read_splits(cfg: DataConfig) -> dict[str, tuple[str, list[dict]]]:
    """{split: (source name, rows)} for the train split and, if present, the test split."""
    if not cfg.dataset_name:
        raise DataError("The recipe sets no dataset_name: give a Hub dataset id or a local file/directory.")
    if cfg.dataset_test_split and cfg.dataset_test_split == cfg.dataset_train_split:
        # the "held-out" numbers before and after training would be measured on the pairs trained on
        raise DataError(
            f"dataset_test_split '{cfg.dataset_test_split}' is the train split (dataset_train_split): nothing would "
            "be held out. Name another split, set eval_fraction (e.g. 0.1) to hold out a share of the train split, "
            "or dataset_test_split: null for none."
        )
    path = Path(cfg.dataset_name).expanduser()
    wanted = [cfg.dataset_train_split] + ([cfg.dataset_test_split] if cfg.dataset_test_split else [])
    out: dict[str, tuple[str, list[dict]]] = {}
    if path.is_file():
        if _named_test_split(cfg):
            raise DataError(
                f"{path} is one file, the train split: it has no split dataset_test_split "
                f"'{cfg.dataset_test_split}'. Put the splits in one directory (train.jsonl, "
                f"{cfg.dataset_test_split}.jsonl), set eval_fraction to hold out a share of this file, or "
                "dataset_test_split: null for no held-out split."
            )
        out[cfg.dataset_train_split] = (str(path), _read_file(path))
        return out
    if path.is_dir() and _saved_with_save_to_disk(path):
        return _read_saved(path, cfg, wanted)
    if path.is_dir():
        files = _split_files(path)
        named = [("dataset_train_split", cfg.dataset_train_split)]
        if _named_test_split(cfg):
            named.append(("dataset_test_split", cfg.dataset_test_split))
        for key, split in named:
            if split not in files:
                raise DataError(
                    f"{path}: no file for split {split!r} ({key}; found: {', '.join(files)}). "
                    f"Set {key} to one of them."
                )
        for split in wanted:
            if split in files:
                out[split] = (str(files[split]), _read_file(files[split]))
        return out
    if path.suffix.lower() in LOCAL_FORMATS or str(cfg.dataset_name).startswith((".", "/", "~")):
        raise DataError(f"Dataset file {path} does not exist.")
    return _read_hub(cfg, wanted)


def _saved_with_save_to_disk(path: Path) -> bool:
    """A `datasets` save_to_disk directory: its .json files are metadata, not splits of rows."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _read_saved(path: Path, cfg: DataConfig, wanted: list[str]) -> dict[str, tuple[str, list[dict]]]:
    """The splits of a save_to_disk directory: a DatasetDict's by name, a single Dataset as the train split."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - a directory saved by another datasets version, cut short, ...
        reason = " ".join(str(err).split())
        raise DataError(
            f"{path}: could not be read with datasets.load_from_disk ({type(err).__name__}: {reason})."
        ) from None
    if isinstance(saved, datasets.Dataset):
        if _named_test_split(cfg):
            raise DataError(
                f"{path} is one saved Dataset, the train split: it has no split dataset_test_split "
                f"'{cfg.dataset_test_split}'. Save a DatasetDict, set eval_fraction to hold out a share of it, or "
                "dataset_test_split: null for none."
            )
        return {cfg.dataset_train_split: (str(path), saved.to_list())}
    named = [("dataset_train_split", cfg.dataset_train_split)]
    if _named_test_split(cfg):
        named.append(("dataset_test_split", cfg.dataset_test_split))
    for key, split in named:
        if split not in saved:
            raise DataError(
                f"{path}: no split {split!r} ({key}; splits: {', '.join(saved)}). Set {key} to one of them."
            )
    return {split: (f"{path}[{split}]", saved[split].to_list()) for split in wanted if split in saved}


def _read_hub(cfg: DataConfig, wanted: list[str]) -> dict[str, tuple[str, list[dict]]]:
    import datasets

    try:
        available = datasets.get_dataset_split_names(cfg.dataset_name, cfg.dataset_config)
    except Exception as err:  # noqa: BLE001
        raise DataError(
            f"Could not reach dataset '{cfg.dataset_name}' on the Hub ({type(err).__name__}: {err}). "
            "Check the id and your network, or point dataset_name at a local file or directory."
        ) from None
    out = {}
    for split in wanted:
        if split not in available:
            if split == cfg.dataset_train_split or _named_test_split(cfg):
                key = "dataset_train_split" if split == cfg.dataset_train_split else "dataset_test_split"
                raise DataError(
                    f"Dataset '{cfg.dataset_name}' has no split {split!r} ({key}; splits: {', '.join(available)}). "
                    f"Set {key}."
                )
            continue
        try:
            ds = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config, split=split)
        except Exception as err:  # noqa: BLE001 - a dropped network, a file datasets cannot cast: name the split
            while err.__cause__ is not None:  # datasets wraps the reason in "An error occurred ..."
                err = err.__cause__
            reason = " ".join(str(err).split())
            raise DataError(
                f"Dataset '{cfg.dataset_name}', split {split!r}, could not be loaded ({type(err).__name__}: "
                f"{reason}). Check your network, or download it once and point dataset_name at the local files."
            ) from None
        out[split] = (f"{cfg.dataset_name}[{split}]", ds.to_list())
    return out


# ---------------------------------------------------------------- validating


class BadRow(Exception):
    def __init__(self, column: str, problem: str, reason: str):
        super().__init__(problem)
        self.column, self.problem, self.reason = column, problem, reason

    def error(self, source: str, index: int) -> DataError:
        """The DataError a user reads: file, row (and in a .jsonl file the line an editor shows), column,
        problem and what to do."""
        return DataError(
            f"{source}, row {index}, column '{self.column}': {self.problem}{_line_of_row(source, index)}. "
            f"{SKIP_HINT}"
        )


def _line_of_row(source: str, index: int) -> str:
    """' (row N is line L of the file)' for a local .jsonl source, '' otherwise. Rows count from 0 and skip blank
    lines, where an editor counts lines from 1: 'row 3' of a file with blank lines can be its line 8. Read again
    only here, when a row is refused; a held-out share keeps its file's row numbers."""
    path = Path(source.split(" (held-out ")[0])
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return ""
    try:
        rows = read_jsonl(path, error=DataError)
    except (
        HfDpoError,
        OSError,
    ):  # read once already; if it changed since, say nothing rather than a wrong line
        return ""
    return f" (row {index} is line {rows[index][0]} of the file)" if index < len(rows) else ""


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _check_messages(value: list, column: str) -> list[dict]:
    if not value:
        raise BadRow(column, "empty message list", "empty response")
    for m in value:
        if "role" not in m or "content" not in m or not isinstance(m["content"], str):
            raise BadRow(column, f"message {m!r} lacks a 'role' or a string 'content'", "bad message")
        if not isinstance(m["role"], str) or m["role"] not in CHAT_ROLES:
            raise BadRow(
                column, f"message role {m['role']!r} is not one of {', '.join(CHAT_ROLES)}", "bad message"
            )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _common_message_prefix(a: list[dict], b: list[dict]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_string_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n < min(len(a), len(b)):
        # Back off to a word boundary so neither completion starts mid-word ("Pa|ris" vs "Pa|u").
        while n > 0 and not a[n - 1].isspace():
            n -= 1
    return n


def not_text(text: str) -> str | None:
    """Why `text` is no text, or None: JSON may escape a lone UTF-16 surrogate ("\\ud800"), which is no
    character, and the tokenizer raises a TypeError on it deep inside. Rows and prompts are checked with this."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"character {err.start} is {text[err.start]!r}, half of a UTF-16 surrogate pair and not text "
            "(an escape such as \\ud800 in the JSON; the file was cut or converted badly)"
        )
    return None


def _check_encodable(value: str | list[dict], column: str) -> None:
    for text in [value] if isinstance(value, str) else [m["content"] for m in value]:
        reason = not_text(text)
        if reason:
            raise BadRow(column, reason, "not text")


def _conversation_holds_prompt(prompt: Any, chosen: Any, rejected: Any) -> bool:
    """A prompt string beside chosen/rejected conversations that share their start, a user turn in it
    (UltraFeedback-binarized): the conversations hold the prompt, and the string column repeats it. As TRL's
    maybe_extract_prompt, the shared start is the prompt; the string in front would ask the question twice."""
    if not isinstance(prompt, str) or not isinstance(chosen, list) or not isinstance(rejected, list):
        return False
    shared = chosen[: _common_message_prefix(chosen, rejected)]
    return any(m["role"] == "user" for m in shared)


def normalize_row(row: dict, cfg: DataConfig) -> dict[str, Any]:
    """One raw row -> {"prompt": str | messages, "chosen": str | messages, "rejected": ..., "implicit": bool}."""
    values = {}
    for key, column in (("chosen", cfg.chosen_column), ("rejected", cfg.rejected_column)):
        if column not in row or row[column] is None:
            raise BadRow(column, "missing value", "missing column")
        value = row[column]
        if _is_messages(value):
            value = _check_messages(value, column)
        elif not isinstance(value, str):
            raise BadRow(
                column, f"expected a string or a list of messages, got {type(value).__name__}", "wrong type"
            )
        values[key] = value
    if type(values["chosen"]) is not type(values["rejected"]):
        raise BadRow(
            cfg.rejected_column, "chosen and rejected must both be strings or both messages", "wrong type"
        )
    prompt = row.get(cfg.prompt_column)
    if prompt is None and cfg.prompt_column in row:
        # a prompt lost from its row, not a dataset of implicit prompts: the answers' shared start ("The answer
        # is ") would be trained on as the prompt
        raise BadRow(
            cfg.prompt_column,
            "missing value (null; a column that is null throughout can be dropped, to take each prompt from the "
            "shared start of chosen and rejected)",
            "missing prompt",
        )
    implicit = prompt is None or _conversation_holds_prompt(prompt, values["chosen"], values["rejected"])
    if implicit:
        if isinstance(values["chosen"], list):
            n = _common_message_prefix(values["chosen"], values["rejected"])
            prompt, values["chosen"], values["rejected"] = (
                values["chosen"][:n],
                values["chosen"][n:],
                values["rejected"][n:],
            )
        else:
            n = _common_string_prefix(values["chosen"], values["rejected"])
            prompt, values["chosen"], values["rejected"] = (
                values["chosen"][:n],
                values["chosen"][n:],
                values["rejected"][n:],
            )
        if not prompt:
            raise BadRow(
                cfg.prompt_column, "no prompt column and chosen/rejected share no prefix", "missing prompt"
            )
    elif _is_messages(prompt):
        prompt = _check_messages(prompt, cfg.prompt_column)
        if not "".join(m["content"] for m in prompt).strip():  # as an empty prompt string is
            raise BadRow(cfg.prompt_column, "empty prompt (its messages hold no text)", "empty prompt")
        n = len(prompt)
        if all(isinstance(v, list) and len(v) > n and v[:n] == prompt for v in values.values()):
            # both answers are the whole conversation, prompt turns included: the prompt would come twice, the
            # second time trained on as part of the answer
            values = {key: value[n:] for key, value in values.items()}
    elif not isinstance(prompt, str):
        raise BadRow(
            cfg.prompt_column, f"expected a string or messages, got {type(prompt).__name__}", "wrong type"
        )
    elif not prompt.strip():
        raise BadRow(cfg.prompt_column, "empty prompt", "empty prompt")
    for key, column in (("chosen", cfg.chosen_column), ("rejected", cfg.rejected_column)):
        value = values[key]
        text = value if isinstance(value, str) else "".join(m["content"] for m in value)
        if not text.strip():
            raise BadRow(column, "empty response", "empty response")
    if values["chosen"] == values["rejected"]:
        raise BadRow(cfg.rejected_column, "chosen and rejected are identical", "chosen == rejected")
    for value, column in (
        (prompt, cfg.prompt_column),
        (values["chosen"], cfg.chosen_column),
        (values["rejected"], cfg.rejected_column),
    ):
        _check_encodable(value, column)
    return {
        "prompt": prompt,
        "chosen": values["chosen"],
        "rejected": values["rejected"],
        "implicit": implicit,
    }


# ---------------------------------------------------------------- formatting and tokenizing


def _as_messages(prompt: str | list[dict], system_prompt: str | None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def uses_chat_template(prompt: Any, tokenizer, cfg: DataConfig, implicit: bool = False) -> bool:
    """Conversational rows always go through the chat template; plain strings when apply_chat_template is
    on; implicit-prompt strings (raw transcripts such as HH-RLHF) never."""
    if not getattr(tokenizer, "chat_template", None):
        if isinstance(prompt, list):
            raise DataError(
                "conversational rows (lists of messages) need a tokenizer with a chat template, and this one has "
                "none. Use a chat model, or give prompt/chosen/rejected as plain strings."
            )
        return False
    return isinstance(prompt, list) or (cfg.apply_chat_template and not implicit)


def format_prompt(prompt: str | list[dict], tokenizer, cfg: DataConfig, implicit: bool = False) -> str:
    """The prompt text as the model sees it at generation time (shared by sampling and evaluation)."""
    if uses_chat_template(prompt, tokenizer, cfg, implicit):
        return tokenizer.apply_chat_template(
            _as_messages(prompt, cfg.system_prompt), tokenize=False, add_generation_prompt=True
        )
    return prompt


def prompt_token_ids(prompt: str | list[dict], tokenizer, cfg: DataConfig) -> list[int]:
    """The token ids a model is prompted with to answer `prompt` (sampling, the report's generations), exactly
    as tokenize_pair tokenizes a training prompt: a rendered chat template holds its own special tokens, raw text
    gets the tokenizer's (a BOS, as TRL adds), which the model would otherwise answer without."""
    special = not uses_chat_template(prompt, tokenizer, cfg)
    return tokenizer(format_prompt(prompt, tokenizer, cfg), add_special_tokens=special)["input_ids"]


def _rendered(render, column: str, cfg: DataConfig) -> str:
    """`render()`, one chat-template call; a template that refuses the row is a BadRow of `column`."""
    try:
        return render()
    except HfDpoError:
        raise
    except Exception as err:  # noqa: BLE001 - templates raise anything (TemplateError, TypeError): name the row
        problem = f"the tokenizer's chat template rejects it ({type(err).__name__}: {err})"
        if cfg.system_prompt:
            problem += " (the recipe's system_prompt adds a system turn, which some templates refuse)"
        raise BadRow(column, problem, "rejected by the chat template") from None


def format_pair(pair: dict, tokenizer, cfg: DataConfig) -> tuple[str, str, str]:
    """(prompt_text, prompt+chosen text, prompt+rejected text), chat template applied where it belongs. A
    template that refuses the row raises BadRow naming the column it failed on."""
    prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
    implicit = pair.get("implicit", False)
    prompt_text = _rendered(lambda: format_prompt(prompt, tokenizer, cfg, implicit), cfg.prompt_column, cfg)
    if uses_chat_template(prompt, tokenizer, cfg, implicit):
        messages = _as_messages(prompt, cfg.system_prompt)

        def full(completion, column: str) -> str:
            turns = (
                completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            )
            return _rendered(
                lambda: tokenizer.apply_chat_template(messages + turns, tokenize=False), column, cfg
            )

        return prompt_text, full(chosen, cfg.chosen_column), full(rejected, cfg.rejected_column)
    eos = tokenizer.eos_token or ""

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    return prompt_text, prompt_text + with_eos(chosen), prompt_text + with_eos(rejected)


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


def check_columns(source: str, rows: list, cfg: DataConfig) -> None:
    """The recipe's columns are the data's: a column no row has is a problem of the whole split, named as such
    (row by row it read as "missing value. Fix the row", or, with on_bad_rows: skip, as no usable pairs)."""
    present = set().union(*(r.keys() for r in rows[:100] if isinstance(r, dict)))
    if not present:
        return  # no rows, or none an object: the row checks name them
    wanted = [("chosen_column", cfg.chosen_column), ("rejected_column", cfg.rejected_column)]
    # An absent prompt column means the implicit prompt, but only under its default name: a prompt_column the
    # recipe set to a column the data lacks is a typo, never a request for the shared start of the answers.
    default_prompt = DataConfig.__dataclass_fields__["prompt_column"].default
    if cfg.prompt_column != default_prompt:
        wanted.append(("prompt_column", cfg.prompt_column))
    for key, column in wanted:
        if column not in present:
            raise DataError(
                f"{source}: no column '{column}' (columns: {', '.join(sorted(map(str, present)))}). Map your "
                f"column names with {key} (and chosen_column / rejected_column / prompt_column) in the recipe."
            )
    for column in IMAGE_COLUMNS & present:
        # TRL's vision DPO format: hf_dpo trains text-only models, and would drop the images without a word
        if any(isinstance(r, dict) and r.get(column) for r in rows[:100]):
            raise DataError(
                f"{source}: column '{column}' holds images, and hf_dpo trains language models on text alone: "
                "the prompts would speak of images the model never sees. Use a text-only dataset, or remove the "
                f"'{column}' column to train on the text without them."
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
    if data_cfg.on_bad_rows not in ("error", "skip"):
        raise DataError(f"on_bad_rows must be 'error' or 'skip', not '{data_cfg.on_bad_rows}'.")
    _warn_length_drops(report, max_length, max_prompt_length)
    return columns, report


def tokenize_dataset(dataset, tokenizer, data_cfg: DataConfig | None = None, args: DPOConfig | None = None):
    """A datasets.Dataset (or list of rows) with prompt/chosen/rejected -> tokenized Dataset (TRL-style input)."""
    import datasets

    data_cfg = data_cfg or DataConfig()
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    if rows and all(c in rows[0] for c in TOKENIZED_COLUMNS):
        return dataset if hasattr(dataset, "column_names") else datasets.Dataset.from_list(rows)
    columns, report = prepare_rows(
        rows,
        "dataset",
        tokenizer,
        data_cfg,
        getattr(args, "max_length", None),
        getattr(args, "max_prompt_length", None),
    )
    logger.info("%s", report.summary())
    if rows and report.pairs_used == 0:
        # Otherwise training starts on an empty dataset and fails deep in the reference pass.
        advice = length_advice(
            report, getattr(args, "max_length", None), getattr(args, "max_prompt_length", None)
        )
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

    report = {}
    built = {}
    parts = (
        ("train", train_source, train_rows, train_numbers),
        ("eval", eval_source, eval_rows, eval_numbers),
    )
    for name, source, rows, numbers in parts:
        if numbers is None:
            continue
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
