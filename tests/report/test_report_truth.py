"""The report cannot show a gain when the model got worse: an adversarial run on the real model.

The demo setup (SmolLM2-135M-Instruct, 4-bit base + LoRA, DPO with the SFT term) trained on the demo pairs
with chosen and rejected SWAPPED, so the policy learns to prefer, and (through rpo_alpha) to produce, the
wrong and looping answers. The judged prompts are held-out demo prompts: 13 that the untrained model
(the reference) answers correctly at greedy decoding, so a worse policy has room to show it, and 11 it
gets wrong, so a policy could also gain. The report must not say "improved", its primary difference
must be negative, and its counts must be the ones an independent count of the judged generations gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

# Held-out prompts (recipes/data/demo/prompts_test.txt). The first 13: the reference's greedy answer is
# correct and ends within 48 tokens. None has a capital equal to its country's name (Singapore, Luxembourg):
# the demo judge accepts any answer that names such a country.
REFERENCE_RIGHT = [
    "Name the capital city of Israel.",
    "Compute 70 - 60.",
    "What is 24 + 11?",
    "What is the capital of Chile?",
    "Which city is the capital of Chile?",
    "What is the capital of Spain?",
    "Name the capital city of Chile.",
    "What city is Chile's capital?",
    "What is 6 + 13?",
    "Which city is the capital of Iceland?",
    "What is the capital of Israel?",
    "What is 70 + 40?",
    "Add 18 and 27.",
]
REFERENCE_WRONG = [
    "Add 26 and 21.",
    "Subtract 37 from 47.",
    "What city is Mali's capital?",
    "Add 69 and 39.",
    "Add 33 and 34.",
    "What is 34 + 32?",
    "What is 36 + 13?",
    "Subtract 21 from 74.",
    "Which city is the capital of Spain?",
    "What is 3 times 8?",
    "Which city is the capital of Malaysia?",
]


def reversed_pairs(src: Path, dst: Path) -> None:
    """dst/train.jsonl: src's train pairs with chosen and rejected swapped; dst/test.jsonl: src's, as is
    (the held-out reward accuracy is then measured against the true preferences)."""
    dst.mkdir()
    rows = []
    for line in (src / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append({"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]})
    (dst / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dst / "test.jsonl").write_text((src / "test.jsonl").read_text())


@pytest.mark.slow
def test_reversed_preferences_are_not_reported_as_a_gain(tmp_path, smollm_dir, monkeypatch):
    import hf_dpo.report.behaviour as behaviour
    from hf_dpo.cli import main
    from hf_dpo.pairs.demo_task import is_correct

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "reversed"
    reversed_pairs(REPO / "recipes" / "data" / "demo", data)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(p + "\n" for p in REFERENCE_RIGHT + REFERENCE_WRONG))

    seen = {}  # what the judge saw: both sides' answers, finished flags
    judge_both = behaviour._judge_both

    def spy(judge, texts, policy, reference):
        seen.update(prompts=list(texts), policy=policy, reference=reference)
        return judge_both(judge, texts, policy, reference)

    monkeypatch.setattr(behaviour, "_judge_both", spy)
    run = tmp_path / "run"
    overrides = {
        "dataset_name": data,
        "max_train_samples": 32,  # 4 steps of 8
        "max_eval_samples": 8,
        "learning_rate": 3e-3,
        "warmup_steps": 0,
        "test_prompts_file": prompts,
        "eval_num_generations": len(REFERENCE_RIGHT + REFERENCE_WRONG),
        "eval_max_new_tokens": 48,
        "output_dir": run,
        "disable_tqdm": True,
    }
    argv = ["train", str(REPO / "recipes" / "demo.yaml")]
    argv += [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    assert main(argv) == 0
    (run / "judged_generations.json").write_text(json.dumps(seen, indent=1))  # for a reader, on failure

    report = json.loads((run / "eval_report.json").read_text())
    verdict, b = report["verdict"], report["behaviour"]
    n = len(seen["prompts"])
    assert b["n"] == n == len(REFERENCE_RIGHT + REFERENCE_WRONG)

    # The report's counts are the generations' own: correct = finished and correct by the demo rule.
    def count(side):
        answers, finished = seen[side]["answers"], seen[side]["finished"]
        correct = sum(f and is_correct(p, a) for p, a, f in zip(seen["prompts"], answers, finished))
        return correct, n - sum(finished)

    (policy_correct, policy_cut), (reference_correct, reference_cut) = count("policy"), count("reference")
    stats = b["per_criterion"]["correct"]
    assert round(stats["policy"]["value"] * n) == policy_correct
    assert round(stats["reference"]["value"] * n) == reference_correct
    assert round(b["unfinished"]["policy"]["value"] * n) == policy_cut
    assert round(b["unfinished"]["reference"]["value"] * n) == reference_cut
    # eval_generations.jsonl holds what the judge saw, and recounts to the report's numbers.
    from tests.report.test_evaluation import assert_generations_match_report

    rows = assert_generations_match_report(run)
    assert [row["prompt"] for row in rows] == seen["prompts"]
    for side in ("policy", "reference"):
        assert [row[side]["answer"] for row in rows] == seen[side]["answers"]
        assert [row[side]["finished"] for row in rows] == seen[side]["finished"]
    # the prompts still are ones the untrained model answers correctly
    assert reference_correct >= len(REFERENCE_RIGHT) - 1, seen["reference"]["answers"]

    # The model got worse, and the report says nothing else.
    assert policy_correct < reference_correct, seen["policy"]["answers"]
    assert verdict["criterion"] == "correct"
    assert verdict["difference"]["value"] == pytest.approx((policy_correct - reference_correct) / n)
    assert verdict["difference"]["value"] < 0
    assert verdict["difference"]["low"] <= verdict["difference"]["value"] <= verdict["difference"]["high"]
    assert verdict["label"] == "not improved", verdict["line"]
    assert verdict["line"].startswith("Verdict: not improved on correct")
    # No warning explains the held-out log-probs by a mechanism their numbers contradict.
    shift = report["preference"]["metrics"]
    if shift["logp_shift/rejected"]["value"] >= shift["logp_shift/chosen"]["value"]:
        warned = report["warnings"]
        assert not any("pushed the rejected answers down" in w for w in warned), warned
    markdown = (run / "eval_report.md").read_text()
    assert "**Verdict: not improved on correct" in markdown
    assert "Verdict: improved" not in markdown and "Verdict: mixed" not in markdown


def test_displacement_warning_does_not_claim_the_rejected_fell_more_when_the_chosen_fell_more():
    """The numbers of the reversed run above: on held-out pairs chosen -5.6 nats, rejected -4.5, margin < 0.
    The warning must not explain it as "pushed the rejected answers down by pushing everything down" (the
    rejected fell less than the chosen): it says the chosen fell more and that the policy moved away from them."""
    from hf_dpo.report.verdict import warnings

    def report(chosen, rejected):
        shift = {"logp_shift/chosen": chosen, "logp_shift/rejected": rejected}
        return {"preference": {"metrics": shift}}

    reversed_run = warnings(
        report({"value": -5.6, "low": -8.9, "high": -2.1}, {"value": -4.5, "low": -6.9, "high": -2.1})
    )
    assert len(reversed_run) == 1 and reversed_run[0].startswith("Likelihood displacement")
    assert "pushed the rejected answers down" not in reversed_run[0]
    assert "more than the rejected answers' (4.5 nats)" in reversed_run[0]
    demo_run = warnings(  # the demo's: the rejected fell by far more, the mechanism sentence holds
        report({"value": -3.7, "low": -4.9, "high": -2.5}, {"value": -12.1, "low": -14.1, "high": -10.2})
    )
    assert "pushed the rejected answers down by pushing everything down" in demo_run[0]


@pytest.mark.parametrize("policy_only, reference_only", [(4, 0), (5, 0), (12, 4)])
def test_no_gain_is_claimed_on_a_few_discordant_prompts(policy_only, reference_only):
    """96 prompts, the same answer quality on all but a handful: the paired percentile bootstrap puts its
    interval above 0 (4 vs 0: [+0.010, +0.083]), but an exact sign test on the prompts where the two sides
    differ cannot tell them apart (p = 0.125, 0.062, 0.077). The verdict must not say "improved"."""
    from tests.report.test_verdict import _sides

    n = 96
    policy = [1.0] * policy_only + [0.0] * (n - policy_only)
    reference = [0.0] * policy_only + [1.0] * reference_only + [0.0] * (n - policy_only - reference_only)
    result = _sides(policy, reference)
    diff = result["per_criterion"]["correct"]["difference"]
    assert diff["low"] > 0  # the bootstrap interval alone would call it a gain
    verdict = result["verdict"]
    assert verdict["label"] == "not improved", verdict["line"]
    assert "sign test" in verdict["line"] and "includes 0" not in verdict["line"]
    # and a clear gain still is one (the demo's size: 30 vs 17 of 96)
    clear = _sides(
        [1.0] * 15 + [0.0] * 2 + [1.0] * 15 + [0.0] * 64, [0.0] * 15 + [1.0] * 2 + [1.0] * 15 + [0.0] * 64
    )
    assert clear["verdict"]["label"] == "mixed" or clear["verdict"]["label"] == "improved", clear["verdict"][
        "line"
    ]


def test_a_cut_answer_is_not_counted_correct_when_every_answer_was_judged_correct():
    """The judge sees only the fragment of a cut answer ("Luxembourg, Luxembourg, ..." names the capital).
    When every answer on both sides is judged correct, "the lowest value seen" is a pass: the cut answer
    must still fail a 0/1 criterion (0), not take 1."""
    from hf_dpo.report.comparison import fail_unfinished, judged_comparison

    ones = np.ones((3, 2))
    pv, rv = fail_unfinished(ones, ones, [True, True, False], [True, True, True])
    assert pv.tolist() == [[1, 1], [1, 1], [0, 0]] and rv.tolist() == ones.tolist()
    r = judged_comparison(ones, ones, criteria=["correct", "concise"], policy_finished=[True, True, False])
    assert r["per_criterion"]["correct"]["policy"].value == pytest.approx(2 / 3)
    assert r["per_criterion"]["correct"]["difference"].value == pytest.approx(-1 / 3)
    # judges on other scales keep the lowest value seen (a reward model's -2.5 here)
    pv, _ = fail_unfinished(np.array([[3.0], [-2.5]]), np.array([[1.0], [2.0]]), [False, True], [True, True])
    assert pv.tolist() == [[-2.5], [-2.5]]
