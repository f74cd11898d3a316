"""hf_dpo.report.build and hf_dpo.report.plots: intervals and metrics by hand-worked numbers, every judged
generation in eval_generations.jsonl (answers decoded by a stand-in, judged for real) recounted into the report's
numbers, then the report of a real tiny run (tests/run_fixtures.py) with its plots decoded and checked for content."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_dpo.report.build import behaviour_skip_reason, build_report, computes_metrics
from hf_dpo.report.estimates import (
    LOGPS_KEYS,
    EvaluationError,
    bootstrap_mean_ci,
    preference_metrics,
    wilson_interval,
)
from hf_dpo.report.options import ReportOptions
from tests.run_fixtures import tiny_run


def test_wilson_interval_matches_published_values():
    # Wilson 95% intervals (z = 1.95996): 5/10 -> [0.2366, 0.7634]; 0/10 -> [0, 0.2775]; 10/10 -> [0.7225, 1].
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    lo90, hi90 = wilson_interval(5, 10, confidence=0.90)
    assert 0.2366 < lo90 < 0.5 < hi90 < 0.7634  # narrower at lower confidence
    with pytest.raises(EvaluationError):
        wilson_interval(11, 10)


def test_bootstrap_is_reproducible_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    assert bootstrap_mean_ci(small, seed=3) == bootstrap_mean_ci(small, seed=3)
    lo, hi = bootstrap_mean_ci(small)
    assert lo < small.mean() < hi
    lo2, hi2 = bootstrap_mean_ci(large)
    assert (hi2 - lo2) < (hi - lo) / 5  # ~ 1/sqrt(n): 10x more width for 100x fewer points
    assert bootstrap_mean_ci([2.5]) == (2.5, 2.5)


def test_preference_metrics_by_hand():
    """beta = 0.1, two pairs.
    pair 0: chosen shift -10 - (-11) = +1 -> reward 0.1; rejected shift -20 - (-18) = -2 -> reward -0.2; margin 0.3
    pair 1: both shifts 0 -> margin 0: a tie, which counts as a wrong ranking.
    accuracy 1/2; mean margin 0.15; mean chosen reward 0.05; mean rejected -0.1; mean shift (1 - 2)/2/2 = -0.25."""
    m = preference_metrics([-10.0, -12.0], [-20.0, -15.0], [-11.0, -12.0], [-18.0, -15.0], beta=0.1)
    assert m["reward_accuracy"].value == 0.5 and m["reward_accuracy"].n == 2
    assert m["rewards/margins"].value == pytest.approx(0.15)
    assert m["rewards/chosen"].value == pytest.approx(0.05)
    assert m["rewards/rejected"].value == pytest.approx(-0.1)
    assert m["logp_shift/chosen"].value == pytest.approx(0.5)
    assert m["logp_shift/mean"].value == pytest.approx(-0.25)
    for e in m.values():
        assert e.low <= e.value <= e.high


def test_preference_metrics_accept_tensors_and_reject_bad_input():
    import torch

    t = torch.tensor([-1.0, -2.0, -3.0])
    m = preference_metrics(t, t - 1, t, t, beta=0.5)
    # rejected loses 1 nat against the reference -> rejected reward -0.5, margin +0.5 on every pair
    assert m["reward_accuracy"].value == 1.0 and m["rewards/margins"].value == pytest.approx(0.5)
    with pytest.raises(EvaluationError, match="same non-zero length"):
        preference_metrics([1.0], [1.0, 2.0], [1.0], [1.0], beta=0.1)
    with pytest.raises(EvaluationError, match="non-finite"):
        preference_metrics([math.nan], [1.0], [1.0], [1.0], beta=0.1)


def test_reward_accuracy_counts_rounding_noise_as_a_tie():
    """A policy equal to its reference, its log-probs (~-100 nats, float32) one float32 step (7.6e-6) apart from
    the reference's: margins of ~1e-6 are rounding, not a ranking, so accuracy is 0; a margin of 1e-3 counts."""
    import torch

    ref = torch.tensor([-100.0, -120.0, -90.0, -110.0])
    policy_chosen = torch.nextafter(
        ref, torch.zeros_like(ref)
    )  # one ulp above the reference: margin ~+7.6e-7
    m = preference_metrics(policy_chosen, ref, ref, ref, beta=0.1)
    assert 0 < m["rewards/margins"].value < 1e-6 and m["reward_accuracy"].value == 0.0
    m = preference_metrics(ref + 0.01, ref, ref, ref, beta=0.1)  # margin 1e-3 on every pair
    assert m["reward_accuracy"].value == 1.0


