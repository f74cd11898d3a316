"""Labelling with a judge (hf_dpo/pairs/labelling.py): it never writes over its samples or hand labels, a judge
object's scores that are no numbers (or the wrong number of criteria) are a JudgeError, numpy and torch scalars
are numbers, and a pairs file that cannot be written is named with the old pairs kept."""

from __future__ import annotations

import pytest

from hf_dpo.pairs.formats import SamplingError


class _ObjectJudge:
    """A judge object (Python API: `label_with_judge(samples, judge_object, pairs)`) returning `out`."""

    name = "obj"

    def __init__(self, out):
        self.out = out

    def score(self, prompts, completions):
        if isinstance(self.out, Exception):
            raise self.out
        return self.out


class _CriteriaJudge(_ObjectJudge):
    """A judge object with declared criteria whose criteria_scores() returns `out`."""

    criteria = ("correct", "concise")

    def criteria_scores(self, prompts, completions):
        return self.score(prompts, completions)


def test_label_with_judge_never_writes_over_its_samples_or_hand_labels(write_jsonl, tmp_path):
    """label_with_judge (the Python API; `hf-dpo sample` checks its recipe first) with pairs_file the samples file:
    before, the samples were replaced by the pairs; into hand labels (judge: human), those were replaced; into a
    directory, an IsADirectoryError traceback."""
    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    before = samples.read_bytes()
    judge = "hf_dpo.pairs.demo_task:judge"
    with pytest.raises(SamplingError, match="is the samples file"):
        label_with_judge(samples, judge, tmp_path / "." / "s.jsonl")
    assert samples.read_bytes() == before
    hand = write_jsonl(
        tmp_path / "hand.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "judge": "human"}]
    )
    hand_before = hand.read_bytes()
    with pytest.raises(SamplingError, match=r"hand\.jsonl exists and line 1 is not a judge's pair"):
        label_with_judge(samples, judge, hand)
    assert hand.read_bytes() == hand_before
    (tmp_path / "dir").mkdir()
    with pytest.raises(SamplingError, match="is a directory"):
        label_with_judge(samples, judge, tmp_path / "dir")
    assert label_with_judge(samples, judge, tmp_path / "pairs.jsonl")["pairs"] == 1
    assert label_with_judge(samples, judge, tmp_path / "pairs.jsonl")["pairs"] == 1  # its own pairs: replaced


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (None, r"returned None from score\(\); it must return a list of one float per completion \(2\)"),
        (3.0, r"returned 3\.0 from score\(\)"),
        ([None, 1.0], r"returned None \(NoneType\) for prompt 7 "),
        (["abc", 1.0], r"returned 'abc' \(str\) for prompt 7 "),
        (["0.5", 1.0], r"returned '0\.5' \(str\) for prompt 7 "),
        (RuntimeError("boom"), r"raised RuntimeError: boom while scoring 2 completions"),
    ],
)
def test_a_judge_object_that_returns_no_numbers_is_a_judge_error(write_jsonl, tmp_path, out, message):
    """A judge object whose score() raised, returned None / a float / None or strings in the list: before, a bare
    TypeError/ValueError/RuntimeError from inside float(), or a string '0.5' silently taken for a score."""
    from hf_dpo.pairs.judges import JudgeError
    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 7, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    with pytest.raises(JudgeError, match=message):
        label_with_judge(samples, _ObjectJudge(out), tmp_path / "pairs.jsonl")
    assert not (tmp_path / "pairs.jsonl").exists()


def test_a_judge_object_may_return_numpy_and_torch_scalars(write_jsonl, tmp_path):
    import numpy as np
    import torch

    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    stats = label_with_judge(
        samples, _ObjectJudge([np.float32(2.0), torch.tensor(1.0)]), tmp_path / "p.jsonl"
    )
    assert stats["pairs"] == 1


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ([(1.0,), (0.0,)], r"returned \(1\.0,\) for prompt 7 .*one tuple of 2 numbers \(correct, concise\)"),
        ([(1.0, 1.0, 5.0), (0.0, 1.0, 0.0)], r"returned \(1\.0, 1\.0, 5\.0\) for prompt 7 "),
        ([1.0, 0.0], r"returned 1\.0 for prompt 7 "),
        (None, r"returned None from criteria_scores\(\)"),
        (RuntimeError("boom"), r"raised RuntimeError: boom while scoring 2 completions"),
    ],
)
def test_a_criteria_judge_object_with_the_wrong_number_of_criteria_is_a_judge_error(
    write_jsonl, tmp_path, out, message
):
    """A judge object whose criteria_scores() gave one value where it declares two criteria: before, an IndexError
    from the gate, a TypeError for plain floats or None, its exception bare; three values where it declares two were
    silently ranked on all three while the pairs' criteria columns showed two."""
    from hf_dpo.pairs.judges import JudgeError
    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 7, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    with pytest.raises(JudgeError, match=message):
        label_with_judge(
            samples,
            _CriteriaJudge(out),
            tmp_path / "pairs.jsonl",
            min_chosen_score=0.5,
            min_chosen_criterion="concise",
        )
    assert not (tmp_path / "pairs.jsonl").exists()


def test_a_pairs_file_that_cannot_be_written_is_a_named_error_and_the_old_pairs_stay(
    write_jsonl, tmp_path, monkeypatch
):
    """The disk full when the judge's pairs are written: before, a bare OSError traceback from files.py."""
    import errno

    from hf_dpo import files
    from hf_dpo.pairs.labelling import label_with_judge

    samples = write_jsonl(
        tmp_path / "s.jsonl", [{"index": 0, "prompt": "What is 2 + 3?", "completions": ["5", "6"]}]
    )
    pairs = tmp_path / "pairs.jsonl"
    label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", pairs)
    before = pairs.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(
        SamplingError, match=r"pairs\.jsonl: could not write the pairs \(No space left on device\)"
    ):
        label_with_judge(samples, "hf_dpo.pairs.demo_task:judge", pairs)
    assert pairs.read_bytes() == before
