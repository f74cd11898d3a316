"""The report's metrics as `evaluate` modules that ship inside hf_dpo and load offline, and the report's results
in `evaluate`'s saved-results format.

    metric = load("judged_win_rate")           # evaluate.load on the module's directory: no Hub access
    metric.compute(policy_scores=[[1, 0], [1, 1]], reference_scores=[[1, 1], [0, 1]], criteria=["correct", "concise"])
    compute("dpo_preference", policy_chosen_logps=..., ..., beta=0.1)      # what the report calls (cached module)
    save_results(run_dir, headline_results(report))                       # run_dir/evaluate_results.json

The modules (evaluate_modules/<name>/<name>.py) wrap `hf_dpo.report.estimates`, and the report computes its
preference metrics and judged comparison by `compute` through them, so a user who `evaluate.load`s a module on
their own predictions runs the report's code. The paired bootstrap intervals are computed inside the modules
too (they call the same functions). What does not work offline: loading *Hub* modules by name
(`evaluate.load("accuracy")` downloads its script) and `evaluate.push_to_hub`; these modules are local paths.

`evaluate.load` writes on the way: it copies the module's script into HF_MODULES_CACHE to import it, and makes
a directory under HF_METRICS_CACHE (both under ~/.cache/huggingface by default). Where either cannot be written
(a read-only home or HF_HOME), `load` uses a temporary directory of this process instead, says so once, and
removes it at exit: the report, the last step of a run, still comes out, with the same numbers.
`preload_report_modules()` is that check before training; `cache_problem(path)` says why a directory cannot
be written.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hf_dpo.files import atomic_write_text, why_not_writable
from hf_dpo.report.estimates import (
    LOGPS_KEYS,  # noqa: F401 - the dpo_preference module's inputs
    EvaluationError,
)

logger = logging.getLogger(__name__)

MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
MODULES = ("dpo_preference", "judged_win_rate")

RESULTS_FILE = "evaluate_results.json"


def module_path(name: str) -> Path:
    if name not in MODULES:
        raise ValueError(f"unknown hf_dpo evaluate module {name!r}; choose from {', '.join(MODULES)}.")
    return MODULES_DIR / name


def load(name: str, **load_kwargs: Any):
    """A fresh `evaluate.EvaluationModule` `name`, loaded from its directory inside the package (what a user
    gets from `evaluate.load(<that directory>)`), through a temporary directory where evaluate's caches cannot
    be written."""
    import evaluate
    import evaluate.config

    if "cache_dir" not in load_kwargs:
        metrics_cache = _writable_or_temporary(evaluate.config.HF_METRICS_CACHE, "HF_METRICS_CACHE")
        if metrics_cache is not None:
            load_kwargs["cache_dir"] = str(metrics_cache)
    with _modules_cache():
        return evaluate.load(str(module_path(name)), **load_kwargs)


def cache_problem(directory: str | os.PathLike) -> str | None:
    """Why files cannot be made in `directory`, or None when they can (`hf_dpo.files.why_not_writable`)."""
    problem = why_not_writable(directory)
    return None if problem is None else f"{directory} is not writable ({problem})"


@contextlib.contextmanager
def _modules_cache():
    """evaluate's modules cache pointed at a temporary directory for one `evaluate.load`, where the configured
    one (HF_MODULES_CACHE) cannot be written; as configured otherwise."""
    import evaluate.config

    configured = evaluate.config.HF_MODULES_CACHE
    temporary = _writable_or_temporary(
        Path(configured) / evaluate.config.MODULE_NAME_FOR_DYNAMIC_MODULES, "HF_MODULES_CACHE"
    )
    if temporary is None:
        yield
        return
    if str(temporary) not in sys.path:
        # The copies are imported from there, ahead of any other modules cache on sys.path (one that may hold an
        # older `evaluate_modules` package); evaluate itself only appends a cache it has not seen.
        sys.path.insert(0, str(temporary))
    evaluate.config.HF_MODULES_CACHE = temporary  # read at each load; restored so nothing else is redirected
    try:
        yield
    finally:
        evaluate.config.HF_MODULES_CACHE = configured


class NoWritableCache(EvaluationError):
    """Neither an evaluate cache nor a temporary directory can be written: the report cannot compute its
    numbers in this process. The message says so for a finished run (`hf-dpo eval` rewrites its report);
    `before_training()` says it for a run that has not started."""

    def __init__(self, problem: str, variable: str, reason: OSError):
        self.problem, self.variable, self.reason = problem, variable, reason
        super().__init__(
            f"{self._cause()} Set {variable} to a writable directory (or HF_HOME, which holds every Hugging Face "
            "cache) and run `hf-dpo eval RUN_DIR` to write the report of a trained run."
        )

    def _cause(self) -> str:
        return f"evaluate's cache {self.problem}, and no temporary directory can be made instead ({self.reason})."

    def before_training(self) -> EvaluationError:
        return EvaluationError(
            f"{self._cause()} The report at the end of training computes its numbers through evaluate, so "
            f"training does not start: set {self.variable} to a writable directory (or HF_HOME, which holds "
            "every Hugging Face cache), or TMPDIR to a writable one."
        )


@functools.cache
def _writable_or_temporary(directory: str | os.PathLike, variable: str) -> Path | None:
    """None when `directory` can be written; else a temporary directory standing in for it in this process
    (made once, logged once, removed at exit). EvaluationError when there is no writable place at all."""
    problem = cache_problem(directory)
    if problem is None:
        return None
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f"hf_dpo_{variable.lower()}_"))
    except OSError as err:
        raise NoWritableCache(problem, variable, err) from None
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    logger.warning(
        "evaluate's cache %s; using %s for this run instead (removed at exit). Set %s to a writable directory "
        "to keep it there.",
        problem,
        temporary,
        variable,
    )
    return temporary


@functools.cache
def _report_module(name: str):
    # Loaded once per process: evaluate.load hashes and copies the script each time. In memory: the report
    # writes no Arrow cache files or locks.
    return load(name, keep_in_memory=True)


def preload_report_modules() -> None:
    """Load the report's modules now, as the report will use them (they stay loaded): a check before a long
    training run that the report can compute its numbers at the end. EvaluationError when neither evaluate's
    caches nor a temporary directory can be written, saying that training does not start."""
    try:
        for name in MODULES:
            _report_module(name)
    except NoWritableCache as err:
        raise err.before_training() from None


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