def test_margin_histogram_bars_have_edges_and_say_the_reward_accuracy():
    from hf_dpo.report.plots import margins_figure

    ax = margins_figure(np.array([-0.2, 0.0, 0.0, 0.1, 0.3, 0.3]), 0.5).axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert bars and all(p.get_linewidth() > 0 and p.get_edgecolor() != p.get_facecolor() for p in bars)
    assert "50% > 0 = reward accuracy" in ax.get_title()


def test_loss_panel_is_titled_with_the_objective_it_plots():
    """The logged loss is the whole objective: with an sft term it is DPO + SFT, never titled 'DPO loss'."""
    from hf_dpo.report.plots import curves_figure

    history = [{"step": s, "loss": 0.9 - 0.01 * s, "rewards/accuracies": 0.5} for s in range(1, 4)]
    titles = [ax.get_title() for ax in curves_figure(history, "sigmoid + sft").axes]
    assert titles[0] == "Loss: sigmoid + sft" and "DPO loss" not in titles


def test_report_says_when_the_policy_is_the_reference(tmp_path):
    """Before: with learning_rate 0 or an untrained adapter every margin is exactly 0 and, ties counting as
    wrong, eval_report.md showed 'Reward accuracy (margin > 0) | 0.000' without a word why; only the console
    said 'policy == reference'."""
    from hf_dpo.report.markdown import console_summary

    reference = {"ref_chosen_logps": [-10.0, -12.0, -9.0], "ref_rejected_logps": [-20.0, -15.0, -11.0]}
    same = {
        "policy_chosen_logps": reference["ref_chosen_logps"],
        "policy_rejected_logps": reference["ref_rejected_logps"],
        **reference,
    }
    run_dir = _bare_run_dir(tmp_path / "same")
    report = build_report(run_dir, pair_logps=same)
    assert report["preference"]["metrics"]["reward_accuracy"]["value"] == 0.0
    md = (run_dir / "eval_report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Reward accuracy (margin > 0) |"))
    assert "policy == reference" in row
    assert "policy == reference" in console_summary(report, str(run_dir))
    # A policy that moved, even by one pair, gets no such note.
    moved = {**same, "policy_chosen_logps": [-10.0, -12.0, -8.5]}
    run_dir = _bare_run_dir(tmp_path / "moved")
    report = build_report(run_dir, pair_logps=moved)
    assert "policy == reference" not in (run_dir / "eval_report.md").read_text()
    assert "policy == reference" not in console_summary(report, str(run_dir))


# ----------------------------------------------------------------------------------------------------------
# eval_generations.jsonl: every judged answer, the report's numbers recounted from it

END = 0  # the stand-in tokenizer's end token
# (prompt, policy answer, policy finished, reference answer, reference finished, the policy's outcome)
JUDGED = [
    ("What is 2 + 3?", "5", True, "It is 6", True, "win"),  # correct against wrong
    ("What is 4 + 4?", "8", True, "8", True, "tie"),  # identical answers
    ("What is 9 + 1?", "11 I think", True, "10", True, "loss"),
    ("What is 7 + 5?", "12", True, "12 12 12 12", False, "win"),  # finished against cut
    # Cut, though the fragment names the result: it fails every criterion, whatever the judge says of it.
    ("What is 3 + 3?", "6 and then", False, "6", True, "loss"),
    ("What is 5 + 5?", "Answer 10", True, "10", True, "tie"),  # different texts, equal values
]


class WordTokenizer:
    """Decodes ids as words of a fixed vocabulary (END is special): all judged_generations needs."""

    def __init__(self, texts: list[str]):
        self.words = ["<end>", *sorted({w for t in texts for w in t.split()})]
        self.eos_token_id = END

    def ids(self, text: str, finished: bool) -> list[int]:
        return [self.words.index(w) for w in text.split()] + ([END] if finished else [])

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(self.words[i] for i in ids if i != END)


