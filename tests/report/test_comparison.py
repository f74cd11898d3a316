"""hf_dpo.report.comparison: win/tie/loss by hand-worked cases, lexicographic over named criteria, cut answers
failing every criterion, and inputs that cannot be compared named."""

from __future__ import annotations

import numpy as np
import pytest

from hf_dpo.report.comparison import fail_unfinished, judged_comparison
from hf_dpo.report.estimates import EvaluationError, wilson_interval


def test_judged_comparison_counts_ties_as_half():
    # scores: win, loss, tie (equal), tie (identical text despite different scores), win -> 2 W, 2 T, 1 L
    r = judged_comparison([2, 0, 1, 1.5, 1], [1, 1, 1, 1.0, 0], same_text=[False, False, False, True, False])
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 2, 1, 5)
    assert r["win_rate"].value == pytest.approx((2 + 1) / 5)
    assert r["win_rate"].low == pytest.approx(wilson_interval(3, 5)[0])
    assert r["ties_count_half"] is True
    with pytest.raises(EvaluationError, match="non-empty"):
        judged_comparison([], [])


def test_the_first_criterion_that_differs_decides():
    """(correct, concise): a concise wrong answer loses to a long correct one; between two correct answers
    the concise one wins; a difference within tie_tolerance does not decide."""
    r = judged_comparison(
        [[0, 1], [1, 1], [1.0, 0.9]], [[1, 0], [1, 0], [0.95, 0.0]], criteria=["correct", "concise"]
    )
    assert r["outcomes"] == [0.0, 1.0, 1.0] and r["decided_by"] == {"finished": 0, "correct": 2, "concise": 1}
    loose = judged_comparison([[1.0, 0.9]], [[0.95, 0.0]], criteria=["correct", "concise"], tie_tolerance=0.1)
    assert loose["outcomes"] == [1.0] and loose["decided_by"]["concise"] == 1  # 0.05 on `correct` is a tie
    close = judged_comparison(
        [[1.0, 0.9]], [[0.95, 0.85]], criteria=["correct", "concise"], tie_tolerance=0.1
    )
    assert close["outcomes"] == [0.5] and close["ties"] == 1


def test_cut_answers_take_the_lowest_value_and_lose():
    pv, rv = fail_unfinished(
        np.array([[3.0, 1.0], [2.0, 5.0]]), np.array([[1.0, 4.0], [4.0, 2.0]]), [False, True], [True, False]
    )
    assert pv.tolist() == [[1.0, 1.0], [2.0, 5.0]] and rv.tolist() == [[1.0, 4.0], [1.0, 1.0]]
    r = judged_comparison(
        [[5.0], [0.0]], [[0.0], [0.0]], policy_finished=[False, True], reference_finished=[True, False]
    )
    assert r["outcomes"] == [0.0, 1.0] and r["decided_by"]["finished"] == 2


def test_inputs_that_cannot_be_compared_are_named():
    with pytest.raises(EvaluationError, match="criteria .* name 1 values, but the scores have 2"):
        judged_comparison([[1, 0]], [[0, 1]], criteria=["correct"])
    with pytest.raises(EvaluationError, match="policy_finished has 1 entries for 2 prompts"):
        judged_comparison([1, 0], [0, 1], policy_finished=[True])
    with pytest.raises(EvaluationError, match="non-finite"):
        judged_comparison([float("nan")], [0.0])
    with pytest.raises(EvaluationError, match="give both policy_lengths and reference_lengths"):
        judged_comparison([1.0], [0.0], policy_lengths=[3])
