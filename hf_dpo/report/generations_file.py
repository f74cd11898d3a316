"""Every judged held-out generation on disk, so a reader can check the report's numbers against what the model
did: eval_generations.jsonl in the run dir, one row per judged prompt, in prompt order.

    {"index": 0, "prompt": "What is 6 + 13?", "outcome": "win",
     "policy": {"answer": "19", "finished": true, "tokens": 4, "scores": {"correct": 1.0, "concise": 1.0}},
     "reference": {"answer": "6 + 13 = 19, 6 + 13 = ...", "finished": false, "tokens": 48,
                   "scores": {"correct": 0.0, "concise": 0.0}}}

A conversation's row shows its last user turn as `prompt` and the turns before it (system prompt, earlier
exchanges; long texts shortened) as `context`:

    {"index": 3, "prompt": "And in French?", "context": [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}], "outcome": ...}

`scores` are the values the report counted, named by the judge's criteria: the judge's own, except for a cut
answer (finished false), which fails every criterion (hf_dpo.report.comparison.fail_unfinished). `outcome` is the
policy's result on that prompt as the report's wins / ties / losses counted it: the `judged_win_rate` module's
per-prompt outcome (1 win, 0.5 tie, 0 loss), named. `tokens` counts the answer's generated tokens.

    rows = generation_rows(prompts, criteria, policy, reference, policy_values, reference_values, outcomes)
    write_generations(run_dir, rows)     # -> "eval_generations.jsonl"
    write_generations(run_dir, None)     # no judged generations: an earlier run's file is removed -> None
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hf_dpo.files import atomic_write_jsonl

if TYPE_CHECKING:  # only annotations: hub.public_files imports GENERATIONS_FILE, and a push needs no numpy
    import numpy as np

GENERATIONS_FILE = "eval_generations.jsonl"
OUTCOME_NAMES = {1.0: "win", 0.5: "tie", 0.0: "loss"}  # the judged_win_rate module's per-prompt outcomes


def shown_prompt(prompt: str | list[dict]) -> dict[str, Any]:
    """{"prompt": text} for a reader: the text, or a conversation's last user turn with its earlier turns
    ("context", shortened) when it has any."""
    from hf_dpo.pairs.formats import prompt_context, prompt_text

    if isinstance(prompt, str):
        return {"prompt": prompt}
    context = prompt_context(prompt)
    return {"prompt": prompt_text(prompt), **({"context": context} if context else {})}


def generation_rows(
    prompts: list[str | list[dict]],
    criteria: tuple[str, ...],
    policy: dict[str, list],
    reference: dict[str, list],
    policy_values: np.ndarray,
    reference_values: np.ndarray,
    outcomes: list[float],
) -> list[dict[str, Any]]:
    """One row per prompt from both sides' answers ({"answers", "finished", "tokens"} lists), their (N, C)
    values as the report counted them and the per-prompt outcomes of the comparison."""

    def side(answers: dict[str, list], values: np.ndarray, i: int) -> dict[str, Any]:
        return {
            "answer": answers["answers"][i],
            "finished": bool(answers["finished"][i]),
            "tokens": int(answers["tokens"][i]),
            "scores": {name: float(v) for name, v in zip(criteria, values[i])},  # values[i]: (C,)
        }

    return [
        {
            "index": i,
            **shown_prompt(prompt),
            "outcome": OUTCOME_NAMES[float(outcomes[i])],
            "policy": side(policy, policy_values, i),
            "reference": side(reference, reference_values, i),
        }
        for i, prompt in enumerate(prompts)
    ]


def write_generations(run_dir: str | Path, rows: list[dict[str, Any]] | None) -> str | None:
    """Write `rows` to run_dir/eval_generations.jsonl (atomically) and return its name; with no rows (no judged
    generations), remove the file an earlier report into the same run dir left, and return None."""
    path = Path(run_dir) / GENERATIONS_FILE
    if rows is None:
        path.unlink(missing_ok=True)
        return None
    atomic_write_jsonl(path, rows)
    return GENERATIONS_FILE
