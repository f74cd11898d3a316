"""The pairs directory as a Hub dataset: its README.md (a huggingface_hub DatasetCard saying how the pairs were
made, from the recipe and the labelling stats) and `push_pairs`, which uploads train.jsonl, test.jsonl and the card.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hf_dpo.config import Recipe
from hf_dpo.errors import quoted
from hf_dpo.files import atomic_write_text
from hf_dpo.pairs.formats import SamplingError

CARD_TEMPLATE = """
# {title}

On-policy preference pairs for DPO, made with hf_dpo's `hf-dpo sample`.

## How the pairs were made

1. For every prompt, {k} completions were sampled from the reference policy **{model}**{adapter}
   (quantization: {quantization}) with temperature {temperature}, top-p {top_p}, at most {max_new_tokens}
   new tokens, seed {seed}. Prompts were formatted as in training (the tokenizer's chat template){system}.
   A completion that stopped at {max_new_tokens} tokens without an end token is marked unfinished.
2. The judge **`{judge}`** scored every completion on its criteria ({criteria}, most important first);
   completions were ranked criterion by criterion, an unfinished one below every finished one{unfinished_rule}.
   Empty completions were never paired, and copies of one text counted as one answer.
   Pairs: {pairs_rule}{gate_rule}. Every prompt either gave pairs or was skipped for one reason: fewer than
   2 distinct non-empty completions, no finished completion, all completions ranked the same (a tie), or every
   chosen answer below the minimum.

| split | prompts | prompts with pairs | pairs | fewer than 2 distinct answers (skipped) | ties (skipped) | no finished answer (skipped) | chosen below the minimum: prompts skipped / pairs dropped | unfinished samples |
|---|---|---|---|---|---|---|---|---|
{rows}

What the pairs are made of (chosen > rejected, by criteria):

{composition}
{notes}
Columns: `prompt`, `chosen`, `rejected` (the format `hf-dpo train` reads), `score_chosen`,
`score_rejected`, `margin` (= score_chosen - score_rejected; a score is the sum of the criteria), `scores`
(all {k} scores), `criteria_chosen`, `criteria_rejected` (per criterion), `finished_chosen`,
`finished_rejected`, `index` (the prompt's line in the prompt file).

Regenerate with `hf-dpo sample {recipe}`.
"""


def write_dataset_card(directory: str | os.PathLike, recipe: Recipe, report: dict[str, Any]) -> Path:
    """README.md (a huggingface_hub DatasetCard) beside the pairs, describing how they were made.

    `report` is what `run_sampling` returns: {"splits": {split: sampling + labelling stats}, "notes": [...]}."""
    from huggingface_hub import DatasetCard

    splits = report["splits"]
    body = CARD_TEMPLATE.format(
        title=f"Preference pairs: {Path(recipe.path).stem if recipe.path else 'hf-dpo sample'}",
        **_how_sampled(recipe),
        **_how_labelled(recipe, splits),
        rows=_counts_table(splits),
        composition=_composition_tables(splits) or "*(not recorded)*",
        recipe=recipe.path or "RECIPE",
        notes="".join(f"\n{note}\n" for note in report.get("notes", [])),
    )
    card = DatasetCard(f"---\n{_card_metadata(splits).to_yaml()}\n---\n{body}")
    path = Path(directory) / "README.md"
    # Not card.save(), which truncates the old card first: a kill midway left a README without the hf-dpo mark,
    # which the next `hf-dpo sample` refuses as someone else's.
    try:
        atomic_write_text(path, str(card))
    except OSError as err:
        raise SamplingError(
            f"{path}: could not write the dataset card ({err.strerror or err}); the pairs beside it are written. Fix "
            "the disk problem and run `hf-dpo sample` again (nothing is sampled again)."
        ) from None
    return path


def _card_metadata(splits: dict[str, Any]):
    """The card's YAML header: tags, and one data file per split so `load_dataset(repo)` finds them."""
    from huggingface_hub import DatasetCardData

    return DatasetCardData(
        tags=["dpo", "preference", "synthetic", "hf-dpo"],
        task_categories=["text-generation"],
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"{s}.jsonl"} for s in splits]}
        ],
    )


