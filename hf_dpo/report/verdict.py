"""The one-line verdict of a run, and the warnings the numbers call for.

    verdict(behaviour)      # {"label": "improved" | "not improved" | "mixed", "line": "Verdict: ...", ...}
    warnings(report)        # ["Likelihood displacement: ...", ...]

The verdict is decided on the judge's primary (first) criterion alone, by the paired interval of the
policy-minus-reference difference over the same held-out prompts:

    improved      the interval lies above 0, and the policy has no more unfinished or looping answers than the
                  reference and no other criterion whose interval lies below 0
    mixed         the interval lies above 0, but one of those got worse (named in the line)
    not improved  the interval reaches 0 or lies below it (then: "worse")

Where the judge says which prompts ask the same question (`question_of`: phrasings of one question), the interval
resamples whole questions and the sign test counts questions, so repeated phrasings are not counted as independent
evidence.
An interval off 0 also needs the exact sign test on the prompts where the two sides' primary values differ
(policy better on k, reference on j) at the same level: with few such prompts the percentile bootstrap is
too narrow (4 vs 0 of 96 puts it above 0, while p = 0.125), and then the verdict is "not improved" and says why.

So no headline can claim a win when the primary criterion got worse. Pure functions of report dicts.
"""

from __future__ import annotations

import math
from typing import Any

KL_WARN_NATS = 5.0  # log pi/pi_ref on the policy's own answers above this: the policy has moved far
LEVERS = "the SFT term (rpo_alpha), a larger beta, a lower learning_rate or fewer num_train_epochs"


def _interval(e: dict[str, Any]) -> str:
    return f"{e['value']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (McNemar's exact test for 0/1 values): p of a split at least this uneven
    among the wins + losses prompts where the sides differ, if each were equally likely to be the better one."""
    m = wins + losses
    tail = sum(math.comb(m, i) for i in range(max(wins, losses), m + 1)) / 2**m
    return min(1.0, 2 * tail)


def verdict(behaviour: dict[str, Any]) -> dict[str, Any]:
    """The verdict on the primary criterion of judged generations (see the module docstring)."""
    primary = behaviour["criteria"][0]
    stats = behaviour["per_criterion"][primary]
    diff = stats["difference"]
    conf = int(round(100 * diff.get("confidence", 0.95)))
    worse = []
    if behaviour["unfinished"]["policy"]["value"] > behaviour["unfinished"]["reference"]["value"]:
        worse.append("more unfinished answers")
    if behaviour["looping"]["policy"]["value"] > behaviour["looping"]["reference"]["value"]:
        worse.append("more looping answers")
    worse += [
        f"{name} worse ({_interval(s['difference'])})"
        for name, s in behaviour["per_criterion"].items()
        if name != primary and s["difference"]["high"] < 0
    ]
    better = behaviour.get("primary_better")  # absent in reports written before it existed
    p_sign = sign_test(better["policy"], better["reference"]) if better else None
    significant = p_sign is None or p_sign < 1 - diff.get("confidence", 0.95)
    if diff["low"] > 0 and significant:
        label = "mixed" if worse else "improved"
    else:
        label = "not improved"
    detail = (
        f"{primary}: policy {stats['policy']['value']:.3f} vs reference {stats['reference']['value']:.3f}, "
        f"difference {_interval(diff)} ({conf}% {diff['method']} interval, {diff['n']} held-out prompts"
    )
    trained_on = behaviour.get("prompts_in_training")  # absent when not checked (hf-dpo eval, older reports)
    if trained_on:
        detail += f", {trained_on} of them training prompts"
    if behaviour.get("questions"):  # absent in reports written before question keys, None without them
        detail += f"{',' if trained_on else ''} asking {behaviour['questions']} questions"
    detail += ")"
    if label == "not improved":
        if (diff["low"] > 0 or diff["high"] < 0) and not significant:
            detail += (
                f"; the sides differ on only {better['policy'] + better['reference']} {better.get('unit', 'prompts')} "
                f"({better['policy']} better for the policy, {better['reference']} for the reference): "
                f"not significant by an exact sign test (p = {p_sign:.3f})"
            )
        else:
            detail += "; worse" if diff["high"] < 0 else "; the interval includes 0"
    if label == "mixed":
        detail += "; but " + ", ".join(worse)
    return {
        "label": label,
        "criterion": primary,
        "difference": diff,
        "policy": stats["policy"],
        "reference": stats["reference"],
        "worse": worse,
        "line": f"Verdict: {label} on {detail}.",
    }


def warnings(report: dict[str, Any]) -> list[str]:
    """Likelihood displacement (the chosen answers' log-prob fell; whether the rejected fell further, which the
    explanation depends on), held-out prompts that were trained on, and a large KL estimate, with the levers."""
    out = []
    pref = (report.get("preference") or {}).get("metrics") or {}
    chosen, rejected = pref.get("logp_shift/chosen"), pref.get("logp_shift/rejected")
    if chosen and chosen["high"] < 0:
        head = (
            f"Likelihood displacement: on held-out pairs the chosen answers' log-prob fell by "
            f"{-chosen['value']:.1f} nats on average (interval {_interval(chosen)})"
        )
        if rejected is None or rejected["value"] < chosen["value"]:
            why = ": the policy pushed the rejected answers down by pushing everything down, chosen ones included"
        else:  # the rejected fell no further than the chosen: that explanation would contradict the numbers
            than = "more than" if rejected["value"] > chosen["value"] else "as much as"
            why = (
                f", {than} the rejected answers' ({-rejected['value']:.1f} nats): the policy moved away from the "
                f"held-out chosen answers, not towards them"
            )
        out.append(f"{head}{why}. Levers: {LEVERS}.")
    overlap = report.get("training_overlap") or {}
    trained_on = [
        f"{overlap[key]} of the {overlap[key + '_of']} {what}"
        for key, what in (("judged_prompts", "judged prompts"), ("eval_pairs", "held-out pairs"))
        if overlap.get(key)
    ]
    if trained_on:
        out.append(
            f"Not held out: {' and '.join(trained_on)} have a prompt of the training data, so those numbers "
            "show the policy on prompts it was trained on, not on new ones. Keep training prompts out of "
            "test_prompts_file and the eval split (dataset_test_split, eval_fraction)."
        )
    kl = (report.get("behaviour") or {}).get("kl_estimate")
    if kl and kl["value"] > KL_WARN_NATS:
        out.append(
            f"Large KL estimate: log pi/pi_ref on the policy's own answers is {kl['value']:.1f} nats "
            f"(> {KL_WARN_NATS:g}): the policy moved far from the reference, which often shows as odd or looping "
            f"answers. Levers: {LEVERS}."
        )
    return out
