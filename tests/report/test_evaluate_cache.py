"""The report computes its numbers through `evaluate.load` of the modules shipped in hf_dpo, and `evaluate` writes
on the way: it copies each module's script into HF_MODULES_CACHE and makes a directory under HF_METRICS_CACHE
(both under ~/.cache/huggingface by default). With a read-only home or HF_HOME the report, the last step of a
long run, must still come out, with the same numbers, from a temporary directory that is gone after the run.

Each case runs in a fresh interpreter: `evaluate` reads those variables when it is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COMPUTE = """
import json, sys
from hf_dpo.errors import HfDpoError
from hf_dpo.report import evaluate_offline
try:
    evaluate_offline.preload_report_modules()  # the check a preflight makes before training
    preference = evaluate_offline.compute(
        "dpo_preference",
        policy_chosen_logps=[-10.0, -12.0, -3.0],
        policy_rejected_logps=[-20.0, -15.0, -2.0],
        ref_chosen_logps=[-11.0, -12.0, -3.5],
        ref_rejected_logps=[-18.0, -15.0, -2.5],
        beta=0.1,
    )
    judged = evaluate_offline.compute(
        "judged_win_rate",
        policy_scores=[[1, 0], [1, 1], [0, 1]],
        reference_scores=[[0, 1], [1, 0], [1, 0]],
        criteria=["correct", "concise"],
    )
except HfDpoError as err:
    print("error:", err)
    sys.exit(2)
print(json.dumps({"preference": preference, "judged": judged}, sort_keys=True))
"""


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory path nothing can be written under. As root chmod does not stop writes, so then a path below
    a regular file (mkdir fails with NotADirectoryError, whoever runs it)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        (locked / "probe").mkdir()
    except OSError:
        return locked / "cache"  # chmod holds: not root
    (locked / "probe").rmdir()
    locked.chmod(0o755)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    return blocker / "cache"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HOME", "HF_MODULES_CACHE", "HF_METRICS_CACHE", "XDG_CACHE_HOME", "TMPDIR")
    }
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full_env = {
        **clean,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "TMPDIR": str(tmp_path / "tmp"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", COMPUTE], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict:
    """The numbers with a writable cache."""
    root = tmp_path_factory.mktemp("writable")
    done = _run(root, HF_HOME=str(root / "hf"))
    assert done.returncode == 0, done.stderr
    assert "not writable" not in done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "where", ["HF_MODULES_CACHE", "HF_METRICS_CACHE", "HF_HOME", "HOME"], ids=lambda w: f"unwritable-{w}"
)
def test_the_report_metrics_come_out_with_an_unwritable_cache(tmp_path, expected, where):
    blocked = unwritable_dir(tmp_path)
    env = {where: str(blocked)}
    if where != "HF_HOME":
        env.setdefault("HF_HOME", str(tmp_path / "hf"))  # the other cache stays writable
    if where == "HOME":
        env.pop("HF_HOME")  # every cache defaults under the home
    done = _run(tmp_path, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == expected  # the same numbers
    warnings = [line for line in done.stderr.splitlines() if "not writable" in line]
    assert warnings and all(str(blocked) in line for line in warnings), done.stderr
    assert len(warnings) <= 2  # once per directory, not once per module or call
    leftovers = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("hf_dpo_")]
    assert leftovers == []  # the temporary copy is gone with the process


def test_no_writable_place_at_all_is_one_clear_error(tmp_path, monkeypatch):
    """The cache unwritable and no temporary directory to be had (torch needs one too, so this is simulated)."""
    import tempfile

    import evaluate.config

    from hf_dpo.errors import HfDpoError
    from hf_dpo.report import evaluate_offline

    blocked = unwritable_dir(tmp_path)

    def no_temporary_directory(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/tmp")

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", blocked)
    monkeypatch.setattr(tempfile, "mkdtemp", no_temporary_directory)
    with pytest.raises(HfDpoError, match=r"HF_MODULES_CACHE to a writable directory") as caught:
        evaluate_offline.load("dpo_preference", keep_in_memory=True, cache_dir=str(tmp_path / "metrics"))
    assert str(blocked) in str(caught.value) and "hf-dpo eval" in str(caught.value)
    evaluate_offline._report_module.cache_clear()  # modules another test loaded would hide the problem
    with pytest.raises(HfDpoError, match=r"HF_MODULES_CACHE to a writable directory"):
        evaluate_offline.preload_report_modules()  # the check before training fails the same way


def test_modules_cache_problem_names_the_directory(tmp_path):
    """What a preflight check can call before training: None for a writable cache, a reason otherwise."""
    from hf_dpo.report.evaluate_offline import cache_problem

    assert cache_problem(tmp_path / "fine") is None
    blocked = unwritable_dir(tmp_path)
    problem = cache_problem(blocked)
    assert problem is not None and str(blocked) in problem
