"""Policy against reference on the same prompts, as one judge saw them: a lexicographic comparison over the
judge's named criteria (most important first), cut answers failing every criterion, identical answers tying,
then the win rate and per-criterion rates with their intervals. Pure functions of arrays; the report runs them
through the `judged_win_rate` evaluate module.

    r = judged_comparison([[1, 0], [1, 1]], [[0, 1], [1, 0]], criteria=["correct", "concise"])
    r["wins"], r["win_rate"].fmt(), r["decided_by"]   # 2, '1.000 [0.342, 1.000]', {'finished': 0, 'correct': 1, 'concise': 1}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_dpo.report.estimates import (
    Estimate,
    EvaluationError,
    cluster_index,
    length_controlled_win_rate,
    mean_estimate,
    paired_difference,
    proportion,
    rate_estimate,
)


def _as_criteria_values(name: str, values: Any) -> np.ndarray:
    """(N, C) judge values: one number per prompt (one criterion) or one vector per prompt, in order of importance."""
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise EvaluationError(
            f"{name} must be non-empty and hold one score, or one vector of criterion values, per prompt; "
            f"got shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise EvaluationError(f"{name} has non-finite values (nan/inf); check the judge function.")
    return x


def _per_prompt_flags(name: str, flags: Sequence[bool] | None, n: int, default: bool) -> np.ndarray:
    """(N,) booleans, `default` everywhere when not given."""
    if flags is None:
        return np.full(n, default)
    x = np.asarray(flags, dtype=bool).reshape(-1)
    if x.size != n:
        raise EvaluationError(f"{name} has {x.size} entries for {n} prompts; give one per prompt.")
    return x


def _criteria_names(criteria: Sequence[str] | None, c: int) -> tuple[str, ...]:
    """The names of the C criteria: as given, "score" for a single unnamed one, else criterion_0, ..."""
    if criteria is None:
        return ("score",) if c == 1 else tuple(f"criterion_{i}" for i in range(c))
    if len(criteria) != c:
        raise EvaluationError(
            f"criteria {tuple(criteria)} name {len(criteria)} values, but the scores have {c} per prompt."
        )
    return tuple(criteria)


def fail_unfinished(
    policy_values: np.ndarray, reference_values: np.ndarray, policy_finished, reference_finished
) -> tuple[np.ndarray, np.ndarray]:
    """A cut answer fails every criterion: its (C,) values become the lowest value seen on each criterion, on
    either side (a judge sees only a fragment of it, so its own values would flatter it), and 0 on a criterion
    whose values all lie in [0, 1] (a pass/fail or a rate: when every answer passed, the lowest value seen is
    a pass). Idempotent."""
    both = np.concatenate([policy_values, reference_values], axis=0)  # (2N, C)
    floor = both.min(axis=0)  # (C,)
    floor = np.where((floor >= 0) & (both.max(axis=0) <= 1), 0.0, floor)  # (C,)
    policy = np.where(np.asarray(policy_finished)[:, None], policy_values, floor)  # (N, C)
    reference = np.where(np.asarray(reference_finished)[:, None], reference_values, floor)  # (N, C)
    return policy, reference


def lexicographic_outcomes(
    policy_values: np.ndarray,
    reference_values: np.ndarray,
    policy_finished: np.ndarray,
    reference_finished: np.ndarray,
    same_text: np.ndarray,
    tie_tolerance: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(outcomes, deciding) per prompt: outcome 1 win, 0.5 tie, 0 loss of the policy; deciding is the index of
    the criterion that decided it (-1: finished against unfinished, C: a tie). A finished answer beats a cut
    one; otherwise the first criterion, in order of importance, whose values differ by more than
    `tie_tolerance` decides, so a concise wrong answer never beats a correct one. Identical texts tie."""
    n, c = policy_values.shape
    diff = policy_values - reference_values  # (N, C)
    differs = np.abs(diff) > tie_tolerance  # (N, C)
    deciding = np.where(differs.any(axis=1), differs.argmax(axis=1), c)  # (N,) first criterion that differs
    sign = np.sign(diff[np.arange(n), np.minimum(deciding, c - 1)]) * (deciding < c)  # (N,) +1, 0, -1
    finished_diff = policy_finished.astype(int) - reference_finished.astype(int)  # (N,) +1, 0, -1
    sign = np.where(finished_diff != 0, finished_diff, sign)
    deciding = np.where(finished_diff != 0, -1, deciding)
    sign = np.where(same_text, 0, sign)
    deciding = np.where(same_text, c, deciding)
    return (sign + 1) / 2, deciding


