"""Samples rows that cannot give a pair: zero or one completion, identical or empty answers, all unfinished, all
scored the same. Labelling (by a judge or by hand) never crashes on them, never pairs an answer with itself or an
empty one, and accounts for every prompt: it either gave pairs or is counted under why it gave none."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_dpo.pairs.formats import SamplingError
from hf_dpo.pairs.label_store import LabelStore
from hf_dpo.pairs.labelling import label_with_judge

SKIP_REASONS = ("too_few_answers", "no_finished_answer", "ties", "all_below_min_chosen")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps({"index": i, "prompt": f"q{i}", **r}) + "\n" for i, r in enumerate(rows))
    )
    return path


def _pairs(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def length_judge(prompt: str, completion: str) -> float:
    return float(len(completion.strip()))


def constant_judge(prompt: str, completion: str) -> float:
    return 1.0


def _label(tmp_path, rows, judge=length_judge, **kwargs) -> tuple[dict, list[dict]]:
    samples = _write(tmp_path / "s.jsonl", rows)
    stats = label_with_judge(samples, judge, tmp_path / "pairs.jsonl", **kwargs)
    return stats, _pairs(tmp_path / "pairs.jsonl")


def _accounted(stats: dict) -> int:
    return stats["prompts_with_pairs"] + sum(stats[k] for k in SKIP_REASONS)


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("pairs_per_prompt", ["best_worst", "all"])
def test_a_prompt_without_completions_is_counted_not_a_crash(tmp_path, allow, pairs_per_prompt):
    """The reported bug: with allow_unfinished_chosen, a row with no completions raised ValueError (max() of an
    empty sequence) and the whole labelling was lost."""
    rows = [{"completions": [], "finished": []}, {"completions": ["a", "bbb"], "finished": [True, True]}]
    stats, pairs = _label(tmp_path, rows, allow_unfinished_chosen=allow, pairs_per_prompt=pairs_per_prompt)
    assert stats["too_few_answers"] == 1 and stats["no_finished_answer"] == 0
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("bbb", "a")]
    assert stats["prompts"] == 2 == _accounted(stats)


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize(
    "completions",
    [["only"], ["same", "same"], ["same", " same "], ["", ""], ["", "  ", "text"], ["a", "a", "", "a"]],
    ids=["one", "identical", "identical-but-whitespace", "empty", "one-non-empty", "identical-and-empty"],
)
def test_fewer_than_two_distinct_non_empty_answers_give_no_pair(tmp_path, allow, completions):
    rows = [{"completions": completions, "finished": [True] * len(completions)}]
    stats, pairs = _label(tmp_path, rows, allow_unfinished_chosen=allow, pairs_per_prompt="all")
    assert pairs == [] and stats["too_few_answers"] == 1 and stats["ties"] == 0 and _accounted(stats) == 1


@pytest.mark.parametrize("pairs_per_prompt", ["best_worst", "all"])
def test_an_empty_answer_is_never_paired(tmp_path, pairs_per_prompt):
    """`hf-dpo train` refuses a pair with an empty response, so labelling must not write one."""
    rows = [{"completions": ["", "short", "a longer answer"], "finished": [True, True, True]}]
    stats, pairs = _label(tmp_path, rows, pairs_per_prompt=pairs_per_prompt)
    assert pairs and all(p["chosen"].strip() and p["rejected"].strip() for p in pairs)
    assert stats["prompts_with_pairs"] == 1


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("pairs_per_prompt", ["best_worst", "all"])
def test_the_same_text_finished_and_unfinished_is_one_answer(tmp_path, allow, pairs_per_prompt):
    """Before: best_worst chose 'abc' (finished) over 'abc' (unfinished), a pair with chosen == rejected, and
    'all' dropped the prompt without counting it anywhere."""
    rows = [{"completions": ["abc", "abc"], "finished": [True, False]}]
    stats, pairs = _label(tmp_path, rows, allow_unfinished_chosen=allow, pairs_per_prompt=pairs_per_prompt)
    assert pairs == [] and stats["too_few_answers"] == 1 and _accounted(stats) == 1


def test_the_same_text_scored_differently_is_never_paired_with_itself(tmp_path):
    """A reward model can score one text slightly differently in two batches; that is not a preference."""
    scores = iter([0.5, 0.5001, 0.1])

    def drifting_judge(prompt, completion):
        return next(scores)

    rows = [{"completions": ["same", "same", "other"], "finished": [True, True, True]}]
    stats, pairs = _label(tmp_path, rows, judge=drifting_judge)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("same", "other")]


@pytest.mark.parametrize("pairs_per_prompt", ["best_worst", "all"])
def test_all_unfinished_is_skipped_unless_allowed(tmp_path, pairs_per_prompt):
    rows = [{"completions": ["cut off a", "cut b"], "finished": [False, False]}]
    stats, pairs = _label(tmp_path, rows, pairs_per_prompt=pairs_per_prompt)
    assert pairs == [] and stats["no_finished_answer"] == 1 and _accounted(stats) == 1
    stats, pairs = _label(tmp_path, rows, pairs_per_prompt=pairs_per_prompt, allow_unfinished_chosen=True)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("cut off a", "cut b")]
    assert stats["prompts_with_pairs"] == 1 and _accounted(stats) == 1


@pytest.mark.parametrize("allow", [False, True])
def test_all_equal_scores_are_a_tie(tmp_path, allow):
    rows = [{"completions": ["a", "b", "c"], "finished": [True, True, True]}]
    stats, pairs = _label(tmp_path, rows, judge=constant_judge, allow_unfinished_chosen=allow)
    assert pairs == [] and stats["ties"] == 1 and _accounted(stats) == 1


def test_a_prompt_whose_every_pair_is_below_the_minimum_is_counted_as_a_prompt(tmp_path):
    rows = [{"completions": ["a", "bb"], "finished": [True, True]}, {"completions": ["a", "bbbbb"]}]
    stats, pairs = _label(tmp_path, rows, min_chosen_score=3.0)
    assert [p["chosen"] for p in pairs] == ["bbbbb"]
    assert stats["all_below_min_chosen"] == 1 and stats["below_min_chosen"] == 1 and _accounted(stats) == 2


def test_finished_flags_that_do_not_match_the_completions_are_named(tmp_path):
    rows = [{"completions": ["a", "bb", "ccc"], "finished": [True]}]
    with pytest.raises(SamplingError, match=r"s\.jsonl: prompt 0 .*1 'finished' flag.* 3 completions"):
        _label(tmp_path, rows)
    rows = [{"completions": ["a", "bb"], "finished": ["yes", "no"]}]
    with pytest.raises(SamplingError, match=r"prompt 0: .*true/false"):
        _label(tmp_path, rows)


def test_the_summary_names_every_reason(tmp_path, caplog):
    rows = [
        {"completions": []},
        {"completions": ["x", "x"]},
        {"completions": ["cut a", "cut bb"], "finished": [False, False]},
        {"completions": ["aa", "bb"]},
        {"completions": ["a", "bb"]},
    ]
    with caplog.at_level(logging.INFO, logger="hf_dpo.pairs.labelling"):
        stats, pairs = _label(tmp_path, rows)
    assert (
        stats["prompts_with_pairs"],
        stats["too_few_answers"],
        stats["no_finished_answer"],
        stats["ties"],
    ) == (
        1,
        2,
        1,
        1,
    )
    summary = next(r.getMessage() for r in caplog.records if "5 prompts" in r.getMessage())
    for words in (
        "1 pair",
        "2 with fewer than 2 distinct non-empty answers",
        "1 without a finished answer",
        "1 tie",
    ):
        assert words in summary, summary


def test_no_pair_at_all_is_a_warning_that_says_what_to_do(tmp_path, caplog):
    rows = [{"completions": ["same", "same"]}, {"completions": ["x"]}]
    with caplog.at_level(logging.INFO, logger="hf_dpo.pairs.labelling"):
        stats, pairs = _label(tmp_path, rows)
    assert pairs == [] and stats["pairs"] == 0
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "sampling_temperature" in warning[0] and "num_samples_per_prompt" in warning[0]


# ---------------------------------------------------------------- by hand


def test_hand_labelling_leaves_out_a_prompt_with_fewer_than_two_answers(tmp_path):
    """Before: one such row refused the whole file ('labelling needs at least 2')."""
    rows = [{"completions": []}, {"completions": ["only"]}, {"completions": ["a", "b"]}]
    store = LabelStore(_write(tmp_path / "s.jsonl", rows), tmp_path / "p.jsonl")
    state = store.state()
    assert state["total"] == 1 and state["unlabellable_prompts"] == 2 and state["current"]["index"] == 2


def test_hand_labelling_with_nothing_to_label_says_why(tmp_path):
    rows = [{"completions": ["only"]}, {"completions": []}]
    with pytest.raises(
        SamplingError,
        match=r"nothing to label: every prompt has fewer than 2 completions.*num_samples_per_prompt >= 2",
    ):
        LabelStore(_write(tmp_path / "s.jsonl", rows))


# ---------------------------------------------------------------- resumed samples files


def test_run_sampling_resumed_on_a_samples_file_with_such_rows(tmp_path, tiny_model_dir):
    """Every prompt already sampled (no model is loaded): the rows that cannot give a pair are counted in the stats
    and in the dataset card's table, and the pairs file holds the rest."""
    from huggingface_hub import DatasetCard

    from hf_dpo.config import load_recipe
    from hf_dpo.pairs.sampling import _settings, run_sampling

    prompts = ["What is 2 + 3?", "What is 1 + 1?", "What is 3 + 3?"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n")
    recipe = load_recipe(
        None,
        [
            *("--model_name_or_path", tiny_model_dir, "--quantization", "none"),
            *("--prompts_file", str(tmp_path / "prompts.txt"), "--output_dir", str(tmp_path / "run")),
            *("--judge", "hf_dpo.pairs.demo_task:judge", "--allow_unfinished_chosen", "true"),
        ],
    )
    settings_ = _settings(recipe.model, recipe.sampling)
    rows = [
        {"completions": [], "finished": []},
        {"completions": ["2", "2"], "finished": [True, False]},
        {"completions": ["6", "It is 7."], "finished": [True, True]},
    ]
    samples = tmp_path / "run" / "samples_train.jsonl"
    samples.parent.mkdir(parents=True)
    samples.write_text(
        "".join(
            json.dumps({"index": i, "prompt": prompts[i], **r, "seed": 0, "settings": settings_}) + "\n"
            for i, r in enumerate(rows)
        )
    )
    report = run_sampling(recipe, progress=False)
    st_ = report["splits"]["train"]
    assert st_["resumed"] == 3 and st_["sampled_now"] == 0
    assert (st_["pairs"], st_["prompts_with_pairs"], st_["too_few_answers"]) == (1, 1, 2)
    assert _pairs(tmp_path / "run" / "pairs" / "train.jsonl")[0]["chosen"] == "6"
    card = DatasetCard.load(tmp_path / "run" / "pairs" / "README.md").text
    assert "fewer than 2 distinct" in card and "| train | 3 | 1 | 1 | 2 |" in card


# ---------------------------------------------------------------- any small samples file


TEXTS = ["", " ", "a", "a ", "b", "ccc", "ccc"]
samples_rows = st.lists(
    st.lists(st.tuples(st.sampled_from(TEXTS), st.booleans(), st.sampled_from([0.0, 1.0, 2.0])), max_size=4),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    samples_rows,
    st.booleans(),
    st.sampled_from(["best_worst", "all"]),
    st.sampled_from([None, 1.0, 2.0]),
)
def test_any_small_samples_file_labels_without_a_crash_and_accounts_for_every_prompt(
    rows, allow, pairs_per_prompt, min_chosen
):
    root = Path(tempfile.mkdtemp())
    scores = iter([score for row in rows for _, _, score in row])  # in the order the file is scored

    def judge(prompt, completion):
        return next(scores)

    samples = _write(
        root / "s.jsonl",
        [{"completions": [t for t, _, _ in r], "finished": [f for _, f, _ in r]} for r in rows],
    )
    stats = label_with_judge(
        samples,
        judge,
        root / "pairs.jsonl",
        pairs_per_prompt,
        allow_unfinished_chosen=allow,
        min_chosen_score=min_chosen,
    )
    pairs = _pairs(root / "pairs.jsonl")
    assert stats["pairs"] == len(pairs)
    assert stats["prompts"] == len(rows) == _accounted(stats)
    assert stats["prompts_with_pairs"] == len({p["index"] for p in pairs})
    if min_chosen is None:
        assert stats["all_below_min_chosen"] == 0 == stats["below_min_chosen"]
    for p in pairs:
        assert p["chosen"].strip() and p["rejected"].strip() and p["chosen"].strip() != p["rejected"].strip()
        assert allow or p["finished_chosen"]
        assert min_chosen is None or p["score_chosen"] >= min_chosen
        # The chosen answer ranks above the rejected one: by score, after being finished unless that is allowed.
        chosen, rejected = (p["score_chosen"],), (p["score_rejected"],)
        if not allow:
            chosen, rejected = (p["finished_chosen"], *chosen), (p["finished_rejected"], *rejected)
        assert chosen > rejected

    # By hand: the same file either has something to label, every prompt shown or counted, or says why not.
    try:
        store = LabelStore(samples, root / "hand.jsonl")
    except SamplingError as err:
        assert "nothing to label" in str(err)
        return
    shown = {pos for pos, _ in store.items}
    assert len(shown) + store.state()["unlabellable_prompts"] == len(rows)
