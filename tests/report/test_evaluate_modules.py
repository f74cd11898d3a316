"""The report's metrics as `evaluate` modules: they load offline from the package, a user's `evaluate.load` on
hand-made predictions gives the known answers (lexicographic criteria included), the report's numbers are
those of the modules, and results save in evaluate's format without git, local paths or the network."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from hf_dpo.report import evaluate_offline
from hf_dpo.report.comparison import judged_comparison
from hf_dpo.report.estimates import LOGPS_KEYS, preference_metrics


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # the variables alone act only before import


def _user_load(name: str):
    """What a user does: evaluate.load on the module's directory inside the installed package."""
    import evaluate

    return evaluate.load(str(evaluate_offline.MODULES_DIR / name))


def test_dpo_preference_by_hand():
    """beta = 0.1, two pairs: pair 0 has margin 0.1 * (1 - (-2)) = 0.3, pair 1 margin 0 (a tie counts as
    wrong): accuracy 1/2, mean margin 0.15, mean chosen reward 0.05."""
    got = _user_load("dpo_preference").compute(
        policy_chosen_logps=[-10.0, -12.0],
        policy_rejected_logps=[-20.0, -15.0],
        ref_chosen_logps=[-11.0, -12.0],
        ref_rejected_logps=[-18.0, -15.0],
        beta=0.1,
    )
    assert got["reward_accuracy"]["value"] == 0.5 and got["reward_accuracy"]["n"] == 2
    assert got["rewards/margins"]["value"] == pytest.approx(0.15)
    assert got["rewards/chosen"]["value"] == pytest.approx(0.05)


def test_judged_win_rate_lexicographic_by_hand():
    """Criteria (correct, concise), four prompts:
    0: policy correct and long, reference wrong and concise: `correct` decides, a win;
    1: both correct, only the policy concise: `correct` ties, `concise` decides, a win;
    2: policy wrong and concise, reference correct and long: a loss, however concise;
    3: the same values: a tie.
    2 wins, 1 tie, 1 loss: win rate (2 + 1/2) / 4."""
    got = _user_load("judged_win_rate").compute(
        policy_scores=[[1, 0], [1, 1], [0, 1], [1, 0]],
        reference_scores=[[0, 1], [1, 0], [1, 0], [1, 0]],
        criteria=["correct", "concise"],
    )
    assert (got["wins"], got["ties"], got["losses"]) == (2, 1, 1)
    assert got["outcomes"] == [1.0, 1.0, 0.0, 0.5]
    assert got["decided_by"] == {"finished": 0, "correct": 2, "concise": 1}
    assert got["win_rate"]["value"] == pytest.approx(2.5 / 4)
    correct = got["per_criterion"]["correct"]
    assert correct["policy"]["value"] == 0.75 and correct["reference"]["value"] == 0.75
    assert correct["difference"]["value"] == 0.0 and correct["policy"]["method"] == "wilson"
    assert got["per_criterion"]["concise"]["difference"]["value"] == pytest.approx(0.25)


def test_judged_win_rate_cut_answers_lose_and_fail_every_criterion():
    """The policy's first answer was cut at the cap: its judged values (correct, concise) do not count; it
    loses to the finished reference answer and takes the lowest value seen on each criterion (0, 0)."""
    got = _user_load("judged_win_rate").compute(
        policy_scores=[[1, 1], [1, 1]],
        reference_scores=[[0, 0], [1, 0]],
        criteria=["correct", "concise"],
        policy_finished=[False, True],
        reference_finished=[True, True],
    )
    assert got["outcomes"] == [0.0, 1.0] and got["decided_by"]["finished"] == 1
    assert got["per_criterion"]["correct"]["policy"]["value"] == 0.5  # the cut answer counts as wrong


def test_judged_win_rate_scalar_scores_count_ties_as_half():
    metric = evaluate_offline.load("judged_win_rate")
    got = metric.compute(policy_scores=[2.0, 1.0, 0.0, 1.0], reference_scores=[1.0, 1.0, 1.0, 0.0])
    want = judged_comparison([2.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0])
    assert (got["wins"], got["ties"], got["losses"]) == (2, 1, 1) and got["criteria"] == ["score"]
    assert got["win_rate"]["value"] == pytest.approx(2.5 / 4) == pytest.approx(want["win_rate"].value)


def test_dpo_preference_module_in_batches_equals_the_definition():
    rng = np.random.default_rng(0)
    logps = {k: rng.normal(-20, 3, size=40) for k in LOGPS_KEYS}
    metric = evaluate_offline.load("dpo_preference")
    # add_batch + compute, as a user scoring their own predictions in pieces would
    metric.add_batch(**{k: v[:25] for k, v in logps.items()})
    metric.add_batch(**{k: v[25:] for k, v in logps.items()})
    got = metric.compute(beta=0.2)
    want = preference_metrics(*(logps[k] for k in LOGPS_KEYS), beta=0.2)
    assert set(got) == set(want)
    for name, estimate in want.items():
        assert got[name]["value"] == pytest.approx(estimate.value)
        assert (got[name]["low"], got[name]["high"]) == pytest.approx((estimate.low, estimate.high))


