"""The report's metrics as `evaluate` modules that ship inside hf_dpo and load offline.

    metric = load("dpo_preference")            # evaluate.load on the module's directory: no Hub access
    metric.compute(policy_chosen_logps=..., policy_rejected_logps=..., ref_chosen_logps=..., ref_rejected_logps=...,
                   beta=0.1)
    save_results(run_dir, report)              # run_dir/evaluate_results.json, in evaluate.save's format

The modules (evaluate_modules/<name>/<name>.py) are thin wrappers over `hf_dpo.report.metrics`, so a user can
score their own predictions with exactly the report's definitions. What does not work offline: loading
*Hub* metrics by name (`evaluate.load("accuracy")` downloads its script); these modules are local paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_dpo.files import atomic_write_text
from hf_dpo.report.metrics import LOGPS_KEYS  # noqa: F401 - the dpo_preference module's inputs

MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
MODULES = ("dpo_preference", "judged_win_rate")

RESULTS_FILE = "evaluate_results.json"
# evaluate.save records where it ran (interpreter path, git hash of the working dir): local facts that must not
# travel to the Hub with the run dir.
_LOCAL_FIELDS = ("_interpreter_path", "_git_commit_hash")


def module_path(name: str) -> Path:
    if name not in MODULES:
        raise ValueError(f"unknown hf_dpo evaluate module {name!r}; choose from {', '.join(MODULES)}.")
    return MODULES_DIR / name


def load(name: str):
    """The `evaluate.EvaluationModule` `name`, loaded from its directory inside the package."""
    import evaluate

    return evaluate.load(str(module_path(name)))


def save_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """Write `results` with evaluate.save (timestamp, evaluate and Python versions), minus local paths."""
    import evaluate

    path = Path(run_dir) / RESULTS_FILE
    evaluate.save(str(path), **results)
    saved = json.loads(path.read_text())
    atomic_write_text(
        path, json.dumps({k: v for k, v in saved.items() if k not in _LOCAL_FIELDS}, indent=2) + "\n"
    )
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
