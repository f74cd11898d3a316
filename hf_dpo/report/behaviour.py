"""Behaviour, not likelihood: greedy answers of the policy and of the reference (adapters off, same decoding)
on held-out prompts, both scored by one judge, compared prompt by prompt through the `judged_win_rate`
evaluate module (hf_dpo.report.evaluate_offline), plus what the judge does not see: lengths, unfinished and
looping answers, the KL estimate, and the verdict.

    result = judged_generations(model, tokenizer, heldout_prompts(eval_dataset, tokenizer, 32), judge)
    result["wins"], result["ties"], result["losses"], result["win_rate"], result["verdict"]["line"]
    result["generations"]    # every prompt's answers, values and outcome: the rows of eval_generations.jsonl

The prompts come from hf_dpo.report.prompts, the answers from hf_dpo.report.generation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_dpo.report import evaluate_offline
from hf_dpo.report.comparison import fail_unfinished
from hf_dpo.report.estimates import EvaluationError, mean_estimate, plain, proportion
from hf_dpo.report.generation import decode_policy_and_reference, end_token_ids, is_finished
from hf_dpo.report.generations_file import generation_rows, shown_prompt
from hf_dpo.report.options import DEFAULT_OPTIONS, ReportOptions


def judge_answers(
    judge, prompts: list[str | list[dict]], answers: list[str], finished: list[bool]
) -> tuple[tuple[str, ...], np.ndarray]:
    """(criteria, (N, C) values) of the judge on the answers; each prompt as given (a conversation whole to a
    judge that reads conversations, its last user turn to a plain-text one: hf_dpo.pairs.judges)."""
    from hf_dpo.pairs.judges import criteria_scores, judge_criteria

    values = np.asarray(criteria_scores(judge, prompts, answers), dtype=np.float64).reshape(len(answers), -1)
    criteria = judge_criteria(judge)
    if values.shape[1] != len(criteria):
        raise EvaluationError(f"the judge gave {values.shape[1]} values per answer for criteria {criteria}.")
    return criteria, values


def _answers(tokenizer, completion_ids: list[list[int]], ends: set[int]) -> dict[str, list]:
    """One side's answers as text, whether each ended with an end token, and their lengths in tokens."""
    return {
        "answers": [tokenizer.decode(c, skip_special_tokens=True).strip() for c in completion_ids],
        "finished": [is_finished(c, ends) for c in completion_ids],
        "tokens": [len(c) for c in completion_ids],
    }


def _judge_both(judge, prompts: list[str | list[dict]], policy: dict[str, list], reference: dict[str, list]):
    """(criteria, (N, C) policy values, (N, C) reference values), a cut answer failing every criterion."""
    criteria, pv = judge_answers(judge, prompts, policy["answers"], policy["finished"])
    _, rv = judge_answers(judge, prompts, reference["answers"], reference["finished"])
    pv, rv = fail_unfinished(pv, rv, policy["finished"], reference["finished"])
    return criteria, pv, rv


def judged_generations(
    model,
    tokenizer,
    prompts: list[tuple[str | list[dict], list[int]]],
    judge,
    options: ReportOptions = DEFAULT_OPTIONS,
    reference_model=None,
) -> dict[str, Any]:
    """Generate from policy and reference (adapters off, or `reference_model`: a full fine-tune's starting model)
    with identical settings, judge both, compare.

    Answers decode until their end token, up to `options.max_new_tokens`. One that reaches the cap is unfinished:
    it is never judged as a whole answer, but counts as failing every criterion (it takes the lowest value
    the judge gave any answer on that criterion, 0 on one whose values lie in [0, 1]) and loses to every
    finished answer.

    `generations` holds one row per prompt (hf_dpo.report.generations_file): both answers, the values the
    numbers were computed from and the prompt's outcome; the report writes them to eval_generations.jsonl.
    """
    given = [p for p, _ in prompts]  # text, or a conversation's message list
    decoding = dict(
        max_new_tokens=options.max_new_tokens,
        do_sample=options.do_sample,
        temperature=options.temperature,
        top_p=options.top_p,
        seed=options.seed,
    )
    both = decode_policy_and_reference(
        model,
        tokenizer,
        [i for _, i in prompts],
        batch_size=options.batch_size,
        reference_model=reference_model,
        **decoding,
    )
    ends = end_token_ids(model, tokenizer)
    policy, reference = (
        _answers(tokenizer, both.policy_ids, ends),
        _answers(tokenizer, both.reference_ids, ends),
    )
    from hf_dpo.pairs.judges import judge_questions

    criteria, pv, rv = _judge_both(judge, given, policy, reference)
    questions = judge_questions(judge, given)
    result = compare_sides(criteria, pv, rv, policy, reference, options, questions)
    outcomes = result.pop("outcomes")  # (N,) per prompt: into the rows, not into the report's numbers
    result["generations"] = generation_rows(given, criteria, policy, reference, pv, rv, outcomes)
    # log pi(y|x) - log pi_ref(y|x) on the policy's own completions: a Monte-Carlo KL(pi || pi_ref) estimate
    # when sampling; with greedy decoding, the log-ratio at the policy's mode.
    result["kl_estimate"] = plain(mean_estimate(both.policy_logps - both.reference_logps, options.confidence))
    result["decoding"] = {
        k: v for k, v in decoding.items() if options.do_sample or k in ("max_new_tokens", "do_sample")
    } | {"dtype": both.dtype}
    result["generation_seconds"] = round(both.seconds, 2)
    result["samples"] = _pick_samples(
        given,
        [_marked(a, f) for a, f in zip(policy["answers"], policy["finished"])],
        [_marked(a, f) for a, f in zip(reference["answers"], reference["finished"])],
        pv.sum(axis=1).tolist(),
        rv.sum(axis=1).tolist(),
        options.num_samples_shown,
    )
    return result


