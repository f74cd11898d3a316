"""The rounds of an iterative DPO run side by side (`hf-dpo iterate`): one row a round, each from that round's own
run files.

    row = round_row(2, "round_2", "round_1", info, report, sampling)   # run_info.json, eval_report.json
    rounds_markdown([row1, row2])        # the table of iterate_report.md and of the rounds' model cards

Every number is the round's own, never recomputed: the pairs it trained on and its training time
(run_info.json), its held-out reward accuracy, its verdict line and its criteria's rates for policy and reference
(eval_report.json, as its report and card give them). A round's reference is the policy it started from, the
previous round's, so each verdict says what that round added. Pure functions of those dicts; no torch.
"""

from __future__ import annotations

from typing import Any

# Written into each finished round's run dir: the rows of the rounds up to it, which its model card shows.
ROUNDS_FILE = "iterate_rounds.json"


def round_row(
    number: int,
    run_dir: str,
    started_from: str,
    info: dict[str, Any],
    report: dict[str, Any] | None,
    sampling: dict[str, Any] | None,
) -> dict[str, Any]:
    """One round's row. `started_from`: the policy it trained from, which is its reference ("the starting model",
    or the previous round's run dir); `sampling`: its sampling's counts (None: it trained on the recipe's data)."""
    report = report or {}
    metrics = (report.get("preference") or {}).get("metrics") or {}
    behaviour = report.get("behaviour") or {}
    verdict = report.get("verdict")
    return {
        "round": number,
        "run_dir": run_dir,
        "started_from": started_from,
        "data": "sampled" if sampling else "recipe",
        "sampling": sampling,
        "train_pairs": info["num_train_pairs"],
        "eval_pairs": info["num_eval_pairs"],
        "train_runtime_s": info["train_runtime_s"],
        "reward_accuracy": metrics.get("reward_accuracy"),
        "verdict": {key: verdict[key] for key in ("label", "criterion", "line")} if verdict else None,
        "criteria": {
            name: {
                "policy": stats["policy"]["value"],
                "reference": stats["reference"]["value"],
            }
            for name, stats in (behaviour.get("per_criterion") or {}).items()
        },
    }


def with_current_files(rows: list[dict[str, Any]], info: dict[str, Any], report: dict[str, Any] | None):
    """The rows of a round's card: its own row (the last) made again from its run files as they are now (a later
    `hf-dpo eval` may have rewritten its report), the rounds before it as recorded."""
    last = rows[-1]
    own = round_row(last["round"], last["run_dir"], last["started_from"], info, report, last["sampling"])
    return [*rows[:-1], own]


def _interval(estimate: dict[str, Any] | None) -> str:
    if not estimate:
        return "—"
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _pairs(row: dict[str, Any]) -> str:
    sampling = row["sampling"]
    if not sampling:
        return f"{row['train_pairs']} (recipe data)"
    return f"{row['train_pairs']} of {sampling['pairs']} sampled"


def _sampling_time(sampling: dict[str, Any] | None) -> str:
    """The sampling's time; a resumed one's counts only the run that finished it, and says so."""
    if not sampling:
        return "—"
    resumed = (
        f" ({sampling['resumed']} of {sampling['prompts']} prompts sampled before)"
        if sampling["resumed"]
        else ""
    )
    return f"{sampling['seconds']:.0f} s{resumed}"


def rounds_markdown(rows: list[dict[str, Any]]) -> str:
    """The rounds table, one row a round, then each round's verdict line as its report gives it."""
    criteria: list[str] = []
    for row in rows:
        criteria += [name for name in row["criteria"] if name not in criteria]
    head = [
        "Round",
        "Trained from (its reference)",
        "Train pairs",
        "Held-out pairs",
        "Sampling",
        "Training",
        "Held-out reward accuracy",
        "Verdict vs its reference",
        *(f"{name}: policy / reference" for name in criteria),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sampling = row["sampling"]
        verdict = row["verdict"]
        cells = [
            str(row["round"]),
            f"`{row['started_from']}`" if row["round"] > 1 else row["started_from"],
            _pairs(row),
            str(row["eval_pairs"]),
            _sampling_time(sampling),
            f"{row['train_runtime_s']:.0f} s",
            _interval(row["reward_accuracy"]),
            f"{verdict['label']} on {verdict['criterion']}" if verdict else "none (no judged generations)",
        ]
        for name in criteria:
            rates = row["criteria"].get(name)
            cells.append(f"{rates['policy']:.3f} / {rates['reference']:.3f}" if rates else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Each round's reference is the policy it started from, so each verdict and rate pair says what that round "
        "added. The held-out pairs of a sampled round were sampled from its reference on the held-out prompts "
        "and labelled by the judge: each round's reward accuracy is measured on its own pairs."
    )
    lines.append("")
    lines += [
        f"- Round {row['round']}: {row['verdict']['line'] if row['verdict'] else 'Verdict: none.'}"
        for row in rows
    ]
    return "\n".join(lines)
