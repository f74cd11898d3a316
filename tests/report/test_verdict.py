"""The report cannot hide a worse model: the verdict on the primary criterion, the length-controlled win rate
and the loop detector (decoding that marks cut answers as unfinished: tests/report/test_generation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hf_dpo.report.behaviour import compare_sides
from hf_dpo.report.degeneration import is_looping, repeated_ngram_share
from hf_dpo.report.estimates import length_controlled_win_rate, paired_difference
from hf_dpo.report.markdown import console_summary
from hf_dpo.report.verdict import warnings


def _sides(
    policy_correct,
    reference_correct,
    *,
    policy_answers=None,
    reference_answers=None,
    finished=None,
    questions=None,
):
    """compare_sides on a two-criterion judge (correct, concise) with the given per-prompt correctness."""
    n = len(policy_correct)
    pv = np.stack([np.asarray(policy_correct, float), np.ones(n)], axis=1)  # (N, 2)
    rv = np.stack([np.asarray(reference_correct, float), np.zeros(n)], axis=1)  # (N, 2)
    policy_answers = policy_answers or [f"short answer {i}" for i in range(n)]
    reference_answers = reference_answers or [
        f"a much longer answer number {i} from the reference" for i in range(n)
    ]
    return compare_sides(
        ("correct", "concise"),
        pv,
        rv,
        {
            "answers": policy_answers,
            "finished": finished or [True] * n,
            "tokens": [len(a.split()) for a in policy_answers],
        },
        {
            "answers": reference_answers,
            "finished": [True] * n,
            "tokens": [len(a.split()) for a in reference_answers],
        },
        questions=questions,
    )


def _json(obj):
    import json

    from hf_dpo.report.estimates import plain

    return json.loads(json.dumps(plain(obj)))


def test_verdict_is_not_improved_when_the_primary_criterion_gets_worse():
    """Every policy answer is concise (the secondary criterion), so it wins most head-to-heads on a naive
    score, yet it is correct far less often: the verdict must say so, in the console too."""
    rng = np.random.default_rng(0)
    reference = (rng.random(96) < 0.5).astype(float)
    policy = reference * (rng.random(96) < 0.4)  # keeps 40% of the reference's correct answers
    beh = _json(_sides(policy, reference))
    v = beh["verdict"]
    assert v["label"] == "not improved" and v["criterion"] == "correct"
    assert v["difference"]["high"] < 0 and "worse" in v["line"]
    assert beh["per_criterion"]["concise"]["difference"]["low"] > 0  # the secondary criterion did improve
    console = console_summary({"behaviour": beh, "verdict": v}, "runs/x")
    assert console.splitlines()[0].startswith("Verdict: not improved on correct")


def test_verdict_improved_and_mixed():
    reference = np.r_[np.zeros(60), np.ones(36)]
    policy = np.r_[np.ones(40), np.zeros(20), np.ones(36)]  # +40 correct answers, none lost
    assert _json(_sides(policy, reference))["verdict"]["label"] == "improved"
    # The same gain, but ten policy answers loop: mixed, and the line says why.
    loops = ["21 minus 16 is 21. " * 5] * 10 + [f"answer {i}" for i in range(86)]
    mixed = _json(_sides(policy, reference, policy_answers=loops))["verdict"]
    assert mixed["label"] == "mixed" and "more looping answers" in mixed["line"]


def test_unfinished_answers_count_against_the_policy():
    reference = np.ones(20)
    beh = _json(_sides(np.ones(20), reference, finished=[False] * 5 + [True] * 15))
    assert beh["unfinished"]["policy"]["value"] == 0.25 and beh["unfinished"]["reference"]["value"] == 0
    assert beh["losses"] == 5  # a cut answer loses to a finished one whatever it reads like


def test_paired_difference_uses_the_pairing():
    """The same two rates, paired prompt by prompt: tight when the policy fixes exactly the misses."""
    reference = np.r_[np.zeros(30), np.ones(70)]
    policy = np.ones(100)
    d = paired_difference(policy, reference)
    assert d.value == pytest.approx(0.3) and d.low > 0.2 and d.method == "paired bootstrap"


def test_length_controlled_win_rate_removes_a_taste_for_short_answers():
    """A judge that mostly prefers the shorter answer: the policy is shorter on 80% of prompts and wins 3/4
    of those, but loses 3/4 where it is longer. Raw win rate ~0.65; at equal length it is a coin flip."""
    rng = np.random.default_rng(1)
    n = 400
    shorter = rng.random(n) < 0.8
    policy_len = np.where(shorter, 10, 30) + rng.integers(0, 5, n)
    reference_len = np.full(n, 20)
    win = np.where(shorter, rng.random(n) < 0.75, rng.random(n) < 0.25).astype(float)
    lc = length_controlled_win_rate(win, policy_len, reference_len)
    assert win.mean() > 0.6
    assert lc.value == pytest.approx(0.5, abs=0.08) and lc.low < 0.5 < lc.high
    # Without any length difference, it is the plain win rate.
    same = length_controlled_win_rate(np.r_[np.ones(70), np.zeros(30)], np.full(100, 20), np.full(100, 20))
    assert same.value == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize(
    "text, loops",
    [
        ("21 minus 16 is 21. " * 5, True),
        ("Ladishad" * 8, True),
        ("The capital of Mali is Bamako.", False),
        ("To add 34 and 32, add the tens and the ones: 34 + 32 = 66. So 34 + 32 is 66.", False),
        ("", False),
    ],
)
def test_loop_detector(text, loops):
    assert is_looping(text) is loops


def test_repeated_ngram_share():
    assert repeated_ngram_share("a b c d a b c d") == pytest.approx(1 / 5)
    assert repeated_ngram_share("one two three") == 0.0


def test_warnings_name_the_levers():
    report = {
        "preference": {"metrics": {"logp_shift/chosen": {"value": -42.0, "low": -50.0, "high": -30.0}}},
        "behaviour": {"kl_estimate": {"value": 14.7, "low": 10.0, "high": 20.0}},
    }
    found = warnings(report)
    assert len(found) == 2 and "Likelihood displacement" in found[0] and "Large KL" in found[1]
    assert all("rpo_alpha" in w and "beta" in w and "learning_rate" in w and "epochs" in w for w in found)
    assert (
        warnings({"preference": {"metrics": {"logp_shift/chosen": {"value": 1, "low": 0.5, "high": 2}}}})
        == []
    )


def test_phrasings_of_one_question_are_one_piece_of_evidence():
    """The policy is right where the reference is wrong on 3 questions, asked in 8 phrasings each, and the two
    agree on 27 other questions. Counted by prompt that is 24 vs 0 (improved); counted by question, 3 vs 0,
    which neither the question-clustered interval nor an exact sign test (p = 0.25) can tell from chance."""
    questions = [f"q{i}" for i in range(3) for _ in range(8)] + [f"other{i}" for i in range(27)]
    policy = [1.0] * 24 + [1.0] * 13 + [0.0] * 14
    reference = [0.0] * 24 + [1.0] * 13 + [0.0] * 14
    by_prompt = _json(_sides(policy, reference))
    by_question = _json(_sides(policy, reference, questions=questions))
    assert by_prompt["verdict"]["label"] == "improved"
    v = by_question["verdict"]
    assert v["label"] == "not improved" and by_question["questions"] == 30
    assert "asking 30 questions" in v["line"]
    assert by_question["primary_better"] == {"policy": 3, "reference": 0, "unit": "questions"}
    assert by_prompt["primary_better"] == {"policy": 24, "reference": 0, "unit": "prompts"}
    assert v["difference"]["method"] == "question-clustered paired bootstrap"
    assert v["difference"]["value"] == pytest.approx(24 / 51)  # the estimate is still the mean over prompts


def test_question_clustered_interval_equals_the_interval_over_question_means():
    """Equal-sized questions whose phrasings agree: resampling questions is resampling their values."""
    rng = np.random.default_rng(1)
    per_question = (rng.random(40) < 0.6).astype(float) - (rng.random(40) < 0.3)  # (40,) values in {-1, 0, 1}
    phrasings = 6
    diff = paired_difference(
        np.repeat(per_question, phrasings),
        np.zeros(40 * phrasings),
        questions=[f"q{i:02d}" for i in range(40) for _ in range(phrasings)],  # sorted as the values are
    )
    plain_over_questions = paired_difference(per_question, np.zeros(40))
    by_prompt = paired_difference(np.repeat(per_question, phrasings), np.zeros(40 * phrasings))
    assert (diff.low, diff.high) == pytest.approx((plain_over_questions.low, plain_over_questions.high))
    assert diff.n == 40 * phrasings
    assert by_prompt.high - by_prompt.low < 0.6 * (diff.high - diff.low)  # repeats alone shrink it ~sqrt(6)x
