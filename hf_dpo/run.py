"""The one place that wires the path: recipe -> policy + data -> DPOTrainer -> report -> card -> Hub.

    run_training("recipes/demo.yaml", ["--max_steps", "10"])     # `hf-dpo train`
    evaluate_run("runs/demo")                                     # `hf-dpo eval`: reload a run, rewrite its report

`hf_dpo.train` trains, `hf_dpo.report` measures, `hf_dpo.hub` publishes; none of them imports another's
higher step, so this module is where they meet.

The run dir (`output_dir`) receives, in order: `recipe.yaml` (before anything can fail), checkpoints,
the adapter (or, for a full fine-tune, `use_peft: false`, the whole model: config.json, model*.safetensors) and
tokenizer, `trainer_state.json`, `run_info.json` (what was trained, how, how long, the
held-out metrics before and after). Only the main process writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from hf_dpo import __version__
from hf_dpo.config.recipe import Recipe, load_recipe
from hf_dpo.data.dataset import PreferenceData, load_preference_dataset
from hf_dpo.errors import HfDpoError
from hf_dpo.files import atomic_write_text
from hf_dpo.hub.card import framework_versions
from hf_dpo.hub.checkpoints import HubCheckpointCallback
from hf_dpo.hub.push import push_run
from hf_dpo.hub.run_card import card_kept, card_was_edited, refresh_card
from hf_dpo.hub.settings import take_hub_settings
from hf_dpo.model.loading import (
    hub_id_for,
    load_base_model,
    load_policy,
    load_ref_model,
    load_tokenizer,
    pick_dtype,
)
from hf_dpo.model.memory import peak_memory
from hf_dpo.model.reference import with_adapter
from hf_dpo.model_files import MODEL_DIR_FIX, adapter_dir_problem, is_local_dir, model_dir_problem
from hf_dpo.pairs.formats import read_prompts
from hf_dpo.pairs.judges import check_judge
from hf_dpo.preflight import preflight
from hf_dpo.report import evaluate_offline
from hf_dpo.report.build import evaluate_model, evaluate_trainer, resolve_judge
from hf_dpo.report.checks import check_judged_prompts, check_report_dir, report_elsewhere
from hf_dpo.report.estimates import LOGPS_KEYS, rounding_of
from hf_dpo.report.markdown import POLICY_IS_REFERENCE, console_summary, policy_is_reference
from hf_dpo.report.options import ReportOptions
from hf_dpo.report.prompts import training_prompt_keys
from hf_dpo.train.trainer import DPOTrainer

logger = logging.getLogger(__name__)


class RunDirError(HfDpoError, FileNotFoundError):
    """A directory given as a run is not a finished `hf-dpo train` run."""


class ReportAfterTrainingError(HfDpoError, RuntimeError):
    """The report failed after training had finished and been saved: says how to make it from the saved run."""


# What to do about a run dir whose own files are damaged.
RESTORE_RUN = "Copy the run dir again from where it was trained, or train it again."


def hardware_summary() -> str:
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{n}x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def preference_summary(logps: dict[str, torch.Tensor], beta: float) -> dict[str, float | bool]:
    """Held-out numbers for the log and run_info.json: reward accuracy (strict, as TRL) and mean margin, as
    computed by the shipped `dpo_preference` evaluate module (the report's code path), whether the policy
    itself gives the chosen completion more probability per token than the rejected one, and whether it still
    equals the reference (the report's own test of it)."""
    metrics = evaluate_offline.compute(
        "dpo_preference",
        **{key: logps[key].tolist() for key in LOGPS_KEYS},
        beta=beta,
        rounding=rounding_of(logps),
    )
    per_token_chosen = logps["policy_chosen_logps"] / logps["chosen_lengths"].clamp(min=1)
    per_token_rejected = logps["policy_rejected_logps"] / logps["rejected_lengths"].clamp(min=1)
    return {
        "num_pairs": metrics["reward_accuracy"]["n"],
        "reward_accuracy": metrics["reward_accuracy"]["value"],
        "reward_margin": metrics["rewards/margins"]["value"],
        "policy_prefers_chosen": (per_token_chosen > per_token_rejected).float().mean().item(),
        "policy_is_reference": policy_is_reference(metrics),
    }


def _configure_precision(recipe: Recipe) -> torch.dtype:
    dtype = pick_dtype(recipe.model.torch_dtype)
    args = recipe.training
    if torch.cuda.is_available() and not (args.bf16 or args.fp16):
        # Mixed precision follows the compute dtype on GPU; CPU stays in float32 (no autocast).
        args.bf16, args.fp16 = dtype == torch.bfloat16, dtype == torch.float16
    logger.info("Compute dtype: %s on %s", str(dtype).replace("torch.", ""), hardware_summary())
    return dtype


def build_trainer(
    recipe: Recipe, callbacks=None, data: PreferenceData | None = None
) -> tuple[DPOTrainer, dict]:
    """Load policy and data for a recipe and wrap them in a DPOTrainer. Returns (trainer, data report).
    `data`: the recipe's data, tokenized already (by preflight)."""
    args = recipe.training
    set_seed(args.seed)  # the LoRA initialisation is part of the run
    model, tokenizer = load_policy(
        recipe.model,
        gradient_checkpointing=args.gradient_checkpointing,
        tokenizer=data.tokenizer if data is not None else None,  # the one preflight tokenized with
    )
    if data is None:
        data = load_preference_dataset(recipe.data, tokenizer, args)
    trainer = DPOTrainer(
        model=model,
        ref_model=load_ref_model(recipe.model),  # None: the policy before training (hf_dpo.train.reference)
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    return trainer, data.report


def run_training(recipe_path: str | None, overrides: list[str] | None = None) -> Path:
    """`hf-dpo train`: recipe -> trained adapter + run_info.json -> report -> card -> Hub (when asked)."""
    recipe = load_recipe(recipe_path, overrides)
    # Data (templated and tokenized), judge, run dir, cache dir: every check that needs no weights, before loading any.
    data = preflight(recipe)
    args = recipe.training
    out = Path(args.output_dir)
    dtype = _configure_precision(recipe)
    if int(os.environ.get("RANK", "0")) == 0:
        write_recipe(out, recipe)
    started = time.time()
    # The Hub token leaves the arguments before any Trainer sees them (training_args.bin is a pickle);
    # hf_dpo pushes itself, after local files are written.
    hub = take_hub_settings(args)
    callbacks = [HubCheckpointCallback(hub)] if hub and hub.strategy != "end" else None
    trainer, data_report = build_trainer(recipe, callbacks=callbacks, data=data)
    # Before the first step the policy is the reference (a fresh LoRA is a no-op; a starting adapter is its own
    # reference; a full fine-tune's is the model as loaded), so one reference pass gives both sides, unless a
    # checkpoint is resumed or the recipe names a reference model of its own.
    same = not args.resume_from_checkpoint and not recipe.model.ref_model_name_or_path
    eval_before, _ = held_out(trainer, "before", policy_is_reference=same)
    resumed = resumed_from(args.resume_from_checkpoint, out)
    if resumed:
        logger.info(
            "Resuming from %s, saved at step %d.", args.resume_from_checkpoint, resumed["global_step"]
        )
    train_started = time.time()
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    runtimes = {"train_runtime_s": round(time.time() - train_started, 1)}
    with card_kept(out):  # PEFT rewrites README.md; a hand-edited card survives, ours is rewritten at the end
        trainer.save_model(str(out))
    trainer.save_state()
    eval_after, after_logps = held_out(trainer, "after")  # one policy pass, shared with the report below
    if trainer.is_world_process_zero():
        runtimes["total_runtime_s"] = round(time.time() - started, 1)
        info = run_info(
            recipe, trainer, result, dtype, data_report, runtimes, eval_before, eval_after, resumed
        )
        atomic_write_text(out / "run_info.json", json.dumps(info, indent=2))
        _print_summary(out, info)
    try:
        report = evaluate_trainer(
            trainer,
            recipe.report.judge,
            ReportOptions.from_recipe(recipe.report, seed=args.seed),
            pair_logps=after_logps,
            data_config=recipe.data,
            load_reference=(lambda: report_reference(recipe)) if has_report_reference(recipe) else None,
        )
    except HfDpoError as err:  # what the preflight cannot know: the trained answers (a judge failing on one)
        raise ReportAfterTrainingError(
            f"{err} The training is not lost: {out} holds the trained run. Fix this and run `hf-dpo eval {out}` "
            f"for its report and card{f', then `hf-dpo push {out} --repo-id {hub.repo_id}`' if hub else ''}."
        ) from None
    if trainer.is_world_process_zero():
        publish(out, report, hub)
    return out


def has_report_reference(recipe: Recipe) -> bool:
    """Whether the report's reference is a model of its own (`report_reference`), not the policy's adapters off."""
    return bool(recipe.model.ref_model_name_or_path) or not recipe.model.use_peft


def report_reference(recipe: Recipe):
    """The reference the report compares the policy with, as a model of its own: the recipe's
    ref_model_name_or_path, else a full fine-tune's starting model, each loaded again (the trainer's copy may
    have moved with sync_ref_model); None where it is the policy's adapters off."""
    if recipe.model.ref_model_name_or_path:
        return load_ref_model(recipe.model)
    return None if recipe.model.use_peft else starting_model(recipe)


def starting_model(recipe: Recipe):
    """A full fine-tune's reference for its report: the model the recipe starts from, loaded again (the trained
    one has moved away from it), frozen, in eval mode."""
    logger.info(
        "The report's reference: the starting model %s, loaded again (full fine-tune).",
        recipe.model.model_name_or_path,
    )
    model = load_base_model(recipe.model)
    model.requires_grad_(False)
    return model.eval()


def write_recipe(out: Path, recipe: Recipe) -> None:
    """recipe.yaml first, before anything can fail: exactly what runs, re-runnable as it is."""
    atomic_write_text(
        out / "recipe.yaml",
        f"# Re-run: hf-dpo train {out / 'recipe.yaml'} --output_dir NEW_DIR (or --overwrite_output_dir true to "
        f"replace this run)\n# From: {recipe.path or 'command-line keys'}\n" + recipe.to_yaml(),
    )


def held_out(trainer: DPOTrainer, when: str, policy_is_reference: bool = False):
    """(summary, per-pair log-probs) of the eval split, logged; (None, None) without one."""
    if trainer.eval_dataset is None:
        return None, None
    logps = trainer.pair_logps(policy_is_reference=policy_is_reference)
    summary = preference_summary(logps, trainer.args.beta)
    logger.info("Held-out %s training: %s", when, _fmt(summary))
    return summary, logps


def resumed_from(checkpoint: str | None, out: Path) -> dict[str, Any] | None:
    """The checkpoint a run resumes from (preflight resolved `true` to the last complete one), as run_info.json
    records it: its path (relative to the run dir `out` when inside it) and the step it was saved at; None for
    a run that starts afresh."""
    if not checkpoint:
        return None
    path = Path(checkpoint)
    state = json.loads((path / "trainer_state.json").read_text())
    inside = path.resolve().is_relative_to(out.resolve())
    return {
        "checkpoint": str(path.resolve().relative_to(out.resolve())) if inside else str(path),
        "global_step": int(state["global_step"]),
    }


def run_info(
    recipe: Recipe, trainer, result, dtype, data_report, runtimes, eval_before, eval_after, resumed=None
) -> dict:
    """What run_info.json records: what was trained, how, on what, how long, and the held-out numbers.
    `resumed`: the checkpoint this run resumed from (`resumed_from`), None for a run that started afresh;
    `steps_this_run` counts the steps this invocation trained, `global_steps` all of them."""
    args = recipe.training
    return {
        "hf_dpo_version": __version__,
        "framework_versions": framework_versions({}),
        "base_model": hub_id_for(recipe.model.model_name_or_path),
        "model_name_or_path": recipe.model.model_name_or_path,
        "quantization": recipe.model.quantization if recipe.model.quantization else "none",
        "compute_dtype": str(dtype).replace("torch.", ""),
        "use_peft": recipe.model.use_peft,
        "ref_model": hub_id_for(recipe.model.ref_model_name_or_path)
        if recipe.model.ref_model_name_or_path
        else None,
        "lora": {
            "r": recipe.model.lora_r,
            "alpha": recipe.model.lora_alpha,
            "dropout": recipe.model.lora_dropout,
            "target_modules": recipe.model.lora_target_modules,
        }
        if recipe.model.use_peft
        else None,
        "dataset": recipe.data.dataset_name,
        "num_train_pairs": len(trainer.train_dataset),
        "num_eval_pairs": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "data_report": data_report,
        "hardware": hardware_summary(),
        **runtimes,
        "global_steps": result.global_step,
        "resumed_from": resumed,
        "steps_this_run": result.global_step - (resumed["global_step"] if resumed else 0),
        "train_loss": result.training_loss,
        "beta": args.beta,
        "loss_type": objective_name(args.loss_type, args.loss_weights),
        "eval_before": eval_before,
        "eval_after": eval_after,
        "peak_memory": peak_memory(),
    }


def objective_name(loss_type: list[str], loss_weights: list[float] | None) -> str:
    """'sigmoid' for one loss, 'sigmoid + 0.2 x bco_pair + sft' for a weighted sum (run_info.json, the report)."""
    weights = loss_weights or [1.0] * len(loss_type)
    return " + ".join(
        name if weight == 1 else f"{weight:g} x {name}" for name, weight in zip(loss_type, weights)
    )


def publish(out: Path, report: dict | None, hub) -> None:
    """The card (never over a hand-edited one), the report summary, then the push when the recipe asked."""
    refresh_card(out, hub.repo_id if hub else None)  # replaces PEFT's placeholder, never a hand-edited card
    if report is not None:
        print(console_summary(report, str(out)), flush=True)
    if hub:
        print(f"Pushing {out} to {hub.repo_id} ...", flush=True)
        url = push_run(out, hub.repo_id, token=hub.token, private=hub.private, revision=hub.revision)
        print(f"Pushed: {url}", flush=True)


def _fmt(summary: dict) -> str:
    return (
        f"reward accuracy {summary['reward_accuracy']:.3f}, margin {summary['reward_margin']:.3f}, "
        f"policy prefers chosen {summary['policy_prefers_chosen']:.3f} (n={summary['num_pairs']})"
    )


def _resumed_note(resumed: dict | None, global_steps: int) -> str:
    if not resumed:
        return ""
    return f" (resumed from {resumed['checkpoint']} at step {resumed['global_step']}; {global_steps} in all)"


def _print_summary(out: Path, info: dict) -> None:
    lines = [
        "",
        f"{'Adapter' if info.get('use_peft', True) else 'Model (full fine-tune)'} written to {out.resolve()}",
        f"Trained {info['steps_this_run']} step{'' if info['steps_this_run'] == 1 else 's'}"
        f"{_resumed_note(info['resumed_from'], info['global_steps'])} "
        f"on {info['num_train_pairs']} pairs in {info['train_runtime_s']:.0f} s "
        f"({info['hardware']}, "
        f"{info['quantization'] + ' base' if info.get('use_peft', True) else 'every weight trained'}, "
        f"{info['compute_dtype']}).",
    ]
    if info["eval_before"] and info["eval_after"]:
        b, a = info["eval_before"], info["eval_after"]
        # Measured, not assumed: a resumed run's "before" has moved; learning_rate 0 leaves "after" unmoved too.
        same = [when for when, summary in (("before", b), ("after", a)) if summary["policy_is_reference"]]
        lines += [
            f"Held-out pairs: {a['num_pairs']}",
            f"  reward accuracy        before {b['reward_accuracy']:.3f}  after {a['reward_accuracy']:.3f}"
            + (f"   ({' and '.join(same)}: {POLICY_IS_REFERENCE})" if same else ""),
            f"  policy prefers chosen  before {b['policy_prefers_chosen']:.3f}  after {a['policy_prefers_chosen']:.3f}"
            "   (per-token log-prob of chosen > rejected)",
        ]
    print("\n".join(lines), flush=True)


def run_recipe(run_dir: str | os.PathLike) -> Recipe:
    """The recipe a finished run was trained with (its recipe.yaml); RunDirError for a dir that is no run, or
    whose trained weights (the adapter, or a full fine-tune's model) cannot be loaded."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (
        (run_dir / "adapter_config.json").is_file() or (run_dir / "config.json").is_file()
    ):
        raise RunDirError(
            f"{run_dir} is not a finished hf-dpo run (needs recipe.yaml and adapter_config.json, or config.json "
            "for a full fine-tune)."
        )
    recipe = load_recipe(run_dir / "recipe.yaml", ["--output_dir", str(run_dir)])
    if recipe.model.use_peft and (problem := adapter_dir_problem(run_dir)):
        raise RunDirError(f"{problem}: the run's adapter cannot be loaded. {RESTORE_RUN}")
    if not recipe.model.use_peft and (problem := model_dir_problem(run_dir)):
        raise RunDirError(f"{problem}: the run's model (a full fine-tune) cannot be loaded. {RESTORE_RUN}")
    base = recipe.model.model_name_or_path
    if is_local_dir(base) and (problem := model_dir_problem(base)):
        raise RunDirError(f"{run_dir}/recipe.yaml: model_name_or_path: {problem}. {MODEL_DIR_FIX}")
    return recipe


def trained_model(run_dir: Path, recipe: Recipe):
    """The trained policy of a finished run: the base with the run's adapter (a run that started from an adapter
    keeps that one as the reference), or a full fine-tune's saved model, in the recipe's torch_dtype."""
    if not recipe.model.use_peft:
        return load_base_model(dataclasses.replace(recipe.model, model_name_or_path=str(run_dir)))
    return with_adapter(load_base_model(recipe.model), run_dir, reference=recipe.model.adapter_name_or_path)


def load_run(run_dir: str | os.PathLike, recipe: Recipe | None = None):
    """(recipe, model, tokenizer, eval_dataset, train_dataset) of a finished run: base + trained adapter (or a full
    fine-tune's model), the tokenized splits (None where the data cannot be read now). `recipe`: its
    `run_recipe`, read already."""
    run_dir = Path(run_dir)
    recipe = recipe if recipe is not None else run_recipe(run_dir)
    tokenizer = load_tokenizer(recipe.model)
    model = trained_model(run_dir, recipe)
    eval_dataset = train_dataset = None
    try:
        data = load_preference_dataset(recipe.data, tokenizer, recipe.training)
        eval_dataset, train_dataset = data.eval, data.train
    except Exception as err:  # noqa: BLE001 - the data may have moved; evaluation can still generate
        logger.warning("Could not load the eval split of %s: %s", recipe.data.dataset_name, err)
    return recipe, model, tokenizer, eval_dataset, train_dataset


def evaluate_run(
    run_dir: str | Path,
    judge=None,
    num_generations: int | None = None,
    *,
    max_new_tokens: int | None = None,
    test_prompts_file: str | None = None,
    output_dir: str | Path | None = None,
    batch_size: int = 96,
    do_sample: bool = False,
    seed: int = 0,
    confidence: float = 0.95,
    num_samples_shown: int = 4,
) -> dict[str, Any]:
    """Reload a finished run (base + trained adapter, or a full fine-tune's model with its starting model as the
    reference), write its report and refresh its card (README.md, unless edited by hand). `judge` defaults to the
    recipe's. `test_prompts_file`: judge other prompts than the recipe's (all of them unless `num_generations`
    says); then `output_dir` is required and gets the report, and the run dir, its report and card stay as they
    are."""
    if isinstance(judge, str):
        check_judge(judge, "--judge")  # a misspelled or empty --judge is named before the model loads
    check_report_dir(run_dir, test_prompts_file, output_dir)
    recipe = run_recipe(run_dir)
    spec = judge if judge is not None else recipe.report.judge
    if judge is None and isinstance(spec, str):
        check_judge(spec, f"{Path(run_dir) / 'recipe.yaml'}: key 'judge'")  # before the model loads too
    options = ReportOptions.from_recipe(
        recipe.report,
        batch_size=batch_size,
        do_sample=do_sample,
        seed=seed,
        confidence=confidence,
        num_samples_shown=num_samples_shown,
    )
    if test_prompts_file is not None:
        prompts_in_file = len(read_prompts(test_prompts_file, recipe.data.prompt_column))
        options = dataclasses.replace(
            options, prompts_file=test_prompts_file, num_generations=prompts_in_file
        )
    options = dataclasses.replace(
        options,
        num_generations=options.num_generations if num_generations is None else num_generations,
        max_new_tokens=max_new_tokens or options.max_new_tokens,
    )
    # the prompt file the judge answers on (recipe.yaml names it as given, often relative to where training ran)
    check_judged_prompts(
        options.prompts_file, spec, options.num_generations, prompt_column=recipe.data.prompt_column
    )
    recipe, model, tokenizer, eval_dataset, train_dataset = load_run(run_dir, recipe)
    judge_obj, judge_name = resolve_judge(spec)
    args = recipe.training
    args.report_to = []
    hub = take_hub_settings(args)  # evaluation never pushes, and keeps no token in the Trainer's arguments
    # the recipe's reference model, or a full fine-tune's starting model, loaded again; LoRA's: adapters off
    reference = report_reference(recipe)
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=args, processing_class=tokenizer, eval_dataset=eval_dataset
    )
    report = evaluate_model(
        run_dir,
        model,
        tokenizer,
        eval_dataset,
        pair_logps_fn=trainer.pair_logps,
        judge=judge_obj,
        judge_name=judge_name,
        options=options,
        data_config=recipe.data,
        training_prompts=training_prompt_keys(
            train_dataset, tokenizer
        ),  # held-out prompts that were trained on
        load_reference=None if reference is None else lambda: reference,
        out_dir=output_dir,
    )
    if report_elsewhere(run_dir, output_dir):
        return report  # the run's own card keeps its own report's numbers
    # The card tells this report's numbers, as training's does; one edited by hand is someone's own text.
    if card_was_edited(Path(run_dir)):
        logger.warning(
            "%s was edited by hand: kept as it is, without this report's numbers. Delete it and run `hf-dpo eval` "
            "again for hf_dpo's card.",
            Path(run_dir) / "README.md",
        )
    else:
        refresh_card(run_dir, hub.repo_id if hub else None)
    return report