def _judged_with_stand_in_answers(monkeypatch) -> dict:
    """judged_generations on JUDGED: decoding replaced by the answers above, the demo judge for real."""
    from types import SimpleNamespace

    import hf_dpo.report.behaviour as behaviour
    from hf_dpo.pairs.judges import load_judge

    tokenizer = WordTokenizer([t for row in JUDGED for t in (row[1], row[3])])
    both = SimpleNamespace(
        policy_ids=[tokenizer.ids(answer, finished) for _, answer, finished, *_ in JUDGED],
        reference_ids=[tokenizer.ids(answer, finished) for _, _, _, answer, finished, _ in JUDGED],
        policy_logps=np.zeros(len(JUDGED)),  # (N,)
        reference_logps=np.zeros(len(JUDGED)),  # (N,)
        seconds=0.0,
        dtype="float32",
    )
    monkeypatch.setattr(behaviour, "decode_policy_and_reference", lambda *args, **kwargs: both)
    monkeypatch.setattr(behaviour, "end_token_ids", lambda model, tok: {END})
    prompts = [(prompt, [1]) for prompt, *_ in JUDGED]
    result = behaviour.judged_generations(
        None,
        tokenizer,
        prompts,
        load_judge("hf_dpo.pairs.demo_task:judge"),
        ReportOptions(num_samples_shown=2),
    )
    result["judge"] = "hf_dpo.pairs.demo_task:judge"
    return result


def _bare_run_dir(path):
    """The two files build_report reads of a finished run."""
    path.mkdir()
    (path / "run_info.json").write_text(json.dumps({"beta": 0.1, "base_model": "tiny"}))
    (path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 0.69}]}))
    return path


def assert_generations_match_report(run_dir) -> list[dict]:
    """eval_generations.jsonl, recounted: per-criterion counts, wins / ties / losses, unfinished answers and
    token lengths equal eval_report.json's. Returns the rows."""
    from hf_dpo.files import read_jsonl

    report = json.loads((run_dir / "eval_report.json").read_text())
    beh = report["behaviour"]
    assert report["generations_file"] == "eval_generations.jsonl"
    rows = [row for _, row in read_jsonl(run_dir / "eval_generations.jsonl")]
    n = beh["n"]
    assert len(rows) == n and [row["index"] for row in rows] == list(range(n))
    for criterion in beh["criteria"]:
        for side in ("policy", "reference"):
            values = [row[side]["scores"][criterion] for row in rows]
            estimate = beh["per_criterion"][criterion][side]
            assert estimate["value"] == pytest.approx(sum(values) / n), (criterion, side)
            if estimate["method"] == "wilson":  # a 0/1 criterion: the count itself
                assert round(estimate["value"] * n) == sum(values), (criterion, side)
    outcomes = [row["outcome"] for row in rows]
    assert [outcomes.count(o) for o in ("win", "tie", "loss")] == [beh["wins"], beh["ties"], beh["losses"]]
    for side in ("policy", "reference"):
        cut = sum(not row[side]["finished"] for row in rows)
        assert round(beh["unfinished"][side]["value"] * n) == cut, side
        tokens = [row[side]["tokens"] for row in rows]
        assert beh["lengths"][f"{side}_tokens"]["value"] == pytest.approx(sum(tokens) / n), side
    primary = beh["criteria"][0]
    better = sum(row["policy"]["scores"][primary] > row["reference"]["scores"][primary] for row in rows)
    assert beh["primary_better"]["policy"] == better
    return rows


def test_every_judged_generation_is_saved_with_the_values_the_report_counted(monkeypatch, tmp_path):
    run_dir = _bare_run_dir(tmp_path / "run")
    behaviour = _judged_with_stand_in_answers(monkeypatch)
    report = build_report(run_dir, behaviour=behaviour)
    assert "generations" not in report["behaviour"]  # the rows live in their own file, not in the report
    assert len(behaviour["generations"]) == len(JUDGED)  # the caller's dict is left as it was

    rows = assert_generations_match_report(run_dir)
    assert [row["prompt"] for row in rows] == [prompt for prompt, *_ in JUDGED]  # prompt order
    assert [row["outcome"] for row in rows] == [outcome for *_, outcome in JUDGED]
    assert rows[0] == {
        "index": 0,
        "prompt": "What is 2 + 3?",
        "outcome": "win",
        "policy": {"answer": "5", "finished": True, "tokens": 2, "scores": {"correct": 1.0, "concise": 1.0}},
        "reference": {
            "answer": "It is 6",
            "finished": True,
            "tokens": 4,
            "scores": {"correct": 0.0, "concise": 1.0},
        },
    }
    # A cut answer: its text as decoded (unmarked), finished false, and the failing values the report counted.
    assert rows[4]["policy"] == {
        "answer": "6 and then",
        "finished": False,
        "tokens": 3,
        "scores": {"correct": 0.0, "concise": 0.0},
    }
    assert (report["behaviour"]["wins"], report["behaviour"]["ties"], report["behaviour"]["losses"]) == (
        2,
        2,
        2,
    )
    # The demo judge names each prompt's question (six different sums here): the intervals resample questions.
    assert report["behaviour"]["questions"] == len(JUDGED)
    assert report["behaviour"]["per_criterion"]["correct"]["difference"]["method"] == (
        "question-clustered paired bootstrap"
    )
    # The report says where the answers are, in its Behaviour section, and so does the console.
    md = (run_dir / "eval_report.md").read_text()
    assert f"the {len(JUDGED)} prompts ask {len(JUDGED)} questions (the judge's `question_of`)" in md
    section = md.split("## Behaviour: judged generations")[1].split("### Side-by-side samples")[0]
    assert "is in [eval_generations.jsonl](eval_generations.jsonl) (one JSON line per prompt)" in section
    from hf_dpo.report.markdown import console_summary

    assert f"{run_dir}/eval_generations.jsonl" in console_summary(report, str(run_dir))
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".eval_generations")] == []  # no temp left


