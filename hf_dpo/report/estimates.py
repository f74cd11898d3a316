"""Held-out numbers with their uncertainty: Wilson and bootstrap intervals, the DPO preference metrics from
per-pair log-probs, and the rates, paired differences and length-controlled win rate of judged answers (the
comparison itself: hf_dpo.report.comparison). Pure functions of arrays; the report reaches them through the
`evaluate` modules that wrap them (hf_dpo.report.evaluate_offline).

    m = preference_metrics(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1)
    m["reward_accuracy"].fmt()   # '0.750 [0.531, 0.888]'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from hf_dpo.errors import HfDpoError
from hf_dpo.train.loss import LOGPS_ROUNDING, implicit_rewards, ranks_chosen_first

LOGPS_KEYS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


class EvaluationError(HfDpoError, ValueError):
    """The run dir or the inputs cannot be evaluated; the message says which file/key and what to do."""


@dataclass
class Estimate:
    """A point estimate with its interval: `value` in [`low`, `high`] at `confidence`, from `n` items."""

    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = 0.95

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def plain(obj: Any) -> Any:
    """`obj` with every Estimate as a dict and numpy scalars as Python numbers, at any depth: what the report
    files and the `evaluate` modules hold."""
    if isinstance(obj, Estimate):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------------------------------------
# Intervals


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n (successes may be fractional: ties as halves).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at p = 0 or 1 and small n.
    """
    if n <= 0:
        raise EvaluationError("wilson_interval needs n > 0.")
    if not 0 <= successes <= n:
        raise EvaluationError(f"wilson_interval: successes={successes} is outside [0, n={n}].")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval holds p exactly; rounding would put 0/n or n/n a hair outside it (low 1e-17 above 0).
    return min(max(0.0, center - half), p), max(min(1.0, center + half), p)


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, reproducible through `seed`."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    if x.size == 0:
        raise EvaluationError("bootstrap_mean_ci needs at least one value.")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(num_resamples, x.size))  # (B, n)
    means = x[idx].mean(axis=1)  # (B,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def proportion(successes: float, n: int, confidence: float = 0.95) -> Estimate:
    low, high = wilson_interval(successes, n, confidence)
    return Estimate(successes / n, low, high, n, "wilson", confidence)


def mean_estimate(values: Sequence[float] | np.ndarray, confidence: float = 0.95, seed: int = 0) -> Estimate:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    low, high = bootstrap_mean_ci(x, confidence, seed=seed)
    return Estimate(float(x.mean()), low, high, int(x.size), "bootstrap", confidence)


# ----------------------------------------------------------------------------------------------------------
# Likelihood: held-out preference metrics from per-pair log-probs


