"""Judged win rate of a policy against its reference as an `evaluate` module: one judge score per prompt for
each side; wins, ties (counted as half a win) and losses, with a Wilson interval on the win rate.

    import evaluate
    metric = evaluate.load("<site-packages>/hf_dpo/report/evaluate_modules/judged_win_rate")
    metric.compute(policy_scores=[1.0, 0.0, 2.0], reference_scores=[0.0, 0.0, 1.0])

It ships inside hf_dpo and loads offline from its directory (`hf_dpo.report.evaluate_metrics.load`).
"""

from dataclasses import asdict

import datasets
import evaluate

from hf_dpo.report.metrics import Estimate, judged_comparison

_DESCRIPTION = """\
Win/tie/loss of policy generations against reference generations on the same prompts, scored by one judge.
A tie is |policy - reference| <= tie_tolerance. win_rate = (wins + ties / 2) / n, with a Wilson score interval
on that fractional count.
"""

_KWARGS_DESCRIPTION = """\
Args:
    policy_scores: the judge's score of the policy's answer, one per prompt.
    reference_scores: the judge's score of the reference's answer to the same prompt.
    tie_tolerance: score differences at most this large are ties (default 0.0).
    confidence: interval level (default 0.95).
Returns:
    n, wins, ties, losses, win_rate {value, low, high, ...}, policy_mean_score, reference_mean_score.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class JudgedWinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"policy_scores": datasets.Value("float64"), "reference_scores": datasets.Value("float64")}
            ),
        )

    def _compute(self, policy_scores, reference_scores, tie_tolerance=0.0, confidence=0.95):
        result = judged_comparison(
            policy_scores, reference_scores, tie_tolerance=tie_tolerance, confidence=confidence
        )
        return {key: asdict(v) if isinstance(v, Estimate) else v for key, v in result.items()}