def test_the_reports_behaviour_numbers_are_the_modules():
    """compare_sides (what the report writes) against a user's compute on the same predictions."""
    from hf_dpo.report.behaviour import compare_sides

    rng = np.random.default_rng(3)
    n = 40
    pv = np.stack([rng.random(n) < 0.6, rng.random(n) < 0.8], axis=1).astype(float)  # (N, 2)
    rv = np.stack([rng.random(n) < 0.4, rng.random(n) < 0.3], axis=1).astype(float)  # (N, 2)
    policy_answers = [f"answer {i} " + "word " * int(rng.integers(1, 9)) for i in range(n)]
    reference_answers = [f"answer {i} " + "word " * int(rng.integers(1, 30)) for i in range(n)]
    reference_answers[0] = policy_answers[0]  # one identical pair: a tie whatever the values
    finished_p = [True] * (n - 3) + [False] * 3
    finished_r = [True] * n
    report = compare_sides(
        ("correct", "concise"),
        pv,
        rv,
        {"answers": policy_answers, "finished": finished_p, "tokens": [len(a) for a in policy_answers]},
        {"answers": reference_answers, "finished": finished_r, "tokens": [len(a) for a in reference_answers]},
    )
    user = _user_load("judged_win_rate").compute(
        policy_scores=pv.tolist(),
        reference_scores=rv.tolist(),
        criteria=["correct", "concise"],
        policy_finished=finished_p,
        reference_finished=finished_r,
        same_text=[p == r for p, r in zip(policy_answers, reference_answers)],
        policy_lengths=[len(a.split()) for a in policy_answers],
        reference_lengths=[len(a.split()) for a in reference_answers],
    )
    for key in ("n", "criteria", "per_criterion", "wins", "ties", "losses", "win_rate"):
        assert report[key] == user[key], key
    for key in ("length_controlled_win_rate", "policy_mean_score", "reference_mean_score"):
        assert report[key] == user[key], key
    assert report["unfinished"]["policy"]["value"] == 3 / n


def test_the_reports_preference_numbers_are_the_modules(tmp_path):
    from hf_dpo.report.build import build_report

    (tmp_path / "run_info.json").write_text(json.dumps({"beta": 0.1}))
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    rng = np.random.default_rng(5)
    logps = {k: rng.normal(-30, 4, size=24).tolist() for k in LOGPS_KEYS}
    report = build_report(tmp_path, pair_logps=logps)
    assert report["preference"]["metrics"] == _user_load("dpo_preference").compute(**logps, beta=0.1)
    saved = json.loads((tmp_path / evaluate_offline.RESULTS_FILE).read_text())
    want = report["preference"]["metrics"]["reward_accuracy"]["value"]
    assert saved["preference/reward_accuracy"] == want


def test_report_loads_each_module_once(monkeypatch):
    import evaluate

    evaluate_offline.compute("judged_win_rate", policy_scores=[1.0], reference_scores=[0.0])

    def no_reload(*args, **kwargs):
        raise AssertionError("evaluate.load called again")

    monkeypatch.setattr(evaluate, "load", no_reload)
    got = evaluate_offline.compute("judged_win_rate", policy_scores=[0.0, 1.0], reference_scores=[1.0, 1.0])
    assert (got["n"], got["losses"], got["ties"]) == (2, 1, 1)  # a fresh computation on the cached module


def test_unknown_module_is_named():
    with pytest.raises(ValueError, match="dpo_preference"):
        evaluate_offline.load("accuracy")


def test_saved_results_are_evaluates_format_without_git_or_local_paths(tmp_path, monkeypatch):
    import subprocess

    import evaluate

    monkeypatch.chdir(tmp_path)  # outside any git repository
    monkeypatch.setattr(evaluate.saving, "_git_commit_hash", lambda: None)
    theirs = json.loads(evaluate.save(str(tmp_path / "theirs.json"), win_rate=0.6).read_text())

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"subprocess started: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    path = evaluate_offline.save_results(tmp_path, {"reward_accuracy": 0.75, "win_rate": 0.6})
    saved = json.loads(path.read_text())
    assert saved["reward_accuracy"] == 0.75 and saved["win_rate"] == 0.6
    assert set(saved) - {"reward_accuracy"} == set(theirs) - {"_git_commit_hash", "_interpreter_path"}
    assert str(tmp_path) not in path.read_text()