def as_logps_array(name: str, values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise EvaluationError(f"{name} must hold one log-prob per pair (shape (n,)), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise EvaluationError(
            f"{name} has non-finite values (nan/inf): check the eval split for empty responses."
        )
    return x


def rounding_of(pair_logps: dict[str, Any]) -> float:
    """The relative rounding `DPOTrainer.pair_logps` gives with its log-probs (by the dtype its forward ran in);
    float32's for log-probs given without one."""
    if "logps_rounding" in pair_logps:
        return float(pair_logps["logps_rounding"])
    return LOGPS_ROUNDING


def preference_metrics(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    *,
    beta: float,
    confidence: float = 0.95,
    seed: int = 0,
    rounding: float = LOGPS_ROUNDING,
) -> dict[str, Estimate]:
    """Held-out DPO metrics from four (n,) arrays of sequence log-probs (tensors or arrays).

    rewards/chosen   = beta * (policy_chosen_logps - ref_chosen_logps)        (DPO eq. 5, per pair)
    rewards/margins  = rewards/chosen - rewards/rejected
    reward_accuracy  = share of pairs with margin > 0 beyond its rounding (`ranks_chosen_first`, `rounding`: the
                       log-probs' relative rounding, by the forward's dtype; Wilson interval; a tie counts as wrong)
    logp_shift/*     = mean (policy - reference) log-prob of the held-out responses, in nats
    logp_shift/mean  = mean of the chosen and rejected shifts: how far the policy moved on dataset responses
                       (a proxy; the KL estimate on the policy's own generations is in judged_generations).
    """
    pc, pr, rc, rr = (
        as_logps_array(k, v)
        for k, v in zip(
            LOGPS_KEYS, (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        )
    )
    n = pc.size
    if not (pr.size == rc.size == rr.size == n) or n == 0:
        raise EvaluationError(
            f"per-pair log-probs must have the same non-zero length, got {[a.size for a in (pc, pr, rc, rr)]}."
        )
    chosen_rewards, rejected_rewards = implicit_rewards(pc, pr, rc, rr, beta)  # (n,) each
    margins = chosen_rewards - rejected_rewards  # (n,)
    shift = 0.5 * ((pc - rc) + (pr - rr))  # (n,) per-pair mean shift
    return {
        "reward_accuracy": proportion(
            float(ranks_chosen_first(pc, pr, rc, rr, beta, rounding).sum()), n, confidence
        ),
        "rewards/margins": mean_estimate(margins, confidence, seed),
        "rewards/chosen": mean_estimate(chosen_rewards, confidence, seed),
        "rewards/rejected": mean_estimate(rejected_rewards, confidence, seed),
        "logp_shift/chosen": mean_estimate(pc - rc, confidence, seed),
        "logp_shift/rejected": mean_estimate(pr - rr, confidence, seed),
        "logp_shift/mean": mean_estimate(shift, confidence, seed),
    }


# ----------------------------------------------------------------------------------------------------------
# Behaviour: rates of judged answers, paired differences, length control (hf_dpo.report.comparison uses them)


def rate_estimate(values: Sequence[float] | np.ndarray, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of one criterion: a Wilson interval when every value is 0 or 1 (a pass rate), else a bootstrap."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    if x.size and np.all((x == 0) | (x == 1)):
        return proportion(float(x.sum()), int(x.size), confidence)
    return mean_estimate(x, confidence, seed)


def paired_difference(
    policy_values: Sequence[float] | np.ndarray,
    reference_values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    questions: Sequence[str] | None = None,
) -> Estimate:
    """Mean of policy - reference over the same prompts, with a paired percentile bootstrap interval
    (prompts are resampled, each keeping both of its answers). With `questions` (one key per prompt: prompts
    with one key are phrasings of one question), whole questions are resampled, all their prompts together:
    five phrasings of one question are not five independent pieces of evidence."""
    p = np.asarray(policy_values, dtype=np.float64).reshape(-1)  # (n,)
    r = np.asarray(reference_values, dtype=np.float64).reshape(-1)  # (n,)
    if p.shape != r.shape or p.size == 0:
        raise EvaluationError(
            f"paired_difference needs two equal, non-empty lists; got {p.size} and {r.size}."
        )
    if questions is None:
        est = mean_estimate(p - r, confidence, seed)
        est.method = "paired bootstrap"
        return est
    if len(questions) != p.size:
        raise EvaluationError(f"paired_difference got {len(questions)} question keys for {p.size} prompts.")
    low, high = clustered_bootstrap_mean_ci(p - r, questions, confidence, seed=seed)
    return Estimate(
        float((p - r).mean()), low, high, int(p.size), "question-clustered paired bootstrap", confidence
    )


def cluster_index(keys: Sequence[str]) -> np.ndarray:
    """(n,) the cluster number 0..G-1 of each of n keys (keys in sorted order)."""
    return np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)[1]


def clustered_bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[str],
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over items, resampling whole clusters (each with all its items)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    cluster_of = cluster_index(clusters)  # (n,)
    sums = np.bincount(cluster_of, weights=x)  # (G,)
    sizes = np.bincount(cluster_of).astype(np.float64)  # (G,)
    if sums.size == 1:
        return float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sums.size, size=(num_resamples, sums.size))  # (B, G)
    means = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)  # (B,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """(intercept, slope) of P(y=1 | x) = sigmoid(a + b*x) by Newton's method; y may be fractional (a tie = 0.5).
    A small L2 penalty keeps the fit finite when length separates wins from losses perfectly."""
    design = np.stack([np.ones_like(x), x], axis=1)  # (n, 2)
    w = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ w))  # (n,)
        grad = design.T @ (p - y) + l2 * w  # (2,)
        hess = design.T @ (design * (p * (1 - p))[:, None]) + l2 * np.eye(2)  # (2, 2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def length_controlled_win_rate(
    outcomes: Sequence[float] | np.ndarray,
    policy_lengths: Sequence[float] | np.ndarray,
    reference_lengths: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 500,
    seed: int = 0,
) -> Estimate:
    """The win rate the policy would have if both answers were equally long (the idea of AlpacaEval 2's
    length-controlled win rate): fit P(win) = sigmoid(a + b * tanh(d / sd(d))), d = policy length - reference
    length, to the per-prompt outcomes (win 1, tie 0.5, loss 0), and read it at d = 0: sigmoid(a). A judge
    that rewards shortness or length shows up in b, not in the length-controlled rate. Interval: bootstrap
    over prompts (fixed seed)."""
    y = np.asarray(outcomes, dtype=np.float64).reshape(-1)  # (n,)
    d = np.asarray(policy_lengths, dtype=np.float64) - np.asarray(reference_lengths, dtype=np.float64)  # (n,)
    if y.size == 0 or d.shape != y.shape:
        raise EvaluationError(
            f"length_controlled_win_rate needs equal, non-empty lists ({y.size} vs {d.size})."
        )

    def rate(ys: np.ndarray, ds: np.ndarray) -> float:
        scale = ds.std()
        x = np.tanh(ds / scale) if scale > 0 else np.zeros_like(ds)
        a, _ = _logistic_fit(x, ys)
        return float(1 / (1 + np.exp(-a)))

    value = rate(y, d)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(num_resamples, y.size))  # (B, n)
    boot = np.array([rate(y[i], d[i]) for i in idx])  # (B,)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Estimate(
        value, float(low), float(high), int(y.size), "logistic fit on length, bootstrap", confidence
    )