def _marked(answer: str, finished: bool) -> str:
    return answer if finished else answer + " [unfinished: cut at the decoding cap]"


def compare_sides(
    criteria: tuple[str, ...],
    policy_values: np.ndarray,
    reference_values: np.ndarray,
    policy: dict[str, list],
    reference: dict[str, list],
    options: ReportOptions = DEFAULT_OPTIONS,
    questions: list[str] | None = None,
) -> dict[str, Any]:
    """Every behavioural number of the report (as plain dicts) from per-prompt values (N, C) of both sides
    and their answers ({"answers", "finished", "tokens"} lists, one entry per prompt):
    through the `judged_win_rate` module, per-criterion rates and paired differences, win/tie/loss by
    criteria (finished first) and the length-controlled win rate; then lengths, unfinished and looping
    shares, and the verdict. `outcomes` is the module's per-prompt outcome behind wins / ties / losses (1 win,
    0.5 tie, 0 loss of the policy). `questions` (per prompt, from the judge's `question_of`) make the paired
    intervals and the sign test count questions, not phrasings."""
    from hf_dpo.report.verdict import verdict

    confidence, seed = options.confidence, options.seed
    policy_answers, reference_answers = policy["answers"], reference["answers"]
    policy_finished, reference_finished = policy["finished"], reference["finished"]
    same = [a == b for a, b in zip(policy_answers, reference_answers)]
    words_p = [len(a.split()) for a in policy_answers]
    words_r = [len(a.split()) for a in reference_answers]
    judged = evaluate_offline.compute(
        "judged_win_rate",
        policy_scores=np.asarray(
            policy_values, dtype=np.float64
        ).tolist(),  # (N, C) as lists: evaluate's input
        reference_scores=np.asarray(reference_values, dtype=np.float64).tolist(),
        criteria=list(criteria),
        policy_finished=list(policy_finished),
        reference_finished=list(reference_finished),
        same_text=same,
        policy_lengths=words_p,
        reference_lengths=words_r,
        confidence=confidence,
        seed=seed,
        questions=questions,
    )
    n = judged["n"]
    result = {
        key: judged[key]
        for key in (
            "n",
            "questions",
            "criteria",
            "per_criterion",
            "wins",
            "ties",
            "losses",
            "win_rate",
            "ties_count_half",
        )
    }
    result["length_controlled_win_rate"] = judged["length_controlled_win_rate"]
    result["lengths"] = {
        "policy_words": mean_estimate(words_p, confidence, seed),
        "reference_words": mean_estimate(words_r, confidence, seed),
        "policy_tokens": mean_estimate(policy["tokens"], confidence, seed),
        "reference_tokens": mean_estimate(reference["tokens"], confidence, seed),
    }
    result["unfinished"] = {
        "policy": proportion(float(n - sum(policy_finished)), n, confidence),
        "reference": proportion(float(n - sum(reference_finished)), n, confidence),
    }
    result.update(_degeneration(policy_answers, reference_answers, confidence, seed))
    result["identical_completions"] = int(sum(same))
    result["primary_better"] = judged["primary_better"]  # the verdict's sign test
    result["policy_mean_score"] = judged["policy_mean_score"]
    result["reference_mean_score"] = judged["reference_mean_score"]
    result["outcomes"] = judged["outcomes"]  # (N,): what wins / ties / losses count
    result = plain(result)
    result["verdict"] = verdict(result)
    return result


def _degeneration(
    policy_answers: list[str], reference_answers: list[str], confidence: float, seed: int
) -> dict[str, Any]:
    """Looping shares and the mean repeated 4-gram share of both sides' answers."""
    from hf_dpo.report.degeneration import is_looping, repeated_ngram_share

    n = len(policy_answers)
    return {
        "looping": {
            "policy": proportion(float(sum(map(is_looping, policy_answers))), n, confidence),
            "reference": proportion(float(sum(map(is_looping, reference_answers))), n, confidence),
        },
        "repeated_4gram_share": {
            side: mean_estimate([repeated_ngram_share(a) for a in answers], confidence, seed)
            for side, answers in (("policy", policy_answers), ("reference", reference_answers))
        },
    }


def _pick_samples(prompts, policy, reference, ps, rs, k: int) -> list[dict[str, Any]]:
    """A few side-by-side rows, preferring prompts where the two answers differ (wins first, then losses)."""
    order = sorted(range(len(prompts)), key=lambda i: (policy[i] == reference[i], -(ps[i] - rs[i]), i))
    return [
        {
            **shown_prompt(prompts[i]),
            "policy": policy[i],
            "reference": reference[i],
            "policy_score": ps[i],
            "reference_score": rs[i],
        }
        for i in order[:k]
    ]
