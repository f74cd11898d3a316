"""Iterative (on-policy) DPO: rounds of sample -> label -> train, each round starting from the last one's policy.

    hf-dpo iterate recipes/demo_iterate.yaml --rounds 2     # = run_iterate("recipes/demo_iterate.yaml", 2)

One recipe holds the training keys and the sampling and labelling keys, as `hf-dpo train` and `hf-dpo sample`
read them. Round 1 trains on the recipe's dataset when it names one, else on pairs sampled from the starting
model (model_name_or_path, with adapter_name_or_path when set). Round k >= 2 samples from round k-1's policy (its
adapter) on prompts_file (and test_prompts_file: its held-out pairs), labels the samples with the judge, and
trains from round k-1's adapter with round k-1's policy, frozen, as its reference (a starting adapter is its own
reference: `hf_dpo.model.reference`). Each round's report therefore judges what that round added to the last.

    output_dir/
        iterate_state.json        the recipe as run and the finished rounds: a rerun resumes, a changed recipe
                                  is refused
        round_K/                  a run dir of `hf-dpo train` (adapter, run_info.json, eval_report.*, README.md
                                  with the rounds so far), plus samples_{train,test}.jsonl and pairs/ when the
                                  round sampled its pairs
        iterate_report.md, .json  one row a round, each beside the last (`hf_dpo.report.rounds`)

Rerunning the same command skips finished rounds, resumes an interrupted sampling where it stopped (the samples
files are resumable) and trains an interrupted round again from its start. Every round's settings are checked
before any model loads (`preflight_iterate`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hf_dpo.config import SECRET_KEYS, Recipe, RecipeError, load_recipe
from hf_dpo.errors import HfDpoError, quoted
from hf_dpo.files import atomic_write_text
from hf_dpo.hub.run_card import refresh_card
from hf_dpo.pairs.formats import read_prompts
from hf_dpo.pairs.judges import check_judge_scores
from hf_dpo.pairs.sampling import run_sampling
from hf_dpo.preflight import check_run_settings, preflight, preflight_sampling
from hf_dpo.report.rounds import ROUNDS_FILE, round_row, rounds_markdown
from hf_dpo.run import run_training

logger = logging.getLogger(__name__)

STATE_FILE = "iterate_state.json"
REPORT_FILES = ("iterate_report.md", "iterate_report.json")
STARTING_MODEL = "the starting model"
ROUND_DIR = re.compile(r"round_\d+")
# Keys that change how a rerun treats output_dir, not what a round computes.
NOT_COMPARED = {"overwrite_output_dir"} | SECRET_KEYS


class IterateError(HfDpoError, ValueError):
    """An iterative run that cannot start or resume as asked; says what to change."""


@dataclass(frozen=True)
class Round:
    """One round: its number, run dir, the policy it starts from (and is judged against), whether it samples its
    pairs, and the recipe it runs (the user's, with the round's keys on top)."""

    number: int
    run_dir: Path
    started_from: str  # STARTING_MODEL or the previous round's run dir
    samples: bool
    overrides: list[str]  # the round's keys, after the user's overrides
    recipe: Recipe


def round_dir(output_dir: str | Path, number: int) -> Path:
    return Path(output_dir).expanduser() / f"round_{number}"


def round_keys(recipe: Recipe, number: int) -> tuple[list[str], bool]:
    """(`--key value` of round `number` on top of the recipe, whether it samples its pairs). Every round writes into
    its own run dir, which iterate owns (overwrite_output_dir: an interrupted round trains again); round k >= 2
    starts from round k-1's adapter and trains on the pairs sampled into its run dir."""
    here = round_dir(recipe.training.output_dir, number)
    samples = number > 1 or not recipe.data.dataset_name
    keys = {"output_dir": str(here), "overwrite_output_dir": "true"}
    if number > 1:
        keys["adapter_name_or_path"] = str(round_dir(recipe.training.output_dir, number - 1))
    if samples:  # the pairs `hf-dpo sample` writes: pairs/train.jsonl, held-out pairs/test.jsonl
        keys |= {
            "dataset_name": str(here / "pairs"),
            "dataset_config": "null",
            "dataset_train_split": "train",
            "dataset_test_split": "test" if recipe.report.test_prompts_file else "null",
            "chosen_column": "chosen",
            "rejected_column": "rejected",
        }
    return [token for key, value in keys.items() for token in (f"--{key}", value)], samples