def per_criterion_rates(
    policy_values: np.ndarray,
    reference_values: np.ndarray,
    criteria: Sequence[str],
    confidence: float,
    seed: int,
    questions: Sequence[str] | None = None,
) -> dict[str, dict[str, Estimate]]:
    """Each criterion's mean on both sides of (N, C) values and the paired interval of their difference (whole
    questions resampled, given `questions`)."""
    return {
        name: {
            "policy": rate_estimate(policy_values[:, i], confidence, seed),
            "reference": rate_estimate(reference_values[:, i], confidence, seed),
            "difference": paired_difference(
                policy_values[:, i], reference_values[:, i], confidence, seed, questions=questions
            ),
        }
        for i, name in enumerate(criteria)
    }


def _primary_better(
    policy: np.ndarray, reference: np.ndarray, questions: Sequence[str] | None
) -> dict[str, int | str]:
    """On how many prompts each side's (N,) primary value is higher; with `questions`, on how many questions
    (the sum over a question's prompts decides it)."""
    if questions is None:
        return {
            "policy": int((policy > reference).sum()),
            "reference": int((policy < reference).sum()),
            "unit": "prompts",
        }
    if len(questions) != policy.size:
        raise EvaluationError(f"got {len(questions)} question keys for {policy.size} prompts.")
    per_question = np.bincount(cluster_index(questions), weights=policy - reference)  # (Q,)
    return {
        "policy": int((per_question > 0).sum()),
        "reference": int((per_question < 0).sum()),
        "unit": "questions",
    }


def judged_comparison(
    policy_scores,
    reference_scores,
    *,
    criteria: Sequence[str] | None = None,
    policy_finished: Sequence[bool] | None = None,
    reference_finished: Sequence[bool] | None = None,
    same_text: Sequence[bool] | None = None,
    policy_lengths: Sequence[float] | None = None,
    reference_lengths: Sequence[float] | None = None,
    tie_tolerance: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
    questions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Policy against reference on the same prompts, judged: win/tie/loss and per-criterion rates.

    Scores are one number per prompt, or one vector of criterion values per prompt in order of importance
    (`criteria` names them). Prompts are compared lexicographically (`lexicographic_outcomes`); a cut answer
    (`*_finished` False) fails every criterion (`fail_unfinished`) and loses to a finished one; identical
    completions (`same_text`) tie. The win rate counts ties as half a win: (wins + ties / 2) / n, with a
    Wilson interval on that fractional count. Each criterion gets both sides' rates and the paired bootstrap
    interval of their difference; with answer lengths, also the length-controlled win rate.
    `questions` (one key per prompt, equal for phrasings of one question) make the difference intervals resample
    whole questions and the sign test count questions: repeated phrasings are not independent evidence.
    """
    pv = _as_criteria_values("policy_scores", policy_scores)  # (N, C)
    rv = _as_criteria_values("reference_scores", reference_scores)  # (N, C)
    if pv.shape != rv.shape:
        raise EvaluationError(
            f"judge scores must be two equal, non-empty lists; got {pv.shape} (policy) and {rv.shape} (reference)."
        )
    n, c = pv.shape
    criteria = _criteria_names(criteria, c)
    pf = _per_prompt_flags("policy_finished", policy_finished, n, True)  # (N,)
    rf = _per_prompt_flags("reference_finished", reference_finished, n, True)  # (N,)
    same = _per_prompt_flags("same_text", same_text, n, False)  # (N,)
    pv, rv = fail_unfinished(pv, rv, pf, rf)
    outcomes, deciding = lexicographic_outcomes(pv, rv, pf, rf, same, tie_tolerance)  # (N,), (N,)
    wins, losses = int((outcomes == 1).sum()), int((outcomes == 0).sum())
    result = {
        "n": n,
        "criteria": list(criteria),
        "per_criterion": per_criterion_rates(pv, rv, criteria, confidence, seed, questions),
        "questions": None if questions is None else len(set(questions)),
        "wins": wins,
        "ties": n - wins - losses,
        "losses": losses,
        "win_rate": proportion(float(outcomes.sum()), n, confidence),
        "ties_count_half": True,
        "decided_by": {
            name: int((deciding == i).sum()) for i, name in [(-1, "finished"), *enumerate(criteria)]
        },
        "outcomes": outcomes.tolist(),
        # The first criterion: on how many prompts (questions) each side is the better one (the verdict's sign test).
        "primary_better": _primary_better(pv[:, 0], rv[:, 0], questions),
        "policy_mean_score": mean_estimate(pv.sum(axis=1), confidence, seed),
        "reference_mean_score": mean_estimate(rv.sum(axis=1), confidence, seed),
    }
    if policy_lengths is not None or reference_lengths is not None:
        if policy_lengths is None or reference_lengths is None:
            raise EvaluationError("give both policy_lengths and reference_lengths, or neither.")
        result["length_controlled_win_rate"] = length_controlled_win_rate(
            outcomes, policy_lengths, reference_lengths, confidence, seed=seed
        )
    return result
