"""Step 1, labelling with a judge: a samples file -> preference pairs (the rows `hf-dpo train` reads).

    label_with_judge("runs/x/samples_train.jsonl", "hf_dpo.pairs.demo_task:judge", "runs/x/pairs/train.jsonl")

For each prompt: score every completion (`_score_rows`), rank them by the judge's criteria with unfinished
answers last (`_rank_keys`), keep one copy of each distinct non-empty answer (`distinct_answers`: an empty
answer or an answer paired with its own text is a pair `hf-dpo train` refuses), take the best vs the worst (or
every two that rank differently) as chosen vs rejected (`_ranked_pairs`), and keep a pair only when its chosen
answer passes the gates (finished, and at least `min_chosen_score`: `PairRules`).

Every prompt either gives pairs or is counted under the one reason it gives none (`Skipped`): fewer than 2
distinct non-empty answers (zero or one completion, identical or empty ones), no finished answer, a tie (every
answer ranks the same), or every pair's chosen answer below the minimum. `label_with_judge` logs that account.

Rows: `prompt`, `chosen`, `rejected`, plus `score_chosen`, `score_rejected`, `margin`, `scores`,
`criteria_chosen`, `criteria_rejected`, `finished_chosen`, `finished_rejected`, `index`.

Why one file over 400 lines: scoring, ranking, pairing, the gates and the account of prompts without pairs are
one path from a samples file to its pairs, sharing `PairRules` and the `Skipped` counts; split, a reader would
follow one prompt across modules.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_dpo.files import atomic_write_jsonl
from hf_dpo.pairs.formats import (
    Prompt,
    SamplingError,
    check_finished_flags,
    check_judge_pairs,
    finished_flags,
    pair_row,
    read_samples,
)
from hf_dpo.pairs.judges import (
    SINGLE_CRITERION,
    Criteria,
    Judge,
    JudgeError,
    check_score,
    criteria_scores,
    judge_criteria,
    load_judge,
)

logger = logging.getLogger(__name__)

PAIRS_PER_PROMPT = ("best_worst", "all")


@dataclass(frozen=True)
class PairRules:
    """Which pairs a prompt gives: `pairs_per_prompt`, whether an unfinished answer may be chosen, and the gate
    on the chosen answer (`gate`: (criterion position, minimum value), or None)."""

    pairs_per_prompt: str
    allow_unfinished_chosen: bool
    gate: tuple[int, float] | None

    def may_choose(self, finished: bool) -> bool:
        return finished or self.allow_unfinished_chosen

    def reaches_minimum(self, chosen_scores: Criteria) -> bool:
        return self.gate is None or chosen_scores[self.gate[0]] >= self.gate[1]


@dataclass
class Skipped:
    """What labelling left out, for the stats and the dataset card: each prompt without a pair under the one
    reason it has none, and (`below_min_chosen`) every single pair the gate dropped."""

    too_few_answers: int = 0  # prompts with fewer than 2 distinct non-empty answers
    no_finished_answer: int = 0  # prompts whose answers were all cut off (and that is not allowed)
    ties: int = 0  # prompts whose answers all rank the same
    all_below_min_chosen: int = 0  # prompts whose every pair was dropped by the gate
    below_min_chosen: int = 0  # pairs dropped by the gate (a prompt with "all" can lose some and keep others)

    def prompts(self) -> int:
        """Prompts that gave no pair."""
        return self.too_few_answers + self.no_finished_answer + self.ties + self.all_below_min_chosen


def label_with_judge(
    samples_file: str | os.PathLike,
    judge: Judge | str,
    pairs_file: str | os.PathLike,
    pairs_per_prompt: str = "best_worst",
    *,
    allow_unfinished_chosen: bool = False,
    min_chosen_score: float | None = None,
    min_chosen_criterion: str | None = None,
) -> dict[str, Any]:
    """Completions of each prompt scored by `judge` -> preference pairs in `pairs_file`.

    Answers are ranked by the judge's criteria, most important first (lexicographically). An unfinished
    answer (it stopped at max_new_tokens without an end token) ranks below every finished one and is never
    chosen, unless `allow_unfinished_chosen`. `min_chosen_score`: the chosen answer must reach it on
    `min_chosen_criterion` (default: the judge's first criterion); pairs below it are dropped and counted.

    pairs_per_prompt: "best_worst" (one pair: the best vs the worst completion) or "all" (every two
    completions that rank differently, the higher one chosen: up to K(K-1)/2 pairs per prompt).
    Empty answers are never paired, and copies of one text (up to surrounding whitespace) are one answer.
    A prompt with fewer than 2 distinct non-empty answers, without a finished answer, whose answers all rank the
    same (a tie), or whose every pair is below the minimum gives no pair: it is counted under that reason, so
    prompts == prompts_with_pairs + too_few_answers + no_finished_answer + ties + all_below_min_chosen.

    Returns {"prompts", "pairs", "prompts_with_pairs", "too_few_answers", "no_finished_answer", "ties",
    "all_below_min_chosen", "below_min_chosen", "judge", "criteria", "pairs_file", "composition"}.
    The pairs file is only replaced once every prompt is scored, so a failing judge leaves the previous pairs
    and the samples untouched.
    """
    _check_pairs_file(samples_file, pairs_file)  # before a reward model loads
    judge = load_judge(judge) if not hasattr(judge, "score") else judge
    if pairs_per_prompt not in PAIRS_PER_PROMPT:
        raise SamplingError(f"pairs_per_prompt must be 'best_worst' or 'all', not '{pairs_per_prompt}'.")
    samples = read_samples(samples_file)
    for row in samples:
        check_finished_flags(row, samples_file)
    scores = _score_rows(judge, samples)
    criteria = judge_criteria(judge)
    rules = PairRules(
        pairs_per_prompt,
        allow_unfinished_chosen,
        chosen_gate(criteria, min_chosen_score, min_chosen_criterion),
    )
    pairs, skipped = [], Skipped()
    for row, row_scores in zip(samples, scores):
        pairs += pairs_of_prompt(row, row_scores, criteria, rules, skipped)
    try:
        atomic_write_jsonl(pairs_file, pairs)
    except OSError as err:  # a full disk, a lost mount: the atomic write left the previous pairs in place
        raise SamplingError(
            f"{pairs_file}: could not write the pairs ({err.strerror or err}). The samples and any previous pairs "
            "are kept: fix the disk problem and run again (the judge only re-scores, nothing is sampled)."
        ) from None
    stats = {
        "prompts": len(samples),
        "pairs": len(pairs),
        "prompts_with_pairs": len(samples) - skipped.prompts(),
        "too_few_answers": skipped.too_few_answers,
        "no_finished_answer": skipped.no_finished_answer,
        "ties": skipped.ties,
        "all_below_min_chosen": skipped.all_below_min_chosen,
        "below_min_chosen": skipped.below_min_chosen,
        "judge": judge.name,
        "criteria": list(criteria),
        "pairs_file": str(pairs_file),
        "composition": pair_composition(pairs, samples),
    }
    _log_account(samples_file, stats, rules)
    return stats


def _check_pairs_file(samples_file: str | os.PathLike, pairs_file: str | os.PathLike) -> None:
    """The pairs file is replaced: it must not be the samples file, a directory, or pairs the judge did not make
    (`check_judge_pairs`). `hf-dpo sample` checks this up front (`check_output_files`); Python callers come here."""
    pairs = Path(pairs_file)
    if pairs.is_dir():
        raise SamplingError(
            f"pairs file {pairs} is a directory; give a file name, e.g. {pairs / 'train.jsonl'}."
        )
    if pairs.resolve() == Path(samples_file).resolve() or (
        pairs.exists() and Path(samples_file).exists() and pairs.samefile(samples_file)
    ):
        raise SamplingError(
            f"pairs file {pairs} is the samples file: writing the pairs would replace the samples. Give another "
            "pairs file."
        )
    check_judge_pairs(pairs)


# The stats key of each reason a prompt gives no pair, and how it reads after its count.
NO_PAIR_REASONS = (
    ("too_few_answers", "with fewer than 2 distinct non-empty answers"),
    ("no_finished_answer", "without a finished answer"),
    ("ties", "tie"),
    ("all_below_min_chosen", "with every chosen answer below min_chosen_score"),
)


def no_pair_account(stats: dict[str, Any], zeros: bool = False) -> str:
    """The prompts without a pair, by reason, from `label_with_judge`'s stats: '2 with fewer than 2 distinct
    non-empty answers, 1 tie'; every reason with `zeros`, else 'none' when every prompt gave pairs."""
    parts = []
    for key, why in NO_PAIR_REASONS:
        n = stats[key]
        if n or zeros:
            parts.append(f"{n} {why}{'s' if why == 'tie' and n != 1 else ''}")
    return ", ".join(parts) or "none"


def _log_account(samples_file, stats: dict[str, Any], rules: PairRules) -> None:
    """One line saying what became of every prompt; a warning with the levers when no pair came out at all."""
    pairs = stats["pairs"]
    account = no_pair_account(stats)
    dropped = f"; {stats['below_min_chosen']} pair(s) below min_chosen_score dropped" if rules.gate else ""
    logger.info(
        "%s: %d prompts -> %d pair%s from %d prompts; prompts without a pair: %s%s.",
        samples_file,
        stats["prompts"],
        pairs,
        "" if pairs == 1 else "s",
        stats["prompts_with_pairs"],
        account,
        dropped,
    )
    if pairs == 0:
        logger.warning(
            "%s gave no preference pair at all (%s). Sample more varied answers (a higher sampling_temperature, "
            "more num_samples_per_prompt, a larger max_new_tokens if answers are cut off), or loosen "
            "allow_unfinished_chosen / min_chosen_score, then run `hf-dpo sample` again.",
            samples_file,
            account,
        )


def check_chosen_gate(judge_spec: str | None, min_chosen_score: float | None, criterion: str | None) -> None:
    """min_chosen_criterion among the criteria the recipe's judge declares (a reward model's one: score), before
    any sampling, not when labelling after it. A judge that declares none is checked at its first score."""
    if judge_spec is None or min_chosen_score is None or criterion is None:
        return
    if judge_spec.strip().startswith("rm:"):
        criteria = SINGLE_CRITERION  # without loading the reward model
    else:
        criteria = getattr(load_judge(judge_spec), "criteria", None)
    if criteria:
        chosen_gate(tuple(criteria), min_chosen_score, criterion)


def chosen_gate(
    criteria: tuple[str, ...], min_chosen_score: float | None, min_chosen_criterion: str | None
) -> tuple[int, float] | None:
    """(criterion position, minimum) the chosen answer must reach, or None without `min_chosen_score`."""
    if min_chosen_score is None:
        return None
    name = min_chosen_criterion or criteria[0]
    if name not in criteria:
        raise SamplingError(
            f"min_chosen_criterion '{name}' is not one of the judge's criteria {list(criteria)}: set it to one of "
            "them (or leave it out for the first)."
        )
    return criteria.index(name), float(min_chosen_score)


def pairs_of_prompt(
    row: dict, row_scores: list[Criteria], criteria: tuple[str, ...], rules: PairRules, skipped: Skipped
) -> list[dict[str, Any]]:
    """The pair rows of one samples row under `rules`; a prompt without any is counted in `skipped` under the
    first reason that applies."""
    finished = finished_flags(row)
    keys = _rank_keys(row_scores, finished, rules.allow_unfinished_chosen)
    answers = distinct_answers(row["completions"], keys)
    if len(answers) < 2:
        skipped.too_few_answers += 1  # zero or one completion, or all identical or empty
        return []
    if not (rules.allow_unfinished_chosen or any(finished[a] for a in answers)):
        skipped.no_finished_answer += 1  # nothing here may be chosen
        return []
    candidates = _ranked_pairs(answers, keys, rules.pairs_per_prompt)
    if candidates is None:
        skipped.ties += 1
        return []
    pairs = []
    for c, r in candidates:
        if not rules.may_choose(finished[c]):
            continue  # with "all", two unfinished answers rank differently; neither may be chosen
        if not rules.reaches_minimum(row_scores[c]):
            skipped.below_min_chosen += 1
            continue
        pairs.append(_pair(row, c, r, row_scores, finished, criteria))
    if not pairs:
        # The best answer is finished (or may be chosen) and ranks above another, so only the gate is left.
        skipped.all_below_min_chosen += 1
    return pairs


def distinct_answers(completions: list[str], keys: list[tuple]) -> list[int]:
    """Positions of the answers that may be paired: one per distinct text (up to surrounding whitespace, as
    hand labelling shows them), the best-ranked copy of it, and none for an empty text. Two copies of one text
    would be a pair with nothing to learn even when the judge scores them apart (a reward model can, by a
    rounding difference between batches), and `hf-dpo train` refuses an empty answer."""
    best_copy: dict[str, int] = {}
    for pos, text in enumerate(completions):
        norm = text.strip()
        if norm and (norm not in best_copy or keys[pos] > keys[best_copy[norm]]):
            best_copy[norm] = pos
    return sorted(best_copy.values())


def _rank_keys(
    row_scores: list[Criteria], finished: list[bool], allow_unfinished_chosen: bool
) -> list[tuple]:
    """Per completion, the key answers are ranked by: the judge's criteria, after whether it is finished
    (an unfinished answer is not a whole answer, so it ranks below every finished one) unless allowed."""
    return [
        ((1.0,) if allow_unfinished_chosen else (float(done),)) + scores
        for done, scores in zip(finished, row_scores)
    ]


def _ranked_pairs(
    answers: list[int], keys: list[tuple], pairs_per_prompt: str
) -> list[tuple[int, int]] | None:
    """(chosen, rejected) positions among `answers` (at least 2, distinct texts) by rank; None when they all
    rank the same (a tie)."""
    best = max(answers, key=lambda j: keys[j])
    worst = min(answers, key=lambda j: keys[j])
    if keys[best] == keys[worst]:
        return None
    if pairs_per_prompt == "best_worst":
        return [(best, worst)]
    return [
        (i, j) if keys[i] > keys[j] else (j, i)
        for n, i in enumerate(answers)
        for j in answers[n + 1 :]
        if keys[i] != keys[j]
    ]


def _pair(
    row: dict, c: int, r: int, row_scores: list[Criteria], finished: list[bool], criteria: tuple[str, ...]
) -> dict[str, Any]:
    """The pair row of completion c (chosen) over completion r (rejected), with its scores."""
    return pair_row(
        row["prompt"],
        row["completions"][c],
        row["completions"][r],
        score_chosen=_one_number(row_scores[c]),
        score_rejected=_one_number(row_scores[r]),
        margin=_one_number(row_scores[c]) - _one_number(row_scores[r]),
        scores=[_one_number(v) for v in row_scores],
        criteria_chosen=dict(zip(criteria, row_scores[c])),
        criteria_rejected=dict(zip(criteria, row_scores[r])),
        finished_chosen=finished[c],
        finished_rejected=finished[r],
        index=row.get("index"),
    )


def _one_number(values: Criteria) -> float:
    """A criteria tuple as one number (the plain sum), for the score columns; ranking uses the tuple."""
    return float(sum(values))


def pair_composition(pairs: list[dict], samples: list[dict]) -> dict[str, Any]:
    """What the pairs are made of: counts by (chosen criteria, rejected criteria), and unfinished shares."""
    counts: dict[str, int] = {}
    for p in pairs:
        key = f"{_criteria_label(p['criteria_chosen'], p['finished_chosen'])} > " + _criteria_label(
            p["criteria_rejected"], p["finished_rejected"]
        )
        counts[key] = counts.get(key, 0) + 1
    flags = [f for row in samples for f in finished_flags(row)]
    return {
        "by_criteria": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "unfinished_samples": sum(not f for f in flags),
        "samples": len(flags),
        "unfinished_chosen": sum(not p["finished_chosen"] for p in pairs),
        "unfinished_rejected": sum(not p["finished_rejected"] for p in pairs),
    }


def _criteria_label(values: dict[str, float], finished: bool) -> str:
    text = ", ".join(f"{name}={value:g}" for name, value in values.items())
    return text + ("" if finished else ", unfinished")


# ---------------------------------------------------------------- scoring


def _score_rows(judge: Judge, samples: list[dict]) -> list[list[Criteria]]:
    """Per samples row, the criteria of each of its completions: every completion of the file is scored in
    one call (a reward model batches them)."""
    flat_prompts, flat_completions, owners = [], [], []  # owners[i]: the samples row of flat completion i
    for n, row in enumerate(samples):
        for c in row["completions"]:
            flat_prompts.append(row["prompt"])  # as given: a conversation whole (judges.judge_prompts)
            flat_completions.append(c)
            owners.append(n)
    scores = _score_all(judge, flat_prompts, flat_completions, samples, owners)
    rows, pos = [], 0
    for row in samples:
        k = len(row["completions"])
        rows.append(scores[pos : pos + k])
        pos += k
    return rows


def _score_all(
    judge: Judge, prompts: list[Prompt], completions: list[str], samples: list[dict], owners: list[int]
) -> list[Criteria]:
    """Score everything; errors are re-pointed from the flat position to the sample row's prompt index."""
    try:
        scores = criteria_scores(judge, prompts, completions)
    except JudgeError as err:
        raise JudgeError(_renumber(str(err), samples, owners)) from err.__cause__
    if len(scores) != len(prompts):
        raise JudgeError(
            f"Judge '{judge.name}' returned {len(scores)} scores for {len(prompts)} completions."
        )
    return [
        tuple(check_score(v, samples[owners[i]].get("index", owners[i]), prompts[i], judge.name) for v in s)
        for i, s in enumerate(scores)
    ]


def _renumber(message: str, samples: list[dict], owners: list[int]) -> str:
    """A judge error's "prompt N " (N: the flat position) with N the samples row's prompt index instead."""
    m = re.search(r"prompt (\d+) ", message)
    if not m or int(m.group(1)) >= len(owners):
        return message
    index = samples[owners[int(m.group(1))]].get("index", owners[int(m.group(1))])
    return message[: m.start(1)] + str(index) + message[m.end(1) :]