def plan_rounds(recipe_path: str | None, overrides: list[str], recipe: Recipe, rounds: int) -> list[Round]:
    """Every round's recipe, read (and so its values checked) now."""
    planned = []
    for number in range(1, rounds + 1):
        keys, samples = round_keys(recipe, number)
        planned.append(
            Round(
                number=number,
                run_dir=round_dir(recipe.training.output_dir, number),
                started_from=str(round_dir(recipe.training.output_dir, number - 1))
                if number > 1
                else STARTING_MODEL,
                samples=samples,
                overrides=keys,
                recipe=load_recipe(recipe_path, [*overrides, *keys]),
            )
        )
    return planned


# ---------------------------------------------------------------- checks, before any model loads


def check_iterate_recipe(recipe: Recipe, rounds: int) -> None:
    """The keys iterate needs, and those it cannot honour, named before anything runs."""
    samples = rounds > 1 or not recipe.data.dataset_name
    if not recipe.report.judge:
        raise RecipeError(
            "key 'judge': iterate labels each round's samples with the judge and judges each round against the "
            "last; set judge (module:function or rm:<reward model>)."
        )
    if samples and not recipe.sampling.prompts_file:
        raise RecipeError(
            "key 'prompts_file': "
            + (
                "rounds 2 and later sample"
                if recipe.data.dataset_name
                else "without dataset_name, round 1 samples"
            )
            + " their pairs from the current policy on these prompts; set prompts_file (a .txt, one prompt a line)."
        )
    if not recipe.model.use_peft:
        raise RecipeError(
            "key 'use_peft': iterate trains a LoRA adapter round after round, each starting from the last one's; "
            "a full fine-tune (use_peft: false) is not supported."
        )
    refused = {
        "ref_model_name_or_path": "each round's reference is the policy it starts from (the previous round's)",
        "samples_file": "each round writes its samples into its own run dir, output_dir/round_K/",
        "pairs_file": "each round writes its pairs into output_dir/round_K/pairs/",
        "resume_from_checkpoint": "a rerun of the same command resumes an interrupted iterate by itself",
    }
    for key, why in refused.items():
        value = recipe.values.get(key)
        if value not in (None, "", False):
            raise RecipeError(f"key '{key}' ({quoted(value)}): {why}; remove it from the iterate recipe.")
    if recipe.training.push_to_hub:
        raise RecipeError(
            "key 'push_to_hub': iterate does not push its rounds; push the last one when it is done with "
            f"`hf-dpo push {round_dir(recipe.training.output_dir, rounds)} --repo-id ORG/NAME`."
        )
    if samples and recipe.data.prompt_column != "prompt":
        raise RecipeError(
            f"key 'prompt_column' ({quoted(recipe.data.prompt_column)}): the pairs iterate samples have a 'prompt' "
            "column, which the rounds that train on them read; name the prompts file's column 'prompt'."
        )


def recipe_identity(recipe: Recipe) -> dict[str, Any]:
    """The recipe's keys as the state file records them (JSON values; no secret, no overwrite_output_dir)."""
    values = {key: value for key, value in recipe.values.items() if key not in NOT_COMPARED}
    return json.loads(json.dumps(values, default=str))


def read_state(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("recipe"), dict):
        raise IterateError(
            f"{path} is not an iterate state file hf-dpo wrote. Give another output_dir, or set "
            "overwrite_output_dir: true to start afresh over it."
        )
    return state


def _recipe_changes(then: dict[str, Any], now: dict[str, Any]) -> str:
    """'key 'beta': not set then, 0.2 now; ...' for every key whose value differs, "" for none."""

    def shown(values: dict[str, Any], key: str) -> str:
        return quoted(values[key]) if key in values else "not set"

    keys = [key for key in [*then, *(k for k in now if k not in then)] if then.get(key) != now.get(key)]
    return "; ".join(f"key '{key}': {shown(then, key)} then, {shown(now, key)} now" for key in keys)


def finished_rounds(state: dict[str, Any]) -> list[int]:
    return sorted(int(number) for number, done in state["rounds"].items() if done.get("finished"))


