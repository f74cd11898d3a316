"""`hf-dpo data RECIPE`: what training will see, from the tokenizer alone (no model weights).

Per split, the data report (rows read, pairs used, rows skipped by reason, truncation, how each prompt was found
and how it reaches the model) and the token lengths; then the first rows of the train split as the model receives
them: the prompt (context, not trained on) and each answer (trained on), decoded with their special tokens, and
where max_length or max_prompt_length cut them, how many tokens went.

    print(data_overview(recipe, tokenizer, rows=3, split="eval"))
    print(render_row(row_view(raw_row, 7, tokenizer, recipe.data, recipe.training), tokenizer, tokens=True))

Every row goes through the functions training uses (normalize_row, tokenize_pair, truncate_pair),
and the rows shown are the ones training draws (eval_fraction, max_train_samples), so the view cannot drift from
what is trained.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from hf_dpo.config import DataConfig, DPOConfig, Recipe
from hf_dpo.data.dataset import DataReport, load_preference_dataset, split_parts, tokenize_pair, truncate_pair
from hf_dpo.data.reading import read_data
from hf_dpo.data.rows import BadRow, normalize_row
from hf_dpo.data.templates import uses_chat_template

SHOWN_CHARS = 1200  # of a long prompt or answer, its start and end are shown (--full shows all)


@dataclass
class RowView:
    """One raw row as training takes it: the ids trained on (None when the row is skipped) and their lengths
    before truncation."""

    number: int
    prompt_method: str | None = None
    chat_template: bool = False
    ids: dict[str, list[int]] | None = None
    full_lengths: dict[str, int] | None = None
    skipped: str | None = None


def row_view(row: dict, number: int, tokenizer, data_cfg: DataConfig, args: DPOConfig) -> RowView:
    """Row `number` of a split through normalize_row, tokenize_pair and truncate_pair, as prepare_rows runs them."""
    try:
        pair = normalize_row(row, data_cfg)
        full = tokenize_pair(pair, tokenizer, data_cfg)
    except BadRow as bad:
        return RowView(number, skipped=f"{bad.reason}: column '{bad.column}': {bad.problem}")
    scratch = DataReport(source="")
    kept = truncate_pair(full, args.max_length, args.max_prompt_length, scratch)
    view = RowView(
        number,
        prompt_method=pair["prompt_method"],
        chat_template=uses_chat_template(pair["prompt"], tokenizer, data_cfg, pair["implicit"]),
        full_lengths={key: len(value) for key, value in full.items()},
    )
    if kept is None:
        view.skipped = ", ".join(scratch.skipped)
    else:
        view.ids = kept
    return view


def _shown(text: str, full: bool) -> str:
    """Newlines made visible (↵) and the middle of a long text left out (unless `full`)."""
    if not full and len(text) > SHOWN_CHARS:
        half = SHOWN_CHARS // 2
        text = f"{text[:half]}[... {len(text) - 2 * half} characters not shown; --full shows them ...]{text[-half:]}"
    return text.replace("\n", "↵\n")


def _segment(name: str, ids: list[int], full_length: int, what: str, tokenizer, tokens: bool, full: bool):
    cut = full_length - len(ids)
    head = f"  {name:<9} {len(ids)} tokens, {what}"
    if cut:
        head += f"; {cut} of {full_length} cut"
    n_cut = f"{cut} token{'' if cut == 1 else 's'}"
    lines = [head]
    if name == "PROMPT" and cut:
        lines.append(f"  │[✂ {n_cut} cut from the start: max_prompt_length ✂]")
    if tokens:  # every token with its id, as the model reads them
        body = " ".join(f"{tokenizer.decode([i])!r}({i})" for i in ids)
    else:
        body = _shown(tokenizer.decode(ids, skip_special_tokens=False), full)
    lines += [f"  │{line}" for line in body.removesuffix("\n").split("\n")]  # a final newline shows as ↵
    if name != "PROMPT" and cut:
        lines.append(f"  │[✂ {n_cut} cut from the end: max_length ✂]")
    return lines


def render_row(
    view: RowView, source: str, split: str, tokenizer, tokens: bool = False, full: bool = False
) -> str:
    """One row as the model receives it: prompt and answers marked apart, cuts shown."""
    title = f"── {split} · row {view.number} of {source}"
    if view.prompt_method:
        form = "chat template" if view.chat_template else "raw text, no chat template"
        title += f" · prompt: {view.prompt_method} · {form}"
    lines = [title]
    if view.ids is None:
        return "\n".join(lines + [f"  skipped ({view.skipped})"])
    full_lengths = view.full_lengths or {}
    for name, key, what in (
        ("PROMPT", "prompt_input_ids", "context, not trained on"),
        ("CHOSEN", "chosen_input_ids", "trained on (pushed up)"),
        ("REJECTED", "rejected_input_ids", "trained on (pushed down)"),
    ):
        lines += _segment(name, view.ids[key], full_lengths.get(key, 0), what, tokenizer, tokens, full)
    return "\n".join(lines)


def _lengths(dataset, column: str) -> str:
    values = [len(ids) for ids in dataset[column]]
    return f"{statistics.median(values):g} / {max(values)}" if values else "-"


def split_summary(name: str, report: dict, dataset, args: DPOConfig) -> str:
    """The data report of one split, and its token lengths (median / max) against the recipe's limits."""
    skipped = ", ".join(f"{n} {why}" for why, n in report["skipped"].items()) or "none"
    methods = ", ".join(f"{n} {how}" for how, n in report["prompt_methods"].items()) or "none"
    formats = ", ".join(f"{n} {how}" for how, n in report["prompt_formats"].items()) or "none"
    lines = [
        f"{name}: {report['source']}",
        f"  {report['rows_read']} rows -> {report['pairs_used']} pairs; skipped: {skipped}",
        f"  prompts: {methods}; {report['prompts_inside_a_turn']} end inside a turn",
        f"  rendered: {formats}",
        f"  truncated: {report['prompt_truncated']} prompts (max_prompt_length {args.max_prompt_length}), "
        f"{report['completion_truncated']} pairs of answers (max_length {args.max_length})",
        f"  tokens, median / max: prompt {_lengths(dataset, 'prompt_input_ids')}, chosen "
        f"{_lengths(dataset, 'chosen_input_ids')}, rejected {_lengths(dataset, 'rejected_input_ids')}",
    ]
    return "\n".join(lines)


def data_overview(
    recipe: Recipe,
    tokenizer,
    rows: int = 3,
    tokens: bool = False,
    full: bool = False,
    split: str = "train",
    splits: dict[str, tuple[str, list[dict]]] | None = None,
) -> str:
    """The data report of every split and the first `rows` rows of `split` ("train" or "eval", the held-out rows
    the report measures) as the model receives them. `splits`: what `read_data(recipe)` gave, when read already."""
    splits = splits if splits is not None else read_data(recipe)
    data = load_preference_dataset(recipe.data, tokenizer, recipe.training, splits=splits)
    built = {"train": data.train, "eval": data.eval}
    out = [split_summary(name, report, built[name], recipe.training) for name, report in data.report.items()]
    if "eval" not in data.report:
        out.append("eval: none (set dataset_test_split or eval_fraction for a held-out split)")
    for name, source, split_rows, numbers in split_parts(splits, recipe.data, recipe.training):
        if name != split:
            continue
        for number in numbers[:rows]:
            view = row_view(split_rows[number], number, tokenizer, recipe.data, recipe.training)
            out.append(render_row(view, source, name, tokenizer, tokens=tokens, full=full))
    return "\n\n".join(out)