def _how_sampled(recipe: Recipe) -> dict[str, Any]:
    """The template's step 1: the reference policy and the sampling settings."""
    from hf_dpo.model.loading import hub_id_for

    cfg, model = recipe.sampling, recipe.model
    return {
        "k": cfg.num_samples_per_prompt,
        "model": hub_id_for(model.model_name_or_path),
        "adapter": f" with adapter `{model.adapter_name_or_path}`" if model.adapter_name_or_path else "",
        "quantization": model.quantization,
        "temperature": cfg.sampling_temperature,
        "top_p": cfg.sampling_top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.sampling_seed,
        "system": f' and system prompt "{recipe.data.system_prompt}"' if recipe.data.system_prompt else "",
    }


def _how_labelled(recipe: Recipe, splits: dict[str, Any]) -> dict[str, Any]:
    """The template's step 2: the judge, its criteria and the rules that made pairs of the ranked answers."""
    cfg = recipe.sampling
    criteria = next((st["criteria"] for st in splits.values() if "criteria" in st), ["score"])
    return {
        "judge": recipe.report.judge,
        "criteria": ", ".join(f"`{c}`" for c in criteria),
        "unfinished_rule": " (unfinished answers were never chosen)"
        if not cfg.allow_unfinished_chosen
        else " (allow_unfinished_chosen: an unfinished answer could still be chosen over a worse one)",
        "pairs_rule": "the best vs the worst completion of each prompt"
        if cfg.pairs_per_prompt == "best_worst"
        else "every two completions that ranked differently, the higher one chosen",
        "gate_rule": f"; only pairs whose chosen answer has {cfg.min_chosen_criterion or 'the first criterion'} "
        f">= {cfg.min_chosen_score:g}"
        if cfg.min_chosen_score is not None
        else "",
    }


def _counts_table(splits: dict[str, Any]) -> str:
    """The rows of the per-split counts table ('-' where a split was sampled but not labelled)."""
    return "\n".join(
        f"| {s} | {st['prompts']} | {st.get('prompts_with_pairs', '-')} | {st.get('pairs', '-')} | "
        f"{st.get('too_few_answers', '-')} | {st.get('ties', '-')} | {st.get('no_finished_answer', '-')} | "
        f"{st.get('all_below_min_chosen', '-')} / {st.get('below_min_chosen', '-')} | {_share(st.get('composition'))} |"
        for s, st in splits.items()
    )


def _composition_tables(splits: dict[str, Any]) -> str:
    """Per split, a table of pair counts by (chosen criteria > rejected criteria)."""
    return "\n\n".join(
        f"{s}:\n\n| chosen > rejected | pairs |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in st["composition"]["by_criteria"].items())
        for s, st in splits.items()
        if st.get("composition")
    )


def _share(composition: dict[str, Any] | None) -> str:
    if not composition or not composition.get("samples"):
        return "-"
    n, total = composition["unfinished_samples"], composition["samples"]
    return f"{n} / {total} ({n / total:.0%})"


def push_pairs(
    directory: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Push a pairs directory (train.jsonl, test.jsonl, README.md) as a Hub dataset repo; returns the commit URL."""
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    directory = Path(directory)
    if not any(directory.glob("*.jsonl")):
        raise SamplingError(f"{directory} holds no .jsonl pairs to push; run `hf-dpo sample RECIPE` first.")
    # What the Hub would refuse is named before any request (huggingface_hub would send a push without a token
    # and come back with an HTTP 401).
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise SamplingError(f"{quoted(repo_id)} is not a Hub repo id ({err}). Give ORG/NAME.") from None
    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token or any(c.isspace() for c in token):
        raise SamplingError(
            "no usable Hub token (none, or one holding whitespace): a push needs a token with write access. Set "
            "HF_TOKEN (or pass token=, or run `hf auth login`)."
        )
    if constants.HF_HUB_OFFLINE:
        raise SamplingError(
            "HF_HUB_OFFLINE is set, so huggingface_hub makes no network call: unset it to push."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(directory),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=["*.jsonl", "README.md"],
        commit_message="Upload preference pairs made by hf-dpo sample",
    )
    return commit.commit_url
