"""The files of step 1 and their rows: prompts in, samples rows between sampling and labelling, pair rows out.

    prompts file  (.txt one a line, or a .jsonl/.json/.csv/.parquet table with a prompt column)
      -> samples file  {"index", "prompt", "completions": [K strings], "finished": [K bools], "seed", "settings"}
      -> pairs file    {"prompt", "chosen", "rejected", ...}: the rows `hf-dpo train` reads

Sampling (`sampling`), judge labelling (`labelling`) and hand labelling (`label_store`) all read and write
through this module, so a file one of them writes is one the next reads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from hf_dpo.config import Recipe
from hf_dpo.errors import HfDpoError, quoted
from hf_dpo.files import read_jsonl as read_lines
from hf_dpo.files import read_utf8_text

Prompt = str | list[dict[str, str]]  # plain text, or a conversation (list of {"role", "content"})


class SamplingError(HfDpoError, ValueError):
    """Bad prompts, samples or settings; the message names the file/line or prompt and what to do."""


def prompt_text(prompt: Prompt) -> str:
    """The text a judge sees: the prompt itself, or the last user turn of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content", "") if prompt else "")


def prompt_context(prompt: Prompt, limit: int = 200) -> list[dict[str, str]]:
    """The turns of a conversation before its last user turn (system prompt and earlier exchanges), each text
    shortened to about `limit` characters (its start and end kept), for a reader of the report and the judged
    generations; [] for a text prompt or a single turn."""
    if isinstance(prompt, str):
        return []
    users = [i for i, m in enumerate(prompt) if m.get("role") == "user"]
    last = users[-1] if users else len(prompt) - 1
    return [
        {"role": m.get("role", ""), "content": _shortened(m.get("content", ""), limit)} for m in prompt[:last]
    ]


