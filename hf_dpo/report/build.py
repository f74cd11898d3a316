"""The evaluation report of a run: held-out preference metrics, judged generations, plots.

    hf-dpo eval runs/demo --judge hf_dpo.pairs.demo_task:judge      # or hf_dpo.run.evaluate_run("runs/demo", judge=...)

Two questions, answered separately because they can disagree (reward accuracy is not behaviour):

1. Likelihood: on the held-out pairs, does the policy rank chosen above rejected? From the four per-pair
   log-probs, with the implicit reward r = beta * (log pi(y|x) - log pi_ref(y|x)) (DPO paper, eq. 5):
   reward accuracy, mean margin, chosen/rejected rewards and the log-prob shift from the reference.
2. Behaviour: on the held-out prompts, greedy answers of the policy and of the reference (adapters off; a full
   fine-tune's reference is its starting model, reloaded: `reference_description`), same decoding, each until its end token or the cap: a cut answer is reported as unfinished) are scored
   by one judge on its criteria: per-criterion rates with paired intervals of the difference, win/tie/loss,
   a length-controlled win rate, unfinished and looping shares, and the one-line verdict on the primary
   criterion (hf_dpo.report.verdict), with warnings for likelihood displacement and a large KL estimate.

Every number carries n and a 95% interval: Wilson for proportions, a fixed-seed percentile bootstrap for
means. Output in the run dir: eval_report.json (schema_version), eval_report.md, plots/*.png, the headline
numbers in `evaluate`'s results format (evaluate_results.json) and, when generations were judged, every one of
them with its values and outcome (eval_generations.jsonl, hf_dpo.report.generations_file).

The pieces: hf_dpo.report.estimates (intervals, metrics: pure), computed through the `evaluate` modules of
hf_dpo.report.evaluate_offline; hf_dpo.report.prompts (which prompts), hf_dpo.report.generation (answers of
policy and reference), hf_dpo.report.behaviour (judging and comparing them), hf_dpo.report.plots (PNGs),
hf_dpo.report.markdown (markdown shared with the model card). This module reads the run dir, calls them and
writes the report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hf_dpo.files import atomic_write_text
from hf_dpo.report import evaluate_offline
from hf_dpo.report.estimates import LOGPS_KEYS, EvaluationError, as_logps_array, plain, rounding_of
from hf_dpo.report.generations_file import write_generations
from hf_dpo.report.options import DEFAULT_OPTIONS, ReportOptions
from hf_dpo.report.prompts import prompt_key, training_prompt_keys
from hf_dpo.report.verdict import verdict, warnings
from hf_dpo.train.loss import implicit_rewards

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: criteria, unfinished/looping shares, length control, verdict, warnings
REPORT_JSON = "eval_report.json"
REPORT_MD = "eval_report.md"
PLOTS_DIR = "plots"


# ----------------------------------------------------------------------------------------------------------
# The report


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise EvaluationError(f"{path} is missing: {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvaluationError(f"{path} is not valid JSON ({err}); re-run training to rewrite it.") from None


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(run_info, log_history) of a finished run, with errors that name the missing file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EvaluationError(
            f"run dir {run_dir} does not exist; give the output_dir of an `hf-dpo train` run."
        )
    info = _read_json(
        run_dir / "run_info.json", "it is written at the end of `hf-dpo train`; is the run finished?"
    )
    state = _read_json(run_dir / "trainer_state.json", "it is written at the end of `hf-dpo train`.")
    history = state.get("log_history")
    if not isinstance(history, list):
        raise EvaluationError(f"{run_dir / 'trainer_state.json'} has no 'log_history' list.")
    return info, history


def reference_description(info: dict[str, Any]) -> str:
    """The reference policy of a run's report, in words (eval_report.json's `reference`, the report's text)."""
    if info.get("ref_model"):
        return f"the reference model `{info['ref_model']}` (ref_model_name_or_path)"
    if info.get("use_peft", True):
        return "the base with adapters off"
    return f"the starting model `{info.get('base_model')}`, reloaded: a full fine-tune"


