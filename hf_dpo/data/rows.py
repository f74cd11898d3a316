"""Row checks: every row of any common shape (standard, conversational, implicit-prompt) normalised to
prompt/chosen/rejected or refused as a `BadRow` naming its column; the checks of a recipe's splits before any
tokenizer loads (usable pairs in each split, a held-out split for an eval_strategy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_dpo.config import DataConfig, RecipeError
from hf_dpo.data.errors import SKIP_HINT, DataError
from hf_dpo.errors import HfDpoError, quoted
from hf_dpo.files import read_jsonl

if TYPE_CHECKING:  # Recipe imports transformers; a command reads its data before that (RecipeSections)
    from hf_dpo.config import Recipe
    from hf_dpo.config.early import RecipeSections

IMAGE_COLUMNS = {"images", "image"}  # TRL's vision DPO columns


CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")


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
            raise BadRow(column, f"message {quoted(m)} lacks a 'role' or a string 'content'", "bad message")
        if not isinstance(m["role"], str) or m["role"] not in CHAT_ROLES:
            raise BadRow(
                column,
                f"message role {quoted(m['role'])} is not one of {', '.join(CHAT_ROLES)}",
                "bad message",
            )
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _common_message_prefix(a: list[dict], b: list[dict]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_prefix_len(a: Sequence, b: Sequence) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_string_prefix(a: str, b: str) -> int:
    n = _common_prefix_len(a, b)
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


# How a row's prompt was found (counted per split in the data report and run_info.json).
PROMPT_COLUMN = "prompt column"
HH_TRANSCRIPT = "transcript split at the last assistant turn"
SHARED_TURNS = "shared turns of the conversations"
RENDERED_CHAT = "rendered chat split after its last assistant header"
SHARED_TEXT = "shared start of the texts"
PROMPT_METHODS = (PROMPT_COLUMN, HH_TRANSCRIPT, SHARED_TURNS, RENDERED_CHAT, SHARED_TEXT)
HH_ASSISTANT = "\n\nAssistant:"  # Anthropic HH-RLHF's turn marker, where the original DPO code splits
# The assistant header of common chat templates as rendered (ChatML, Llama 3, Zephyr, Llama 2 / Mistral, Alpaca):
# text already rendered through a template is cut after its last one, as an HH transcript after its marker.
RENDERED_ASSISTANT_HEADERS = (
    "<|im_start|>assistant\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "<|assistant|>\n",
    "[/INST]",
    "### Response:\n",
)
# The end of an assistant turn's header in common raw formats (trailing whitespace aside): a shared-start prompt
# that ends with none of them ends inside a turn (the answers' first shared words became prompt), which is almost
# always a data error.
ASSISTANT_TURN_ENDS = (
    "Assistant:",
    "ASSISTANT:",
    "<|im_start|>assistant",
    "<|assistant|>",
    "[/INST]",
    "Response:",  # Alpaca's "### Response:"
    "<|start_header_id|>assistant<|end_header_id|>",
    "TL;DR:",  # the summarisation format of OpenAI's TL;DR preference data
    "Answer:",
    "A:",
)


def split_implicit_prompt(chosen: str | list[dict], rejected: str | list[dict]):
    """(prompt, chosen, rejected, method) of a row without a prompt: the prompt is the whole turns both share.

    Conversations: the shared leading messages. Anthropic HH transcripts (`\\n\\nHuman: ...\\n\\nAssistant: ...`):
    cut after the last `\\n\\nAssistant:` both share, as the original DPO code does, so answers that begin with the
    same words ("Canberra is ..." / "Canberra was ...") keep them. Text already rendered through a chat template
    (`<|im_start|>assistant\\n`, ...): cut after the last assistant header both share. Other text: the shared
    start, backed off to a word boundary; `ends_inside_a_turn` tells when that prompt is likely a data error."""
    if isinstance(chosen, list):
        n = _common_message_prefix(chosen, rejected)
        return chosen[:n], chosen[n:], rejected[n:], SHARED_TURNS
    shared = _common_prefix_len(chosen, rejected)
    for headers, method in (((HH_ASSISTANT,), HH_TRANSCRIPT), (RENDERED_ASSISTANT_HEADERS, RENDERED_CHAT)):
        # the end of the last header that lies wholly in the shared start
        cut = max(
            (chosen.rfind(h, 0, shared) + len(h) for h in headers if chosen.rfind(h, 0, shared) >= 0),
            default=0,
        )
        if cut:
            return chosen[:cut], chosen[cut:], rejected[cut:], method
    n = _common_string_prefix(chosen, rejected)
    return chosen[:n], chosen[n:], rejected[n:], SHARED_TEXT


def ends_inside_a_turn(prompt: str) -> bool:
    """Whether a shared-start text prompt stops inside a turn: it does not end with an assistant turn's header."""
    return not prompt.rstrip().endswith(ASSISTANT_TURN_ENDS)