def check_state(recipe: Recipe, rounds: int) -> dict[str, Any] | None:
    """The state to resume from, or None to start afresh. Refuses (IterateError, naming overwrite_output_dir) an
    output_dir with rounds but no state, a state made with another recipe (naming every key that differs), a
    finished round whose run files are gone, and a finished iterate of as many rounds as asked or more: nothing is
    replaced silently."""
    out = Path(recipe.training.output_dir).expanduser()
    overwrite = recipe.training.overwrite_output_dir
    state = read_state(out)
    if state is None:
        foreign = sorted(
            p.name for p in out.glob("round_*") if ROUND_DIR.fullmatch(p.name) and any(p.iterdir())
        )
        if foreign and not overwrite:
            raise IterateError(
                f"key 'output_dir': {out} holds {', '.join(foreign)} but no {STATE_FILE}: not an iterate this "
                "command can resume. Give another output_dir, or set overwrite_output_dir: true to start afresh "
                "over it."
            )
        return None
    changes = _recipe_changes(state["recipe"], recipe_identity(recipe))
    if changes and not overwrite:
        raise IterateError(
            f"{out / STATE_FILE}: this iterate was run with another recipe ({changes}). Rerun it with the recipe it "
            "was made with to resume, give another output_dir, or set overwrite_output_dir: true to start afresh "
            "over it."
        )
    done = finished_rounds(state)
    lost = [f"round_{n}" for n in done if not (round_dir(out, n) / "run_info.json").is_file()]
    if lost and not changes and not overwrite:
        raise IterateError(
            f"{out / STATE_FILE} records {', '.join(lost)} as finished, but {'their' if len(lost) > 1 else 'its'} "
            "run_info.json is gone: the later rounds start from those adapters. Restore the round dirs, or set "
            "overwrite_output_dir: true to start afresh."
        )
    if done and max(done) >= rounds and not overwrite:
        raise IterateError(
            f"key 'output_dir': {out} holds a finished iterate of {max(done)} round{'s' * (max(done) > 1)} "
            f"({', '.join(f'round_{n}' for n in done)}, {REPORT_FILES[0]}). Give another output_dir, --rounds "
            f"{max(done) + 1} or more to add rounds, or set overwrite_output_dir: true to start afresh over it."
        )
    return None if changes or (done and max(done) >= rounds) else state


def _checkable(plan: Round, finished: set[int], recipe: Recipe) -> Recipe:
    """The round's recipe as it can be checked now: a round whose starting adapter (the previous round's) is not
    trained yet is checked with the recipe's own starting point, the only keys that differ."""
    if plan.number == 1 or plan.number - 1 in finished:
        return plan.recipe
    return replace(
        plan.recipe, model=replace(plan.recipe.model, adapter_name_or_path=recipe.model.adapter_name_or_path)
    )


def preflight_iterate(recipe: Recipe, plans: list[Round], finished: set[int]) -> None:
    """Every round still to run checked before any model loads: round 1 on the recipe's dataset as `hf-dpo train`
    checks it (data, report, judge); a sampling round as `hf-dpo sample` checks it (prompts through the chat
    template, judge, output files) and as `hf-dpo train` checks what needs no data (places, model, LoRA targets,
    Hub, cache); the judge tried once on the first prompt. (After `check_iterate_recipe` and `check_state`.)"""
    for plan in plans:
        if plan.number in finished:
            continue
        checked = _checkable(plan, finished, recipe)
        if not plan.samples:
            preflight(checked)
            continue
        preflight_sampling(checked)
        check_run_settings(checked)
    if any(plan.samples for plan in plans if plan.number not in finished):
        first = read_prompts(recipe.sampling.prompts_file, recipe.data.prompt_column)[0]
        check_judge_scores(
            recipe.report.judge,
            first,
            "Paris.",
            tried_on="the first prompt of prompts_file and the answer 'Paris.'",
        )


# ---------------------------------------------------------------- the rounds