def training_summary(info: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    train = [h for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h]
    return {
        "steps": max((h["step"] for h in history if "step" in h), default=0),
        "train_runtime_s": info.get("train_runtime_s"),
        "last_train_log": train[-1] if train else None,
        "last_eval_log": evals[-1] if evals else None,
        "eval_before": info.get("eval_before"),
        "eval_after": info.get("eval_after"),
    }


def preference_section(
    pair_logps: dict[str, Any], beta: float | None, run_dir: Path, confidence: float, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """(the report's preference part, (n,) reward margins) from the held-out log-probs, the metrics computed by
    the `dpo_preference` evaluate module."""
    if beta is None:
        raise EvaluationError(
            f"{run_dir / 'run_info.json'} has no 'beta'; it is needed for the implicit rewards."
        )
    missing = [k for k in LOGPS_KEYS if k not in pair_logps]
    if missing:
        raise EvaluationError(f"pair_logps lacks {missing}; DPOTrainer.pair_logps returns all four.")
    logps = {k: as_logps_array(k, pair_logps[k]) for k in LOGPS_KEYS}  # (n,) each, checked finite
    sizes = [v.size for v in logps.values()]
    if len(set(sizes)) != 1 or sizes[0] == 0:  # said here: evaluate's own message would not name the keys
        raise EvaluationError(
            f"per-pair log-probs must have the same non-zero length, got {sizes} for {LOGPS_KEYS}."
        )
    metrics = evaluate_offline.compute(
        "dpo_preference",
        **{k: v.tolist() for k, v in logps.items()},
        beta=beta,
        rounding=rounding_of(pair_logps),
        confidence=confidence,
        seed=seed,
    )
    chosen_rewards, rejected_rewards = implicit_rewards(*logps.values(), beta=beta)  # (n,), (n,)
    return {
        "n": metrics["reward_accuracy"]["n"],
        "beta": beta,
        "metrics": metrics,
    }, chosen_rewards - rejected_rewards


def write_plots(
    report_dir: Path,
    history: list[dict[str, Any]],
    preference: dict[str, Any] | None,
    behaviour: dict[str, Any] | None,
    margins: np.ndarray | None,
    objective: str | None = None,
) -> list[Path]:
    """plots/*.png of the report: training curves always (`objective`: what the loss sums), the rest when their
    numbers exist."""
    from hf_dpo.report import plots

    (report_dir / PLOTS_DIR).mkdir(exist_ok=True)
    plot_files = [plots.training_curves(history, report_dir / PLOTS_DIR / "training_curves.png", objective)]
    if preference is not None or behaviour is not None:
        plot_files.append(
            plots.eval_summary(preference, behaviour, report_dir / PLOTS_DIR / "eval_summary.png")
        )
    if margins is not None:
        accuracy = preference["metrics"]["reward_accuracy"]["value"]
        plot_files.append(
            plots.margin_histogram(margins, accuracy, report_dir / PLOTS_DIR / "heldout_margins.png")
        )
    return plot_files


def build_report(
    run_dir: str | Path,
    *,
    pair_logps: dict[str, Any] | None = None,
    behaviour: dict[str, Any] | None = None,
    behaviour_skipped: str | None = None,
    confidence: float = 0.95,
    seed: int = 0,
    training_overlap: dict[str, int] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write eval_report.json, eval_report.md, evaluate_results.json and plots/*.png into `out_dir` (default:
    `run_dir`, whose run_info.json and trainer_state.json the report reads); return the report dict.

    `pair_logps` is DPOTrainer.pair_logps(eval_dataset); `behaviour` is judged_generations(...). Either may be
    None (the report says why that part is missing). The rows of `behaviour["generations"]` go to
    eval_generations.jsonl, not into the report; without them, an earlier report's file is removed.
    `training_overlap`: held-out prompts that were trained on (`training_overlap(...)`), None if not checked.
    """
    from hf_dpo.report.markdown import render_markdown

    run_dir = Path(run_dir)
    info, history = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    generations = (behaviour or {}).get("generations")
    if behaviour is not None:
        behaviour = {k: v for k, v in behaviour.items() if k != "generations"}  # the caller's dict untouched
    preference, margins = (
        preference_section(pair_logps, info.get("beta"), run_dir, confidence, seed)
        if pair_logps is not None
        else (None, None)
    )
    plot_files = write_plots(out, history, preference, behaviour, margins, info.get("loss_type"))
    # Once every number is computed (a report that fails leaves the earlier report's file beside it), and before
    # the report that names it (a reader never finds a report naming a file that is not there yet).
    generations_file = write_generations(out, generations)
    report = {
        "schema_version": SCHEMA_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hf_dpo_version": info.get("hf_dpo_version"),
        "base_model": info.get("base_model"),
        "dataset": info.get("dataset"),
        "confidence": confidence,
        "reference": reference_description(info),
        "preference": preference,
        "preference_skipped": None
        if preference
        else "no held-out pairs (set dataset_test_split or eval_fraction)",
        "behaviour": behaviour,
        "behaviour_skipped": None if behaviour else (behaviour_skipped or "no judge given (--judge SPEC)"),
        "verdict": behaviour["verdict"] if behaviour else None,
        "training": training_summary(info, history),
        "plots": [str(p.relative_to(out)) for p in plot_files],
        "generations_file": generations_file,
        "training_overlap": training_overlap,
    }
    report = plain(report)
    report["warnings"] = warnings(report)
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / REPORT_MD, render_markdown(report, info))
    evaluate_offline.save_results(out, evaluate_offline.headline_results(report))
    logger.info("Wrote %s, %s and %d plots in %s", REPORT_JSON, REPORT_MD, len(plot_files), out)
    return report


def behaviour_skip_reason(
    has_eval: bool, prompts_file: str | None, judge, num_generations: int
) -> str | None:
    """Why the judged generations cannot run (the report prints it), or None when they can."""
    if not has_eval and not prompts_file:
        return "no held-out prompts (set dataset_test_split, eval_fraction or test_prompts_file)"
    if judge is None:
        return "no judge given (--judge SPEC, or `judge:` in the recipe)"
    if num_generations <= 0:
        return "num_generations is 0"
    return None


def computes_metrics(has_eval: bool, prompts_file: str | None, judge, num_generations: int) -> bool:
    """Whether the report computes numbers through its `evaluate` modules: the held-out pairs' preference
    metrics, or the judged comparison (which runs unless `behaviour_skip_reason` says why not). Preflight asks
    this before training, so the modules are known to load before the run starts."""
    return has_eval or behaviour_skip_reason(has_eval, prompts_file, judge, num_generations) is None


def evaluate_model(
    run_dir: str | Path,
    model,
    tokenizer,
    eval_dataset,
    *,
    pair_logps_fn: Callable[[Any], dict[str, Any]] | None,
    judge=None,
    judge_name: str | None = None,
    options: ReportOptions = DEFAULT_OPTIONS,
    data_config=None,
    training_prompts: set[str] | None = None,
    load_reference: Callable[[], Any] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Both halves of the evaluation on an in-memory model, then the report (what `train` calls at the end),
    written into `out_dir` (default: `run_dir`).

    The judged prompts are the first `options.num_generations` of `options.prompts_file` (the recipe's
    test_prompts_file: every held-out prompt, also those without a pair, read with `data_config`'s prompt
    column and template) when given, else the eval split's distinct prompts.
    `training_prompts`: the train split's prompts (report.prompts.training_prompt_keys), to count held-out
    prompts that were trained on; None: not checked.
    `load_reference`: returns the reference the judged answers are compared with when it is no adapter switch of
    `model` (a full fine-tune's starting model), called only when answers are judged; None: `model` with its
    adapters off.
    """
    from hf_dpo.report.behaviour import judged_generations
    from hf_dpo.report.prompts import heldout_prompts, prompts_from_file

    has_eval = eval_dataset is not None and len(eval_dataset) > 0
    pair_logps = pair_logps_fn(eval_dataset) if (has_eval and pair_logps_fn is not None) else None
    skipped = behaviour_skip_reason(has_eval, options.prompts_file, judge, options.num_generations)
    behaviour, prompts = None, []
    if skipped is None:
        prompts = (
            prompts_from_file(options.prompts_file, tokenizer, data_config, options.num_generations)
            if options.prompts_file
            else heldout_prompts(eval_dataset, tokenizer, options.num_generations)
        )
        reference = load_reference() if load_reference is not None else None
        behaviour = judged_generations(model, tokenizer, prompts, judge, options, reference)
        del reference  # a reloaded starting model is freed before the report is written
        behaviour["judge"] = judge_name or getattr(judge, "name", None) or repr(judge)
    overlap = training_overlap(prompts, eval_dataset if has_eval else None, training_prompts, tokenizer)
    if behaviour is not None and overlap is not None:
        behaviour["prompts_in_training"] = overlap["judged_prompts"]
        behaviour["verdict"] = verdict(behaviour)  # its line says how many of its prompts were trained on
    return build_report(
        run_dir,
        pair_logps=pair_logps,
        behaviour=behaviour,
        behaviour_skipped=skipped,
        confidence=options.confidence,
        seed=options.seed,
        training_overlap=overlap,
        out_dir=out_dir,
    )


def training_overlap(
    prompts: list[tuple[str, list[int]]], eval_dataset, training_prompts: set[str] | None, tokenizer
) -> dict[str, int] | None:
    """How many judged prompts and held-out pairs have a prompt the policy was trained on (by prompt_key), out
    of how many; None when the training prompts are not known. A held-out set that holds training prompts
    measures what the policy was trained on, not how it does on prompts it has not seen."""
    if training_prompts is None:
        return None
    judged = [prompt_key(ids, tokenizer) in training_prompts for _, ids in prompts]
    tokenized = eval_dataset is not None and "prompt_input_ids" in getattr(eval_dataset, "column_names", ())
    pair_prompts = eval_dataset["prompt_input_ids"] if tokenized else []
    pairs = [prompt_key(ids, tokenizer) in training_prompts for ids in pair_prompts]
    return {
        "judged_prompts": sum(judged),
        "judged_prompts_of": len(judged),
        "eval_pairs": sum(pairs),
        "eval_pairs_of": len(pairs),
    }


def evaluate_trainer(
    trainer,
    judge=None,
    options: ReportOptions = DEFAULT_OPTIONS,
    *,
    run_dir: str | Path | None = None,
    pair_logps: dict | None = None,
    data_config=None,
    load_reference: Callable[[], Any] | None = None,
) -> dict[str, Any] | None:
    """The evaluation at the end of `hf-dpo train`, on the in-memory model (no reload).

    `pair_logps`: the held-out log-probs if the caller already computed them for the current model.
    `load_reference`: `evaluate_model`'s (a full fine-tune's starting model, loaded when answers are judged).

    Call on every process after run_info.json and trainer_state.json are written: the held-out log-probs are
    gathered across processes; generation, judging and writing happen on the main process only (the others
    return None). `judge` is a spec ("module:function", "rm:<path>"), a callable or a Judge, or None.
    """
    eval_dataset = trainer.eval_dataset
    has_eval = eval_dataset is not None and len(eval_dataset) > 0
    if has_eval and pair_logps is None:
        pair_logps = trainer.pair_logps(eval_dataset)  # collective: every rank takes part
    if not trainer.is_world_process_zero():
        return None
    judge_obj, judge_name = resolve_judge(judge)
    return evaluate_model(
        run_dir or trainer.args.output_dir,
        trainer.model,
        trainer.processing_class,
        eval_dataset,
        pair_logps_fn=(lambda _: pair_logps) if has_eval else None,
        judge=judge_obj,
        judge_name=judge_name,
        options=options,
        data_config=data_config,
        training_prompts=training_prompt_keys(trainer.train_dataset, trainer.processing_class),
        load_reference=load_reference,
    )


def resolve_judge(spec):
    """(judge, printable name) from a spec string, a callable or a Judge; (None, None) when spec is None."""
    if spec is None:
        return None, None
    if hasattr(spec, "score"):  # already a Judge
        return spec, getattr(spec, "name", None) or type(spec).__name__
    from hf_dpo.pairs.judges import load_judge

    name = spec if isinstance(spec, str) else getattr(spec, "__qualname__", None) or type(spec).__name__
    return load_judge(spec), name
