"""Judged win rate of a policy against its reference as an `evaluate` module: the judge's values of both sides'
answers to the same prompts, compared prompt by prompt (lexicographically over named criteria), with wins, ties
(counted as half a win), losses and per-criterion rates, each with a 95% interval. The report's numbers are
computed through this module.

    import evaluate
    metric = evaluate.load("<site-packages>/hf_dpo/report/evaluate_modules/judged_win_rate")
    metric.compute(policy_scores=[[1, 0], [0, 1]], reference_scores=[[0, 1], [1, 0]], criteria=["correct", "concise"])

It ships inside hf_dpo and loads offline from its directory (`hf_dpo.report.evaluate_offline.load`).
"""

import datasets
import evaluate

from hf_dpo.report.comparison import judged_comparison
from hf_dpo.report.estimates import plain

_DESCRIPTION = """\
Win/tie/loss of policy answers against reference answers to the same prompts, scored by one judge. A score is
one number per answer, or one vector of criterion values in order of importance (e.g. [correct, concise]):
the first criterion whose values differ (by more than tie_tolerance) decides the prompt, so a concise wrong
answer never beats a correct one. An answer cut at the decoding cap (finished False) loses to a finished one
and fails every criterion (it takes the lowest value seen on each criterion, 0 on one whose values lie in
[0, 1]). Identical answers tie.
win_rate = (wins + ties / 2) / n, with a Wilson score interval on that fractional count; each criterion's
rates get a Wilson interval (0/1 values) or a bootstrap one, their difference a paired bootstrap interval.
"""

_KWARGS_DESCRIPTION = """\
Args:
    policy_scores: per prompt, the judge's score of the policy's answer: a number, or a list of criterion values.
    reference_scores: the same for the reference's answer to the same prompt.
    criteria: names of the criterion values, most important first (default "score" / criterion_0, ...).
    policy_finished, reference_finished: per prompt, whether the answer ended with an end token (default all
        True).
    same_text: per prompt, whether the two answers are identical (they then tie; default all False).
    policy_lengths, reference_lengths: per prompt, answer lengths (e.g. words); given, the result also holds
        length_controlled_win_rate (the win rate at equal length, from a logistic fit).
    tie_tolerance: value differences at most this large count as equal (default 0.0).
    confidence: interval level (default 0.95).
    seed: bootstrap seed (default 0).
    questions: per prompt, the question it asks (prompts sharing a key are phrasings of one question); given,
        difference intervals resample whole questions and primary_better counts questions (default: each
        prompt its own question).
Returns:
    n, criteria, per_criterion {name: {policy, reference, difference}}, wins, ties, losses, win_rate,
    ties_count_half, decided_by {finished | criterion: count}, outcomes (1 win, 0.5 tie, 0 loss per prompt),
    questions (distinct question keys, or None),
    primary_better {policy, reference: prompts (questions) where that side is better on the first criterion, unit},
    policy_mean_score, reference_mean_score[, length_controlled_win_rate]; every interval as
    {value, low, high, n, method, confidence}.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class JudgedWinRate(evaluate.Metric):
    def _info(self):
        vector = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            # One scalar score per answer, or one vector of criterion values: evaluate picks the matching one.
            features=[
                datasets.Features(
                    {
                        "policy_scores": datasets.Value("float64"),
                        "reference_scores": datasets.Value("float64"),
                    }
                ),
                datasets.Features({"policy_scores": vector, "reference_scores": vector}),
            ],
        )

    def _compute(
        self,
        policy_scores,
        reference_scores,
        criteria=None,
        policy_finished=None,
        reference_finished=None,
        same_text=None,
        policy_lengths=None,
        reference_lengths=None,
        tie_tolerance=0.0,
        confidence=0.95,
        seed=0,
        questions=None,
    ):
        result = judged_comparison(
            policy_scores,
            reference_scores,
            criteria=criteria,
            policy_finished=policy_finished,
            reference_finished=reference_finished,
            same_text=same_text,
            policy_lengths=policy_lengths,
            reference_lengths=reference_lengths,
            tie_tolerance=tie_tolerance,
            confidence=confidence,
            seed=seed,
            questions=questions,
        )
        return plain(result)  # Estimates as dicts: the module returns plain JSON-able values
