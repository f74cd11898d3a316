"""The report's metrics as `evaluate` modules: they load offline from the package, give the same numbers as
hf_dpo.report.metrics, and results save in evaluate's format without local paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_dpo.report import evaluate_metrics
from hf_dpo.report.metrics import judged_comparison, preference_metrics


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))


def test_dpo_preference_module_equals_the_report_definition():
    rng = np.random.default_rng(0)
    logps = {k: rng.normal(-20, 3, size=40) for k in evaluate_metrics.LOGPS_KEYS}
    metric = evaluate_metrics.load("dpo_preference")
    # add_batch + compute, as a user scoring their own predictions in pieces would
    metric.add_batch(**{k: v[:25] for k, v in logps.items()})
    metric.add_batch(**{k: v[25:] for k, v in logps.items()})
    got = metric.compute(beta=0.2)
    want = preference_metrics(*(logps[k] for k in evaluate_metrics.LOGPS_KEYS), beta=0.2)
    assert set(got) == set(want)
    for name, estimate in want.items():
        assert got[name]["value"] == pytest.approx(estimate.value)
        assert (got[name]["low"], got[name]["high"]) == pytest.approx((estimate.low, estimate.high))


def test_judged_win_rate_module_counts_ties_as_half():
    metric = evaluate_metrics.load("judged_win_rate")
    got = metric.compute(policy_scores=[2.0, 1.0, 0.0, 1.0], reference_scores=[1.0, 1.0, 1.0, 0.0])
    want = judged_comparison([2.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0])
    assert (got["wins"], got["ties"], got["losses"]) == (2, 1, 1)
    assert got["win_rate"]["value"] == pytest.approx(2.5 / 4) == pytest.approx(want["win_rate"].value)


def test_unknown_module_is_named():
    with pytest.raises(ValueError, match="dpo_preference"):
        evaluate_metrics.load("accuracy")


def test_saved_results_are_evaluates_format_without_local_paths(tmp_path):
    path = evaluate_metrics.save_results(tmp_path, {"reward_accuracy": 0.75, "win_rate": 0.6})
    saved = json.loads(path.read_text())
    assert saved["reward_accuracy"] == 0.75 and saved["win_rate"] == 0.6
    assert "_evaluate_version" in saved and "_timestamp" in saved  # written by evaluate.save
    assert str(tmp_path) not in path.read_text() and "_interpreter_path" not in saved
