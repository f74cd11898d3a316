"""The report's metrics as `evaluate` modules that ship inside hf_dpo and load offline, and the report's results
in `evaluate`'s saved-results format.

    metric = load("judged_win_rate")           # evaluate.load on the module's directory: no Hub access
    metric.compute(policy_scores=[[1, 0], [1, 1]], reference_scores=[[1, 1], [0, 1]], criteria=["correct", "concise"])
    compute("dpo_preference", policy_chosen_logps=..., ..., beta=0.1)      # what the report calls (cached module)
    save_results(run_dir, headline_results(report))                       # run_dir/evaluate_results.json

The modules (evaluate_modules/<name>/<name>.py) wrap `hf_dpo.report.metrics`, and the report computes its
preference metrics and judged comparison by `compute` through them, so a user who `evaluate.load`s a module on
their own predictions runs the report's code. The paired bootstrap intervals are computed inside the modules
too (they call the same functions). What does not work offline: loading *Hub* modules by name
(`evaluate.load("accuracy")` downloads its script) and `evaluate.push_to_hub`; these modules are local paths.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
from pathlib import Path
from typing import Any

from hf_dpo.files import atomic_write_text
from hf_dpo.report.metrics import LOGPS_KEYS  # noqa: F401 - the dpo_preference module's inputs

MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
MODULES = ("dpo_preference", "judged_win_rate")

RESULTS_FILE = "evaluate_results.json"


def module_path(name: str) -> Path:
    if name not in MODULES:
        raise ValueError(f"unknown hf_dpo evaluate module {name!r}; choose from {', '.join(MODULES)}.")
    return MODULES_DIR / name


def load(name: str, **load_kwargs: Any):
    """A fresh `evaluate.EvaluationModule` `name`, loaded from its directory inside the package (what a user
    gets from `evaluate.load(<that directory>)`)."""
    import evaluate

    return evaluate.load(str(module_path(name)), **load_kwargs)


@functools.cache
def _report_module(name: str):
    # Loaded once per process: evaluate.load hashes and copies the script each time. In memory: the report
    # writes no Arrow cache files or locks.
    return load(name, keep_in_memory=True)


def compute(name: str, **inputs_and_settings: Any) -> dict[str, Any]:
    """`evaluate.load(module).compute(...)` of hf_dpo's module `name`: how the report computes its metrics."""
    return _report_module(name).compute(**inputs_and_settings)


def save_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` to run_dir/evaluate_results.json in evaluate.save's format: the results, then its
    `_timestamp`, `_evaluate_version` and `_python_version` entries.

    Written here rather than by evaluate.save: that runs `git` in the working directory (it fails where git
    is not installed and prints git's error outside a repository), and records the interpreter path and the
    git commit of whatever directory the run started in, local facts that must not travel to the Hub.
    """
    import evaluate

    saved = {
        **results,
        "_timestamp": datetime.datetime.now().isoformat(),
        "_evaluate_version": evaluate.__version__,
        "_python_version": sys.version,
    }
    path = Path(run_dir) / RESULTS_FILE
    atomic_write_text(path, json.dumps(saved, indent=2) + "\n")
    return path


def headline_results(report: dict[str, Any]) -> dict[str, Any]:
    """The report's headline numbers as flat name -> value pairs (what `save_results` writes)."""
    results: dict[str, Any] = {}
    for name, estimate in ((report.get("preference") or {}).get("metrics") or {}).items():
        results[f"preference/{name}"] = estimate["value"]
    behaviour = report.get("behaviour") or {}
    for key in ("win_rate", "length_controlled_win_rate"):
        if isinstance(behaviour.get(key), dict):
            results[f"behaviour/{key}"] = behaviour[key]["value"]
    for criterion, sides in (behaviour.get("per_criterion") or {}).items():
        for side in ("policy", "reference", "difference"):
            if isinstance(sides.get(side), dict):
                results[f"behaviour/{criterion}/{side}"] = sides[side]["value"]
    verdict = report.get("verdict")
    if verdict:
        results["verdict"] = verdict.get("label") if isinstance(verdict, dict) else verdict
    return results