def run_iterate(recipe_path: str | None, rounds: int, overrides: list[str] | None = None) -> Path:
    """`hf-dpo iterate`: run (or resume) `rounds` rounds; returns iterate_report.md's path."""
    overrides = list(overrides or [])
    recipe = load_recipe(recipe_path, overrides)
    check_iterate_recipe(recipe, rounds)
    out = Path(recipe.training.output_dir).expanduser()
    state = check_state(recipe, rounds)
    plans = plan_rounds(recipe_path, overrides, recipe, rounds)
    finished = set(finished_rounds(state)) if state else set()
    preflight_iterate(recipe, plans, finished)
    if state is None:
        state = start_afresh(out, recipe)
    elif finished:
        logger.info(
            "Resuming %s: round%s %s finished.",
            out,
            "s" * (len(finished) > 1),
            ", ".join(map(str, sorted(finished))),
        )
    for plan in plans:
        if plan.number in finished:
            continue
        entry = state["rounds"].setdefault(str(plan.number), {})
        if plan.samples:
            print(f"Round {plan.number}: sampling pairs from {plan.started_from} ...", flush=True)
            entry["sampling"] = sample_round(plan, entry.get("sampling"))
            write_state(out, state)
        print(f"Round {plan.number}: training from {plan.started_from} (its reference) ...", flush=True)
        run_training(recipe_path, [*overrides, *plan.overrides])
        entry["finished"] = True
        write_state(out, state)  # the trained round is kept whatever happens to the tables below
        rows = report_rounds(out, plans[: plan.number], state)
        atomic_write_text(plan.run_dir / ROUNDS_FILE, json.dumps(rows, indent=2))
        refresh_card(plan.run_dir)  # the round's card, with the rounds table up to it
        print(f"\nRounds so far ({out / REPORT_FILES[0]}):\n\n{rounds_markdown(rows)}\n", flush=True)
    return out / REPORT_FILES[0]


def start_afresh(out: Path, recipe: Recipe) -> dict[str, Any]:
    """A new state file; what an earlier iterate left in output_dir (its rounds, report, state) is removed first,
    which check_state allows only for overwrite_output_dir: true or an output_dir with no round in it."""
    for path in out.glob("round_*"):
        if ROUND_DIR.fullmatch(path.name) and path.is_dir():
            shutil.rmtree(path)
    for name in (STATE_FILE, *REPORT_FILES):
        (out / name).unlink(missing_ok=True)
    state = {"recipe": recipe_identity(recipe), "rounds": {}}
    write_state(out, state)
    return state


def write_state(out: Path, state: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2))


def sample_round(plan: Round, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sample and label the round's pairs (`hf-dpo sample` on its recipe: resumes its samples files); returns what
    the rounds table shows of it: the seconds spent (added to those of a sampling `recorded` already, whose round
    was then interrupted in training) and how many prompts a run killed before had sampled (its time is not
    known). IterateError when the judge found no training pair."""
    preflight_sampling(plan.recipe)  # the previous round's adapter is there now: checked as sampling loads it
    started = time.perf_counter()
    report = run_sampling(plan.recipe, outputs_checked=True)
    splits = report["splits"]
    train = splits["train"]
    if not train["pairs"]:
        raise IterateError(
            f"Round {plan.number}: the judge found no pair among the {train['prompts']} prompts' samples "
            f"({train['pairs_file']}): every prompt's answers scored alike. More num_samples_per_prompt, a higher "
            "sampling_temperature, or a judge that tells answers apart; the samples are kept, so a rerun only "
            "labels them again."
        )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds + (recorded["seconds"] if recorded else 0), 1),
        "prompts": sum(st["prompts"] for st in splits.values()),
        "resumed": recorded["resumed"] if recorded else sum(st["resumed"] for st in splits.values()),
        "pairs": train["pairs"],
        "eval_pairs": splits["test"]["pairs"] if "test" in splits else 0,
    }


def report_rounds(out: Path, plans: list[Round], state: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `plans` (finished rounds) from their run files, written as iterate_report.{md,json}."""
    rows = []
    for plan in plans:
        info = json.loads((plan.run_dir / "run_info.json").read_text())
        report_path = plan.run_dir / "eval_report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        sampling = state["rounds"][str(plan.number)].get("sampling")
        started_from = Path(plan.started_from).name if plan.number > 1 else STARTING_MODEL
        rows.append(round_row(plan.number, plan.run_dir.name, started_from, info, report, sampling))
    atomic_write_text(out / REPORT_FILES[1], json.dumps({"rounds": rows}, indent=2))
    atomic_write_text(
        out / REPORT_FILES[0],
        f"# Iterative DPO: {len(rows)} round{'s' * (len(rows) > 1)}\n\n{rounds_markdown(rows)}\n",
    )
    return rows