def test_a_report_without_judged_generations_leaves_no_earlier_generations_file(monkeypatch, tmp_path):
    """An earlier report's eval_generations.jsonl in the same run dir does not outlive a report that judged
    nothing: no file, no mention in the report."""
    run_dir = _bare_run_dir(tmp_path / "run")
    build_report(run_dir, behaviour=_judged_with_stand_in_answers(monkeypatch))
    assert (run_dir / "eval_generations.jsonl").is_file()
    report = build_report(run_dir, behaviour_skipped="no judge given (--judge SPEC)")
    assert not (run_dir / "eval_generations.jsonl").exists()
    assert report["generations_file"] is None
    assert "eval_generations.jsonl" not in (run_dir / "eval_report.md").read_text()
    # and a report whose behaviour carries no rows (built by hand) names no file either
    stripped = {k: v for k, v in _judged_with_stand_in_answers(monkeypatch).items() if k != "generations"}
    (run_dir / "eval_generations.jsonl").write_text('{"prompt": "from an earlier run"}\n')
    assert build_report(run_dir, behaviour=stripped)["generations_file"] is None
    assert not (run_dir / "eval_generations.jsonl").exists()


def test_a_report_that_fails_leaves_the_earlier_reports_generations(monkeypatch, tmp_path):
    """Before: eval_generations.jsonl was rewritten before the held-out numbers were computed, so a report that
    then failed (non-finite log-probs) left the new answers beside the earlier report that names the file, and
    a push sent them as that report's."""
    run_dir = _bare_run_dir(tmp_path / "run")
    behaviour = _judged_with_stand_in_answers(monkeypatch)
    build_report(run_dir, behaviour=behaviour)
    before = (run_dir / "eval_generations.jsonl").read_bytes()
    later = {**behaviour, "generations": behaviour["generations"][:2]}
    nan = {key: [math.nan] for key in LOGPS_KEYS}
    with pytest.raises(EvaluationError, match="non-finite"):
        build_report(run_dir, pair_logps=nan, behaviour=later)
    assert (run_dir / "eval_generations.jsonl").read_bytes() == before
    assert_generations_match_report(run_dir)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    return tiny_run(tiny_model_dir, tmp_path_factory)