def _conversation_holds_prompt(prompt: Any, chosen: Any, rejected: Any) -> bool:
    """A prompt string beside chosen/rejected conversations that share their start, a user turn in it
    (UltraFeedback-binarized): the conversations hold the prompt, and the string column repeats it. As TRL's
    maybe_extract_prompt, the shared start is the prompt; the string in front would ask the question twice."""
    if not isinstance(prompt, str) or not isinstance(chosen, list) or not isinstance(rejected, list):
        return False
    shared = chosen[: _common_message_prefix(chosen, rejected)]
    return any(m["role"] == "user" for m in shared)


def normalize_row(row: dict, cfg: DataConfig) -> dict[str, Any]:
    """One raw row -> {"prompt": str | messages, "chosen": str | messages, "rejected": ..., "implicit": bool,
    "prompt_method": one of PROMPT_METHODS}."""
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
    method = PROMPT_COLUMN
    if implicit:
        prompt, values["chosen"], values["rejected"], method = split_implicit_prompt(
            values["chosen"], values["rejected"]
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
    template_kwargs = row.get("chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        raise BadRow(
            "chat_template_kwargs",
            f"expected a mapping of chat template arguments, got {type(template_kwargs).__name__}",
            "wrong type",
        )
    return {
        "prompt": prompt,
        "chosen": values["chosen"],
        "rejected": values["rejected"],
        "implicit": implicit,
        # TRL's per-row chat template arguments (e.g. {"enable_thinking": false}), passed to the template
        "chat_template_kwargs": template_kwargs,
        "prompt_method": method,
    }


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


def check_data(recipe: Recipe | RecipeSections, splits: dict[str, tuple[str, list[dict]]]) -> dict[str, int]:
    """Check every row of `read_data`'s splits as `hf_dpo.data` will, without tokenizing. {split: usable rows}."""
    cfg = recipe.data
    counts = {}
    for split, (source, rows) in splits.items():
        counts[split] = _check_rows(source, rows, cfg)
    train = cfg.dataset_train_split
    if counts[train] == 0:
        source = splits[train][0]
        raise DataError(
            f"{source}: no usable pairs ({len(splits[train][1])} rows read, none valid). {SKIP_HINT}"
        )
    test = cfg.dataset_test_split
    if test and test in counts and counts[test] == 0:
        raise DataError(
            f"{splits[test][0]}: the held-out split '{test}' has no usable pairs. Add pairs to it, or set "
            "dataset_test_split: null (and eval_fraction: 0) to train without one."
        )
    if not (test and test in counts) and cfg.eval_fraction > 0:
        n = counts[train]
        n_eval = max(1, round(n * cfg.eval_fraction))
        if n - n_eval < 1:
            raise DataError(
                f"{splits[train][0]}: eval_fraction {cfg.eval_fraction} of {n} usable pairs leaves none to train "
                "on. Lower eval_fraction or add pairs."
            )
    return counts


def first_answer(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> tuple[Any, str]:
    """(prompt, answer text) of the first usable train pair, its chosen answer as a judge receives a generated
    one (the assistant's text): a sample of the run's own data to try the judge on before any model loads.
    After check_data, which found such a pair."""
    cfg = recipe.data
    for row in splits[cfg.dataset_train_split][1]:
        try:
            pair = normalize_row(row, cfg)
        except BadRow:
            continue
        chosen = pair["chosen"]
        return pair["prompt"], chosen if isinstance(chosen, str) else "".join(m["content"] for m in chosen)
    raise DataError(f"{splits[cfg.dataset_train_split][0]}: no usable pairs.")


def check_eval_strategy(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """An `eval_strategy` other than no needs a held-out split; transformers' Trainer refuses it only once it is
    built, after the model has loaded."""
    cfg, strategy = recipe.data, recipe.training.eval_strategy
    strategy = getattr(strategy, "value", strategy)  # an IntervalStrategy once TrainingArguments has run
    has_eval = bool(cfg.dataset_test_split and cfg.dataset_test_split in splits) or cfg.eval_fraction > 0
    if strategy in (None, "no") or has_eval:
        return
    where = (
        f"no split '{cfg.dataset_test_split}' in {cfg.dataset_name}"
        if cfg.dataset_test_split
        else "dataset_test_split is null"
    )
    raise RecipeError(
        f"key 'eval_strategy': {strategy} evaluates on the held-out split during training, but there is no "
        f"held-out split ({where}, eval_fraction 0). Set eval_strategy: no, or give one: dataset_test_split naming "
        "a split of the dataset, or eval_fraction (e.g. 0.1) to hold out a share of the train split."
    )


def _check_rows(source: str, rows: list, cfg) -> int:
    check_columns(source, rows, cfg)
    usable = 0
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(
                f"{source}, row {index}: expected an object with prompt/chosen/rejected keys, got "
                f"{type(row).__name__}."
            )
        try:
            normalize_row(row, cfg)
        except BadRow as bad:
            if cfg.on_bad_rows == "skip":
                continue
            raise bad.error(source, index) from None
        usable += 1
    return usable
