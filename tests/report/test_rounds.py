"""The rounds table of `hf-dpo iterate` (hf_dpo.report.rounds): each round's numbers as its run files give them."""

from __future__ import annotations

from hf_dpo.report.rounds import round_row, rounds_markdown, with_current_files

INFO = {"num_train_pairs": 128, "num_eval_pairs": 48, "train_runtime_s": 165.4}


def estimate(value, low, high):
    return {"value": value, "low": low, "high": high, "n": 48}


def report(line: str, correct: tuple[float, float]) -> dict:
    return {
        "preference": {"metrics": {"reward_accuracy": estimate(0.833, 0.7, 0.91)}},
        "behaviour": {
            "per_criterion": {
                "correct": {"policy": {"value": correct[0]}, "reference": {"value": correct[1]}},
            }
        },
        "verdict": {
            "label": line.split(" on ")[0].removeprefix("Verdict: "),
            "criterion": "correct",
            "line": line,
        },
    }


def test_one_row_a_round_with_its_own_verdict_line_and_rates():
    first = round_row(
        1,
        "round_1",
        "the starting model",
        INFO,
        report("Verdict: improved on correct: x.", (0.33, 0.16)),
        None,
    )
    sampling = {"seconds": 412.0, "prompts": 516, "resumed": 96, "pairs": 301, "eval_pairs": 170}
    second = round_row(2, "round_2", "round_1", INFO, None, sampling)  # its report was never written
    text = rounds_markdown([first, second])
    assert (
        "| 1 | the starting model | 128 (recipe data) | 48 | — | 165 s | 0.833 [0.700, 0.910] | improved on correct | 0.330 / 0.160 |"
        in text
    )
    assert (
        "| 2 | `round_1` | 128 of 301 sampled | 48 | 412 s (96 of 516 prompts sampled before) | 165 s | — | none (no judged generations) | — |"
        in text
    )
    assert "- Round 1: Verdict: improved on correct: x." in text and "- Round 2: Verdict: none." in text


def test_a_cards_own_row_is_made_again_from_its_files_as_they_are_now():
    rows = [
        round_row(
            1,
            "round_1",
            "the starting model",
            INFO,
            report("Verdict: improved on correct: a.", (0.3, 0.1)),
            None,
        ),
        round_row(
            2, "round_2", "round_1", INFO, report("Verdict: not improved on correct: b.", (0.3, 0.3)), None
        ),
    ]
    now = with_current_files(rows, INFO, report("Verdict: improved on correct: judged again.", (0.4, 0.3)))
    assert now[0] == rows[0] and now[1]["verdict"]["line"] == "Verdict: improved on correct: judged again."
    assert (
        now[1]["criteria"]["correct"] == {"policy": 0.4, "reference": 0.3}
        and now[1]["started_from"] == "round_1"
    )