def _assert_png_with_content(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = mpimg.imread(path)  # decodes the whole file: (H, W, 3|4) floats
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, f"{path} is blank"
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 20, f"{path} has almost no drawing"
    assert (rgb.min(axis=1) < 0.9).mean() > 0.01, f"{path}: almost nothing drawn on the white"


def test_report_of_a_real_tiny_run(run):
    report = json.loads((run / "eval_report.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    assert report["schema_version"] == 2 and report["base_model"] == info["base_model"]
    pref = report["preference"]
    assert pref["n"] == info["num_eval_pairs"] == 4 and pref["beta"] == info["beta"]
    # how each split's prompts were found and reached the model, recorded for the card and a reader
    assert info["data_report"]["train"]["prompt_methods"] == {"prompt column": 12}
    assert info["data_report"]["eval"]["prompt_formats"] == {"chat template": 4}
    for key in (
        "reward_accuracy",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "logp_shift/mean",
    ):
        e = pref["metrics"][key]
        assert e["low"] <= e["value"] <= e["high"] and e["n"] == 4 and e["method"] in ("wilson", "bootstrap")
    # The report (adapter reloaded from disk) agrees with what training measured in memory; the 4-bit
    # CPU kernels differ in float rounding between the two, ~1e-3 nats on log-probs of ~100 nats.
    assert pref["metrics"]["reward_accuracy"]["value"] == pytest.approx(info["eval_after"]["reward_accuracy"])
    assert pref["metrics"]["rewards/margins"]["value"] == pytest.approx(
        info["eval_after"]["reward_margin"], rel=0.05, abs=1e-4
    )
    beh = report["behaviour"]
    assert beh["judge"] == "hf_dpo.pairs.demo_task:judge" and beh["n"] == 4
    assert beh["wins"] + beh["ties"] + beh["losses"] == 4 and beh["decoding"]["do_sample"] is False
    assert len(beh["samples"]) == 4 and {"prompt", "policy", "reference"} <= set(beh["samples"][0])
    assert "kl_estimate" in beh
    assert beh["criteria"] == ["correct", "concise"] and set(beh["per_criterion"]) == {"correct", "concise"}
    assert report["verdict"]["criterion"] == "correct" and report["verdict"]["label"] in (
        "improved",
        "not improved",
        "mixed",
    )
    md = (run / "eval_report.md").read_text()
    assert "ties count half" in md and "| Reward accuracy (margin > 0) |" in md
    assert md.splitlines()[4] == f"**{report['verdict']['line']}**"  # the verdict heads the report
    assert "| **correct** (primary) |" in md and "| unfinished (cut at the cap) |" in md
    assert set(report["plots"]) == {
        "plots/training_curves.png",
        "plots/eval_summary.png",
        "plots/heldout_margins.png",
    }
    for rel in report["plots"]:
        assert f"]({rel})" in md  # embedded by relative path
        _assert_png_with_content(run / rel)
    rows = assert_generations_match_report(run)  # every judged answer of the real run, recounted
    assert {s["prompt"] for s in beh["samples"]} <= {row["prompt"] for row in rows}
    assert "[eval_generations.jsonl](eval_generations.jsonl)" in md


@pytest.mark.parametrize(
    "has_eval, prompts_file, judge, num_generations, computes",
    [
        (True, None, None, 0, True),  # preference metrics of the held-out pairs
        (False, None, None, 32, False),  # nothing to measure
        (False, None, "m:judge", 32, False),  # a judge but no prompt to judge
        (False, "prompts.jsonl", "m:judge", 32, True),  # judged generations on the prompts file
        (False, "prompts.jsonl", "m:judge", 0, False),
        (False, "prompts.jsonl", None, 32, False),
    ],
)
def test_preflight_and_report_agree_on_when_numbers_are_computed(
    has_eval, prompts_file, judge, num_generations, computes
):
    """Preflight loads the evaluate modules exactly when the report will use them: the judged half runs
    exactly when behaviour_skip_reason gives no reason."""
    assert computes_metrics(has_eval, prompts_file, judge, num_generations) is computes
    judged = behaviour_skip_reason(has_eval, prompts_file, judge, num_generations) is None
    assert computes == (has_eval or judged)


def test_report_without_eval_pairs_or_judge_says_why(run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*"))
    report = build_report(dst)
    assert report["preference"] is None and "dataset_test_split" in report["preference_skipped"]
    assert report["behaviour"] is None and "--judge" in report["behaviour_skipped"]
    assert report["plots"] == ["plots/training_curves.png"]
    assert "No held-out metrics" in (dst / "eval_report.md").read_text()
    assert not (dst / "eval_generations.jsonl").exists()  # the copied run's answers are not this report's
    (dst / "run_info.json").unlink()
    with pytest.raises(EvaluationError, match="run_info.json is missing"):
        build_report(dst)


def test_training_curves_tolerate_missing_keys(tmp_path):
    from hf_dpo.report.plots import training_curves

    history = [
        {"step": s, "loss": 0.7 - 0.01 * s, "epoch": s / 10} for s in range(1, 8)
    ]  # no reward keys logged
    path = training_curves(history, tmp_path / "c.png")
    _assert_png_with_content(path)


def test_wilson_interval_holds_its_estimate_at_none_and_all():
    """0/n and n/n: the interval ends exactly at the estimate (rounding put 0/5's low at 2.8e-17, above 0)."""
    for n in range(1, 200):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        for successes in np.arange(0, n + 0.5, 0.5):  # ties count half
            low, high = wilson_interval(successes, n)
            assert low <= successes / n <= high


DEGENERATE_INTERVALS = {
    "wilson 0/5, low rounded above 0": {
        "value": 0.0,
        "low": 2.8e-17,
        "high": 0.43,
        "n": 5,
        "method": "wilson",
    },
    "bootstrap above its estimate": {"value": 0.2, "low": 0.25, "high": 0.6, "n": 6, "method": "bootstrap"},
    "bootstrap below its estimate": {"value": 0.7, "low": 0.1, "high": 0.65, "n": 6, "method": "bootstrap"},
    "all values tied": {"value": 0.1, "low": 0.1, "high": 0.1, "n": 6, "method": "bootstrap"},
    "one item": {"value": -0.3, "low": -0.3, "high": -0.3, "n": 1, "method": "bootstrap"},
}


@pytest.mark.parametrize("case", DEGENERATE_INTERVALS)
def test_eval_summary_draws_every_degenerate_interval(case, tmp_path):
    """An estimate outside its own interval (small n, ties) or an interval of no width is drawn, never a crash
    ('yerr' must not contain negative values ended a trained run before its report)."""
    from hf_dpo.report.plots import eval_summary

    e = DEGENERATE_INTERVALS[case]
    preference = {
        "beta": 0.1,
        "metrics": {"reward_accuracy": e}
        | {k: e for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logp_shift/mean")},
    }
    behaviour = {"win_rate": e, "wins": 1, "ties": 4, "losses": 1}
    _assert_png_with_content(eval_summary(preference, behaviour, tmp_path / "s.png"))


def test_report_says_why_an_interval_looks_degenerate():
    from hf_dpo.report.markdown import interval_note

    notes = {case: interval_note(e) for case, e in DEGENERATE_INTERVALS.items()}
    assert notes["wilson 0/5, low rounded above 0"] == ""  # a Wilson interval always has width
    assert "outside its interval" in notes["bootstrap above its estimate"]
    assert "outside its interval" in notes["bootstrap below its estimate"]
    assert notes["all values tied"] == "all 6 values equal: no spread to resample"
    assert notes["one item"] == "one item: no spread to estimate"
    assert interval_note({"value": 0.5, "low": 0.2, "high": 0.8, "n": 6, "method": "bootstrap"}) == ""


@pytest.mark.parametrize("num_pairs", [1, 5, 10])
def test_report_of_tied_pairs_is_written_whole(run, tmp_path, num_pairs):
    """Every margin 0 (a policy equal to its reference) on 1, 5 or 10 pairs: the report, its plots and the
    table's reason for each interval of no width are written."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*"))
    tied = {key: [-12.5] * num_pairs for key in LOGPS_KEYS}
    report = build_report(dst, pair_logps=tied)
    assert report["preference"]["metrics"]["reward_accuracy"]["value"] == 0.0
    for rel in report["plots"]:
        _assert_png_with_content(dst / rel)
    md = (dst / "eval_report.md").read_text()
    why = "one item: no spread to estimate" if num_pairs == 1 else f"all {num_pairs} values equal"
    assert f"[0.000, 0.000] ({why}" in md


def test_cli_eval_writes_report(run, tmp_path, capsys, caplog):
    import logging
    import shutil

    from hf_dpo.cli import main

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*", "eval_report.*", "plots"))
    assert main(["eval", str(dst), "--num-generations", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "held-out reward accuracy" in out and "judged win rate vs reference" in out
    assert f"hf-dpo push {dst} --repo-id" in out
    report = json.loads((dst / "eval_report.json").read_text())
    assert report["behaviour"]["n"] == 2 and report["behaviour"]["decoding"]["max_new_tokens"] == 4
    # the reloaded run's train split is read too: none of its prompts is among the held-out ones
    overlap = {"judged_prompts": 0, "judged_prompts_of": 2, "eval_pairs": 0, "eval_pairs_of": 4}
    assert report["training_overlap"] == overlap
    rows = assert_generations_match_report(dst)  # rewritten for these 2 prompts, not the copied run's 4
    assert all(row["policy"]["tokens"] <= 4 and row["reference"]["tokens"] <= 4 for row in rows)
    assert "eval_generations.jsonl" in out
    # The card is rewritten with this report (it kept the training report's verdict until a push) ...
    from hf_dpo.hub.card import render_card

    card = (dst / "README.md").read_text()
    render_card(dst).save(tmp_path / "expected.md")
    assert card == (tmp_path / "expected.md").read_text() and report["verdict"]["line"] in card
    # ... unless it was edited by hand: then it is kept byte for byte.
    (dst / "README.md").write_text("# My own card\n")
    with caplog.at_level(logging.WARNING, logger="hf_dpo.run"):
        assert main(["eval", str(dst), "--num-generations", "1", "--max-new-tokens", "4"]) == 0
    assert (dst / "README.md").read_text() == "# My own card\n"
    assert "was edited by hand: kept as it is" in caplog.text
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_evaluate_trainer_on_an_untrained_adapter_finds_no_difference(run, tmp_path):
    """A fresh LoRA adapter (B = 0) is exactly the reference: every margin 0, so reward accuracy 0 (ties
    count as wrong), every generation identical (all ties, win rate exactly 1/2) and a log-ratio of 0."""
    import shutil

    from hf_dpo.config import load_recipe
    from hf_dpo.report.build import evaluate_trainer
    from hf_dpo.run import build_trainer

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*", "eval_report.*", "plots"))
    recipe = load_recipe(dst / "recipe.yaml", ["--output_dir", str(dst), "--report_to", "[]"])
    trainer, _ = build_trainer(recipe)
    report = evaluate_trainer(
        trainer, "hf_dpo.pairs.demo_task:judge", ReportOptions(num_generations=3, max_new_tokens=6)
    )
    metrics = report["preference"]["metrics"]
    assert metrics["reward_accuracy"]["value"] == 0.0
    assert metrics["rewards/margins"]["value"] == pytest.approx(0.0, abs=1e-6)
    beh = report["behaviour"]
    assert beh["ties"] == beh["n"] == beh["identical_completions"] == 3 and beh["win_rate"]["value"] == 0.5
    assert beh["kl_estimate"]["value"] == pytest.approx(0.0, abs=1e-4)
    assert (
        json.loads((dst / "eval_report.json").read_text())["behaviour"]["judge"]
        == "hf_dpo.pairs.demo_task:judge"
    )
    # train and test hold different countries: nothing held out was trained on, and the report says nothing
    assert report["training_overlap"] == {
        "judged_prompts": 0,
        "judged_prompts_of": 3,
        "eval_pairs": 0,
        "eval_pairs_of": 4,
    }
    assert not any(w.startswith("Not held out") for w in report["warnings"])
    assert "training prompts" not in beh["verdict"]["line"]


def test_a_report_on_training_prompts_says_they_were_not_held_out(run, tmp_path):
    """Before: with a test split repeating training prompts (or a test_prompts_file holding them) the report
    called them held-out prompts and its verdict a result on them, with no sign they were trained on."""
    import shutil

    from hf_dpo.config import load_recipe
    from hf_dpo.report.build import evaluate_trainer
    from hf_dpo.run import build_trainer

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*", "eval_report.*", "plots"))
    data = tmp_path / "data"  # a test split that repeats the train split's pairs
    data.mkdir()
    for split in ("train", "test"):
        shutil.copy(run.parent / "train.jsonl", data / f"{split}.jsonl")
    overrides = ["--output_dir", str(dst), "--report_to", "[]", "--dataset_name", str(data)]
    trainer, _ = build_trainer(load_recipe(dst / "recipe.yaml", overrides))
    report = evaluate_trainer(
        trainer, "hf_dpo.pairs.demo_task:judge", ReportOptions(num_generations=3, max_new_tokens=6)
    )
    assert report["training_overlap"] == {
        "judged_prompts": 3,
        "judged_prompts_of": 3,
        "eval_pairs": 12,
        "eval_pairs_of": 12,
    }
    assert (
        "3 held-out prompts, 3 of them training prompts, asking 3 questions)"
        in report["behaviour"]["verdict"]["line"]
    )
    warning = next(w for w in report["warnings"] if w.startswith("Not held out"))
    assert (
        "3 of the 3 judged prompts and 12 of the 12 held-out pairs have a prompt of the training data"
        in warning
    )
    md = (dst / "eval_report.md").read_text()
    assert "Not held out: 3 of the 3 judged prompts" in md and "3 of them training prompts" in md


def test_heldout_prompts_keep_conversations_that_share_their_last_turn(smollm_dir):
    """Held-out prompts are distinct by what the model is prompted with: before, two conversations ending in the
    same user turn were taken for one prompt, and only the first was ever answered and judged."""
    from transformers import AutoTokenizer

    from hf_dpo.report.prompts import heldout_prompts

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)

    def conversation(first: str) -> str:  # hf_dpo.data stores conversational prompts as JSON text
        turns = [("user", first), ("assistant", "Done."), ("user", "Thanks! And now in French?")]
        return json.dumps([{"role": role, "content": content} for role, content in turns])

    rows = [
        {"prompt": conversation("Write a haiku about rain.")},
        {"prompt": conversation("Name three prime numbers.")},
        {"prompt": conversation("Write a haiku about rain.")},  # the first again: one prompt
        {"prompt": "Thanks! And now in French?"},  # the same words on their own: a different prompt
    ]
    prompts = heldout_prompts(rows, tokenizer, limit=10)
    # each prompt as given: the conversations whole (the judge reads them so), the text as text
    assert [prompt for prompt, _ in prompts] == [
        json.loads(rows[0]["prompt"]),
        json.loads(rows[1]["prompt"]),
        "Thanks! And now in French?",
    ]
    assert len({tuple(ids) for _, ids in prompts}) == 3
    assert "haiku" in tokenizer.decode(prompts[0][1]) and "prime" in tokenizer.decode(prompts[1][1])
    assert len(heldout_prompts(rows, tokenizer, limit=2)) == 2


def test_a_prompt_file_prompt_is_found_among_the_training_prompts(smollm_dir, tmp_path):
    """The judged prompts of a test_prompts_file (formatted for generation) and the training pairs' prompts
    (tokenized with their answers) are matched by prompt_key, for plain and conversational prompts alike."""
    from transformers import AutoTokenizer

    from hf_dpo.config import DataConfig
    from hf_dpo.data import tokenize_dataset
    from hf_dpo.report.prompts import prompt_key, prompts_from_file, training_prompt_keys

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    conversation.append({"role": "user", "content": "What is 2 + 2?"})
    rows = [
        {"prompt": "What is the capital of Peru?", "chosen": "Lima.", "rejected": "Quito."},
        {"prompt": conversation, "chosen": [{"role": "assistant", "content": "4"}]},
    ]
    rows[1]["rejected"] = [{"role": "assistant", "content": "5"}]
    train = tokenize_dataset(rows, tokenizer, DataConfig())
    seen = training_prompt_keys(train, tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    lines = ["What is the capital of Peru?", conversation, "What is the capital of Chile?", conversation[:1]]
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in lines))
    judged = prompts_from_file(str(prompts), tokenizer, DataConfig(), 10)
    assert [prompt_key(ids, tokenizer) in seen for _, ids in judged] == [True, True, False, False]


def test_cli_eval_on_other_prompts_writes_its_own_report_and_leaves_the_run_as_it_was(run, tmp_path, capsys):
    """`hf-dpo eval RUN --test-prompts-file F --output-dir OUT`: the run scored again on other prompts (held-out
    questions in new words, say), every prompt of F judged, the report in OUT; the run's report, answers and card
    unchanged."""
    import shutil

    from hf_dpo.cli import main

    dst = tmp_path / "run"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("checkpoint-*"))
    before = {p.name: p.read_bytes() for p in dst.iterdir() if p.is_file()}
    prompts = tmp_path / "rephrased.txt"
    asked = ["What's 2 plus 3?", "Find 7 - 4.", "Which city serves as the capital of Chile?"]
    prompts.write_text("\n".join(asked) + "\n")
    out = tmp_path / "rephrased_report"
    argv = [
        "eval",
        str(dst),
        "--test-prompts-file",
        str(prompts),
        "--output-dir",
        str(out),
        "--max-new-tokens",
        "4",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"Evaluation report: {out}/eval_report.md" in printed and f"hf-dpo push {dst} " in printed
    report = json.loads((out / "eval_report.json").read_text())
    assert report["behaviour"]["n"] == len(asked)  # every prompt of the file, not the recipe's count
    assert [row["prompt"] for row in assert_generations_match_report(out)] == asked
    for rel in report["plots"]:
        assert (out / rel).is_file()
    assert {p.name: p.read_bytes() for p in dst.iterdir() if p.is_file()} == before
    # a second report into the same directory, or other prompts into the run dir, is refused before any load
    assert main(argv) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert main(["eval", str(dst), "--test-prompts-file", str(prompts)]) == 2
    assert "give --output-dir DIR for it" in capsys.readouterr().err
    assert (
        main(["eval", str(dst), "--test-prompts-file", str(tmp_path / "nope.txt"), "--output-dir", "x"]) == 2
    )
    assert "nope.txt: no such file" in capsys.readouterr().err