def _shortened(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = max(1, (limit - 5) // 2)
    return f"{text[:half]} ... {text[-half:]}"


def check_prompt(value: Any, where: str) -> Prompt:
    """`value` if it is a prompt (a non-empty string or a list of messages); SamplingError naming `where` else.

    A prompt's messages take the roles training accepts, and its text is encodable: the pairs made from it are
    trained on, and a prompt training refuses would only be named after sampling it (minutes)."""
    from hf_dpo.data import CHAT_ROLES

    if isinstance(value, str) and value.strip():
        _check_text(value, where)
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        for m in value:
            if m["role"] not in CHAT_ROLES:
                raise SamplingError(
                    f"{where}: message role {quoted(m['role'])} is not one of {', '.join(CHAT_ROLES)} (training refuses "
                    "the pairs of such a prompt). Rename the role."
                )
            _check_text(m["content"], where)
        return value
    raise SamplingError(
        f"{where}: prompt must be a non-empty string or a list of {{'role', 'content'}} messages, got {quoted(value)}."
    )


def _check_text(text: str, where: str) -> None:
    """No lone UTF-16 surrogate (`hf_dpo.data.not_text`): the tokenizer raises TypeError on it after the model loads."""
    from hf_dpo.data import not_text

    reason = not_text(text)
    if reason:
        raise SamplingError(f"{where}: {reason}. Fix that prompt.")


def read_jsonl(path: str | os.PathLike, size: int | None = None) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line (of the first `size` bytes, when given); SamplingError naming
    file and line for a broken one (not UTF-8, not JSON, not an object)."""
    return read_lines(
        path,
        error=SamplingError,
        hint="Fix or delete that line; the other lines are kept (a sampling run resumes and redoes missing prompts).",
        size=size,
    )


def read_prompts(path: str | os.PathLike, prompt_column: str = "prompt") -> list[Prompt]:
    """Prompts from a .txt file (one per line, blank lines ignored) or any table with a prompt column."""
    path = Path(path).expanduser()  # a recipe's `~/prompts.txt`: the shell never saw it
    if not path.is_file():
        raise SamplingError(
            f"Prompt file {path} does not exist. Set prompts_file to a .txt/.jsonl/.json/.csv/.parquet file."
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        # read_utf8_text drops a byte-order mark (Windows editors), else the first prompt's first character.
        text = read_utf8_text(path, error=SamplingError)
        # Lines end at \n, \r\n or \r only: str.splitlines() also splits at U+2028, \x85, \x0c (form feed) and
        # others that are text inside a prompt (pasted from a web page or a PDF), cutting one prompt in two.
        prompts: list[Prompt] = re.split(r"\r\n|\r|\n", text)
        prompts = [p for p in prompts if p.strip()]
    elif suffix == ".jsonl":
        prompts = []
        for lineno, row in read_jsonl(path):
            if prompt_column not in row:
                raise SamplingError(
                    f"{path}, line {lineno}: no '{prompt_column}' column (set prompt_column)."
                )
            prompts.append(check_prompt(row[prompt_column], f"{path}, line {lineno}"))
    elif suffix in (".json", ".csv", ".parquet"):
        prompts = _read_prompt_table(path, suffix[1:], prompt_column)
    else:
        raise SamplingError(
            f"{path}: unknown prompt file type '{suffix}'; use .txt, .jsonl, .json, .csv or .parquet."
        )
    if not prompts:
        raise SamplingError(
            f"Prompt file {path} has no prompts. Put one prompt per line (or rows with '{prompt_column}')."
        )
    return prompts


def _read_prompt_table(path: Path, kind: str, prompt_column: str) -> list[Prompt]:
    """The prompt column of a .json/.csv/.parquet table, through `datasets` (a .csv as the text of its cells)."""
    from datasets import Dataset, load_dataset

    from hf_dpo.data import read_csv_text

    try:
        if kind == "csv":  # pandas' type guessing would read a prompt 1234 as a number and NA as missing
            rows = read_csv_text(path)
            if not rows:  # a header alone: no prompts (said by the caller)
                return []
            table = Dataset.from_list(rows)
        else:
            table = load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 - any parse failure of the file becomes one named error
        raise SamplingError(f"{path}: could not be read as {kind} ({type(err).__name__}: {err}).") from None
    if prompt_column not in table.column_names:
        raise SamplingError(
            f"{path}: no '{prompt_column}' column (columns: {', '.join(table.column_names)}); set prompt_column."
        )
    return [check_prompt(v, f"{path}, row {i}") for i, v in enumerate(table[prompt_column])]


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Rows of a samples file, sorted by prompt index; SamplingError naming file and line for bad ones."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("samples_*.jsonl"))
        raise SamplingError(
            f"Samples file {path} is a directory; give the samples file in it"
            + (f" ({', '.join(found)})." if found else ", as `hf-dpo sample` printed.")
        )
    if not path.is_file():
        raise SamplingError(f"Samples file {path} does not exist; run `hf-dpo sample RECIPE` first.")
    rows = {}
    for lineno, row in read_jsonl(path):
        comps = row.get("completions")
        if "prompt" not in row or not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise SamplingError(
                f"{path}, line {lineno}: needs 'prompt' and 'completions' (a list of strings)."
            )
        check_prompt(row["prompt"], f"{path}, line {lineno}")
        index = row.get("index", len(rows))
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise SamplingError(
                f"{path}, line {lineno}: 'index' must be a whole number >= 0 (the prompt's position in the prompt "
                f"file), got {quoted(index)}. Fix that line, or sample again with `hf-dpo sample`."
            )
        if index in rows:
            raise SamplingError(
                f"{path}, line {lineno}: prompt index {index} appears a second time. Keep one of its lines."
            )
        rows[index] = row
    if not rows:
        raise SamplingError(f"Samples file {path} is empty; run `hf-dpo sample RECIPE` first.")
    return [rows[i] for i in sorted(rows)]


def finished_flags(row: dict) -> list[bool]:
    """Per completion, whether it ended with an end token; files written before the flag count as finished.
    (`check_finished_flags` has made sure a row's flags match its completions.)"""
    flags = row.get("finished")
    return [bool(f) for f in flags] if isinstance(flags, list) else [True] * len(row["completions"])


def check_finished_flags(row: dict, samples_file: str | os.PathLike) -> None:
    """SamplingError naming the file and prompt unless the row's "finished" is absent (an older file) or one
    true/false per completion."""
    flags = row.get("finished")
    if flags is None:
        return
    where = f"{samples_file}: prompt {row.get('index')}"
    fix = "Fix that row, or delete its line and run `hf-dpo sample` again to sample that prompt anew."
    if not isinstance(flags, list) or not all(isinstance(f, bool) for f in flags):
        raise SamplingError(f"{where}: 'finished' must be a list of true/false, one per completion. {fix}")
    if len(flags) != len(row["completions"]):
        raise SamplingError(
            f"{where} has {len(flags)} 'finished' flag(s) for {len(row['completions'])} completions; it needs "
            f"one per completion. {fix}"
        )


def pair_row(prompt: Prompt, chosen: str, rejected: str, **extra) -> dict[str, Any]:
    """A preference row as `hf-dpo train` reads it; a conversational prompt gets assistant-turn responses."""
    if isinstance(prompt, list):
        chosen = [{"role": "assistant", "content": chosen}]
        rejected = [{"role": "assistant", "content": rejected}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def sampling_splits(recipe: Recipe) -> dict[str, str]:
    """{split: prompts file} that `hf-dpo sample` samples, in its order: held-out first when the recipe has
    test_prompts_file (it is small and the evaluation needs it whole; the long train split can then be stopped
    and resumed at will), then train. The preflight checks the output files of exactly these."""
    held_out = recipe.report.test_prompts_file
    splits = {"test": held_out} if held_out else {}
    splits["train"] = recipe.sampling.prompts_file
    return splits


def default_samples_file(recipe: Recipe, split: str = "train") -> Path:
    """Where a split's samples go: samples_file (held-out: `<stem>_test<suffix>` beside it), else the run dir."""
    if recipe.sampling.samples_file:
        # `~/runs/s.jsonl` in a recipe is the home directory (as output_dir is), not a directory named "~" here.
        base = Path(recipe.sampling.samples_file).expanduser()
        return base if split == "train" else base.with_name(f"{base.stem}_{split}{base.suffix}")
    return Path(recipe.training.output_dir) / f"samples_{split}.jsonl"


def default_pairs_file(recipe: Recipe, split: str = "train") -> Path:
    """Where a split's pairs go: pairs_file (held-out: `test.jsonl` beside it), else `<output_dir>/pairs/`."""
    base = Path(
        recipe.sampling.pairs_file or Path(recipe.training.output_dir) / "pairs" / "train.jsonl"
    ).expanduser()
    return base if split == "train" else base.with_name(f"{split}.jsonl")


def check_output_files(recipe: Recipe, splits: list[str]) -> None:
    """Before `hf-dpo sample` reads a prompt: the files it writes are distinct from each other and from its
    prompts, and those it replaces (a judge's pairs, the dataset card) are its own, so no run replaces other
    data. SamplingError naming the key, the file and what to do."""
    cfg, labels = recipe.sampling, bool(recipe.report.judge)
    roles: dict[Path, str] = {}  # resolved path -> what it is, in the order they are claimed

    def claim(path: str | os.PathLike, role: str) -> None:
        resolved = Path(path).expanduser().resolve()
        if not role.endswith("prompts)") and resolved.is_dir():  # else found when written: after the sampling
            raise SamplingError(
                f"{role} would be {path}, which is a directory. Set samples_file / pairs_file to a file name, e.g. "
                f"{Path(path) / 'train.jsonl'}."
            )
        if resolved in roles and not (role.endswith("prompts)") and roles[resolved].endswith("prompts)")):
            raise SamplingError(
                f"{role} would be {path}, which is also {roles[resolved]}: one file cannot be both. "
                "Set samples_file / pairs_file to other names."
            )
        roles[resolved] = role

    prompts = {
        "train": ("prompts_file", cfg.prompts_file),
        "test": ("test_prompts_file", recipe.report.test_prompts_file),
    }
    for split in splits:
        key, path = prompts[split]
        if path:
            claim(path, f"{key} ({split} prompts)")
    for split in splits:
        claim(default_samples_file(recipe, split), f"the {split} samples file")
    if not labels:
        return
    for split in splits:
        pairs = default_pairs_file(recipe, split)
        claim(
            pairs,
            f"the {split} pairs file (pairs_file{', held-out: test.jsonl beside it' * (split != 'train')})",
        )
        check_judge_pairs(pairs)
    card = default_pairs_file(recipe).parent / "README.md"
    claim(card, "the dataset card (README.md beside pairs_file)")
    if card.is_file() and "hf-dpo" not in card.read_text(encoding="utf-8", errors="replace"):
        raise SamplingError(
            f"{card} exists and is not a dataset card hf-dpo wrote; `hf-dpo sample` writes its card there. "
            "Point pairs_file into a directory of its own, or move that README.md away."
        )


def check_judge_pairs(path: Path) -> None:
    """A pairs file the judge is about to rewrite holds only a judge's pairs (rows with its scores): hand labels
    (`hf-dpo label`, judge: human) or a data set of someone else's would be lost."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    rows = read_jsonl(path)
    foreign = next((lineno for lineno, row in rows if "score_chosen" not in row), None)
    if foreign is not None:
        raise SamplingError(
            f"{path} exists and line {foreign} is not a judge's pair (no score_chosen: hand labels, or another "
            f"data set); `hf-dpo sample` would replace its {len(rows)} rows with the judge's pairs. Set pairs_file "
            "to a new file, or move that one away."
        )
