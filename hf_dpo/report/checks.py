"""The report's preconditions, checked before training: its `evaluate` modules loadable when it will compute
numbers; when it will judge, its judged prompts (test_prompts_file) readable and accepted by the run's chat
template, and its judge able to score an answer; and where `hf-dpo eval` writes."""

from __future__ import annotations

from pathlib import Path

from hf_dpo.config import Recipe, RecipeError
from hf_dpo.data.rows import first_answer
from hf_dpo.errors import HfDpoError
from hf_dpo.pairs.formats import read_prompts
from hf_dpo.pairs.judges import check_judge_scores
from hf_dpo.report.build import REPORT_JSON, behaviour_skip_reason, computes_metrics
from hf_dpo.report.estimates import EvaluationError
from hf_dpo.report.evaluate_offline import preload_report_modules


def check_report(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """The report's `evaluate` modules loaded now, when the report will compute numbers with them (the report's
    own decision, `hf_dpo.report.build.computes_metrics`; about a second, taken from the end of the run:
    they stay loaded). EvaluationError when they cannot be (no writable cache nor temporary directory), before
    training rather than after it."""
    report = recipe.report
    has_eval = _has_eval(recipe, splits)
    if computes_metrics(has_eval, report.test_prompts_file, report.judge, report.eval_num_generations):
        preload_report_modules()


def check_report_prompts(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """test_prompts_file, read as the report will read it when it judges generations on it (its own decision,
    `hf_dpo.report.build.behaviour_skip_reason`): a missing, broken or empty file is named now, not after
    training, when the card and the push are still to come."""
    cfg, report = recipe.data, recipe.report
    check_judged_prompts(
        report.test_prompts_file,
        report.judge,
        report.eval_num_generations,
        _has_eval(recipe, splits),
        cfg.prompt_column,
    )


def check_report_judge(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> None:
    """When the report will judge (`behaviour_skip_reason`), its judge scores the first train pair's prompt and
    chosen answer now (`hf_dpo.pairs.judges.check_judge_scores`): a judge that raises or returns no finite number
    is named before training rather than at the report's first score after it."""
    report = recipe.report
    skipped = behaviour_skip_reason(
        _has_eval(recipe, splits), report.test_prompts_file, report.judge, report.eval_num_generations
    )
    if skipped is None:
        check_judge_scores(report.judge, *first_answer(recipe, splits))


def check_report_prompts_template(
    recipe: Recipe, splits: dict[str, tuple[str, list[dict]]], tokenizer
) -> None:
    """The judged prompts of test_prompts_file (the first eval_num_generations, as the report takes them) through
    the run's tokenizer and chat template, as `hf_dpo.report.prompts.prompts_from_file` formats them after
    training: a prompt the template refuses is named now. Tokenizer only; after `check_report_prompts`."""
    from hf_dpo.report.prompts import prompts_from_file

    cfg, report = recipe.data, recipe.report
    path = report.test_prompts_file
    skipped = behaviour_skip_reason(
        _has_eval(recipe, splits), path, report.judge, report.eval_num_generations
    )
    if not path or skipped:
        return
    try:
        prompts_from_file(path, tokenizer, cfg, report.eval_num_generations)
    except HfDpoError as err:
        raise RecipeError(f"key 'test_prompts_file' (the report's judged prompts): {err}") from None


def _has_eval(recipe: Recipe, splits: dict[str, tuple[str, list[dict]]]) -> bool:
    """Whether the run has held-out pairs: check_data has made sure a held-out split it finds, or
    eval_fraction's share, is not empty."""
    cfg = recipe.data
    return bool(cfg.dataset_test_split and cfg.dataset_test_split in splits) or cfg.eval_fraction > 0


def check_judged_prompts(
    path: str | None, judge, num_generations: int, has_eval: bool = True, prompt_column: str = "prompt"
) -> None:
    """The report's prompt file (test_prompts_file) read as the report reads it, when it will judge on it."""
    if not path or behaviour_skip_reason(has_eval, path, judge, num_generations):
        return
    try:
        read_prompts(path, prompt_column)  # as hf_dpo.report.prompts.prompts_from_file reads it
    except HfDpoError as err:
        raise RecipeError(f"key 'test_prompts_file' (the report's judged prompts): {err}") from None


def report_elsewhere(run_dir: str | Path, output_dir: str | Path | None) -> bool:
    """Whether `hf-dpo eval --output-dir` writes the report somewhere else than into the run dir."""
    return output_dir is not None and Path(output_dir).resolve() != Path(run_dir).resolve()


def check_report_dir(
    run_dir: str | Path, test_prompts_file: str | None, output_dir: str | Path | None
) -> None:
    """Where `hf-dpo eval` writes, checked before the model loads: a report on other prompts goes to a directory
    of its own (into the run dir it would replace the run's report and the numbers its card tells), one that
    holds no other report; and the prompts file is there."""
    elsewhere = report_elsewhere(run_dir, output_dir)
    if test_prompts_file is not None:
        if not elsewhere:
            raise EvaluationError(
                f"--test-prompts-file {test_prompts_file}: a report on other prompts than the run's would replace "
                f"the report in {run_dir} and the numbers its card tells; give --output-dir DIR for it."
            )
        if not Path(test_prompts_file).is_file():
            raise EvaluationError(f"--test-prompts-file {test_prompts_file}: no such file.")
    if elsewhere and (Path(output_dir) / REPORT_JSON).exists():
        raise EvaluationError(
            f"--output-dir {output_dir} already holds a report ({REPORT_JSON}); give a new directory or remove "
            "that one."
        )
