"""Everything a run will need, checked before the model loads: fail in a second, not after minutes of work.

    preflight(recipe)              # `hf-dpo train`: called by run.run_training before load_policy
    preflight_sampling(recipe)     # `hf-dpo sample`: prompts, judge, where samples and pairs go
    check_run_settings(recipe)     # `preflight` without the data (`hf-dpo iterate`: pairs not sampled yet)

This is the checklist: each check lives beside what it guards and is called here in order, each raising an
`HfDpoError` subclass that names the file, row or key and what to do:
- recipe values (types, ranges, choices): already done when the recipe was read (hf_dpo.validate);
- places (`config.places`): the run dir writable (created for the check and removed again: a recipe that
  fails leaves no run dir), local model and adapter paths present;
- the model (`model.checks`): a model that is no adapter, an adapter that is one, a reference model of the
  policy's vocabulary, LoRA targets, attention;
- training (`train.setup`): a checkpoint to resume, report_to integrations installed; the Hub
  (`hub.settings`): a repo id and a token when the recipe pushes;
- the data (`data.reading`, `data.rows`): every split's file readable and every row well-formed (columns,
  types, message roles, empty or identical responses), the held-out split non-empty, eval_fraction leaving
  pairs on both sides, a held-out split for an eval_strategy;
- the judge (`pairs.judges`): `module:function` imported, `rm:<local path>` present;
- the reference-log-prob cache dir (`train.ref_cache`): writable, else a warning and the cache is off;
- the report (`report.checks`): its `evaluate` modules loaded now when it will compute numbers, its judged
  prompts readable when it will judge on them (and, once the tokenizer is loaded, accepted by the chat template),
  its judge tried on the first pair's prompt and chosen answer (one that raises or returns no number is named
  now, not after training);
- last, the tokenizer (no weights: about a second) and `hf_dpo.data`'s own pipeline over every row used: the
  chat template applied (a template that refuses a row names the file, row and column), tokenized and
  truncated (a split with no pair left names max_length / max_prompt_length). The tokenized data is returned,
  so the run does not tokenize it twice.
"""

from __future__ import annotations

import os
from pathlib import Path

from hf_dpo.config.errors import RecipeError
from hf_dpo.config.places import check_local_path, check_writable_dir
from hf_dpo.config.recipe import Recipe
from hf_dpo.data.dataset import PreferenceData, load_preference_dataset
from hf_dpo.data.reading import read_data
from hf_dpo.data.rows import check_data, check_eval_strategy
from hf_dpo.data.templates import checked_prompt_token_ids
from hf_dpo.hub.settings import check_push
from hf_dpo.model.checks import (
    check_attn_implementation,
    check_lora_targets,
    check_model_and_adapter,
    check_ref_model,
    load_checked_tokenizer,
)
from hf_dpo.pairs.judges import check_judge
from hf_dpo.report.checks import (
    check_report,
    check_report_judge,
    check_report_prompts,
    check_report_prompts_template,
)
from hf_dpo.train.ref_cache import check_ref_cache
from hf_dpo.train.setup import check_no_run_replaced, check_report_to, check_resume


def preflight(recipe: Recipe) -> PreferenceData:
    """Check a training recipe end to end without loading a model's weights. Returns the tokenized train and
    held-out data (what `hf_dpo.data.load_preference_dataset` gives). Raises RecipeError / DataError /
    JudgeError."""
    check_run_settings(recipe)
    splits = read_data(recipe)
    check_data(recipe, splits)  # tokenizer-free: a malformed row is named before the tokenizer loads
    check_eval_strategy(recipe, splits)
    check_report(recipe, splits)
    check_report_prompts(recipe, splits)
    check_report_judge(recipe, splits)
    data = tokenize_data(recipe, splits)
    check_report_prompts_template(recipe, splits, data.tokenizer)
    return data


def check_run_settings(recipe: Recipe) -> None:
    """What a training run needs besides its data, checked without reading it: the run dir, local model and
    adapter paths, the model's files, LoRA targets, attention, resuming, an existing run not replaced, report_to,
    the Hub push, the judge, the reference-log-prob cache. (`hf-dpo iterate` checks a round that will train on
    pairs not sampled yet with this.)"""
    args = recipe.training
    if int(os.environ.get("RANK", "0")) == 0:  # only the main process writes the run dir
        check_writable_dir(args.output_dir, "output_dir")
    check_local_path(recipe.model.model_name_or_path, "model_name_or_path")
    check_local_path(recipe.model.adapter_name_or_path, "adapter_name_or_path")
    check_local_path(recipe.model.ref_model_name_or_path, "ref_model_name_or_path")
    check_model_and_adapter(recipe.model)
    check_ref_model(recipe.model)
    check_lora_targets(recipe.model.model_name_or_path, tuple(recipe.model.lora_target_modules))
    check_attn_implementation(recipe.model.attn_implementation)
    check_resume(args)
    check_no_run_replaced(args)
    check_report_to(args)
    check_push(args)
    if recipe.report.judge is not None:  # an empty one too: the report would fail on it after training
        check_judge(recipe.report.judge)
    check_ref_cache(args)


def preflight_sampling(recipe: Recipe) -> None:
    """Check a sampling recipe before the reference model loads: prompts files (read, and each prompt through the
    tokenizer's chat template), judge (and min_chosen_criterion among its criteria), output places, and that no
    output file would replace another or other data."""
    from hf_dpo.pairs.formats import check_output_files, read_prompts, sampling_splits
    from hf_dpo.pairs.labelling import check_chosen_gate

    cfg = recipe.sampling
    if not cfg.prompts_file:
        raise RecipeError(
            "prompts_file is not set: give a .txt (one prompt a line) or a .jsonl with a prompt column."
        )
    prompt_files = {"prompts_file": cfg.prompts_file, "test_prompts_file": recipe.report.test_prompts_file}
    prompts = {
        key: read_prompts(path, recipe.data.prompt_column) for key, path in prompt_files.items() if path
    }
    for key in ("samples_file", "pairs_file"):
        path = getattr(cfg, key)
        if path:
            check_writable_dir(Path(path).parent, f"the directory of {key}")
    check_writable_dir(recipe.training.output_dir, "output_dir")
    check_output_files(recipe, list(sampling_splits(recipe)))
    check_local_path(recipe.model.model_name_or_path, "model_name_or_path")
    check_local_path(recipe.model.adapter_name_or_path, "adapter_name_or_path")
    check_model_and_adapter(recipe.model)
    check_attn_implementation(recipe.model.attn_implementation)
    if recipe.report.judge is not None:  # an empty one too: labelling would fail on it after sampling
        check_judge(recipe.report.judge)
    check_chosen_gate(recipe.report.judge, cfg.min_chosen_score, cfg.min_chosen_criterion)
    tokenizer = load_checked_tokenizer(recipe)  # no weights: the prompts as the sampler will template them
    for key, rows in prompts.items():
        checked_prompt_token_ids(rows, tokenizer, recipe.data, f"key '{key}': {prompt_files[key]}")


def tokenize_data(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> PreferenceData:
    """Every row the run will use through `hf_dpo.data`'s pipeline (chat template, tokenizer, truncation), with
    the run's tokenizer: a row the template refuses, or a split that truncation empties, is named now."""
    return load_preference_dataset(
        recipe.data, load_checked_tokenizer(recipe), recipe.training, splits=splits
    )
