"""Sampled work is never lost or mixed: a samples file cut off mid-line is repaired only when it is this run's, a
resume with other settings (system prompt, a train file of other settings) is refused, a full disk keeps the
samples so far, two runs on one file and a prompt sampled twice are named, all before the model loads where they
can be."""

from __future__ import annotations

import json

import pytest

from hf_dpo.pairs.formats import SamplingError
from tests.run_fixtures import sampling_recipe


def _sample_rows(recipe, prompts: list[str]) -> list[dict]:
    from hf_dpo.pairs.sampling import _settings

    settings = _settings(recipe.model, recipe.sampling)
    return [
        {
            "index": i,
            "prompt": p,
            "completions": ["x", "y"],
            "finished": [True, True],
            "settings": dict(settings),
        }
        for i, p in enumerate(prompts)
    ]


def test_a_refused_samples_file_keeps_its_cut_off_last_line(tmp_path):
    """A run killed mid-line, resumed with a changed recipe: before, the cut-off last line was dropped from the file
    and then the file refused (made with other settings); a file that is no samples file at all (samples_file
    pointing at notes, 'hello\\nworld') lost its last line the same way. Nothing is touched before it is known to
    be this run's."""
    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\nThree?\n")
    recipe = sampling_recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?", "Three?"])
    samples = tmp_path / "samples.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in rows[:2]) + json.dumps(rows[2])[:30]
    samples.write_text(text)
    with pytest.raises(SamplingError, match="other sampling settings"):
        sample(sampling_recipe(tmp_path, sampling_temperature=0.3), prompts_file, samples, progress=False)
    assert samples.read_text() == text
    notes = tmp_path / "notes.jsonl"
    notes.write_text("hello\nworld")
    with pytest.raises(SamplingError, match=r"notes\.jsonl, line 1: not valid JSON"):
        sample(recipe, prompts_file, notes, progress=False)
    assert notes.read_text() == "hello\nworld"


def test_a_samples_file_of_this_run_is_still_repaired_in_place(tmp_path):
    """The repair itself, once the file is known to be this run's: a cut-off last line dropped, a missing last
    newline added (the rest of the file as it was)."""
    from hf_dpo.pairs.sampling import _done_indices, _settings

    recipe = sampling_recipe(tmp_path)
    settings = _settings(recipe.model, recipe.sampling)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:20])
    assert _done_indices(samples, ["One?", "Two?"], settings) == {0}
    assert samples.read_text() == json.dumps(rows[0]) + "\n"
    samples.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1]))
    assert _done_indices(samples, ["One?", "Two?"], settings) == {0, 1}
    assert samples.read_text() == json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n"


def test_resuming_with_another_system_prompt_is_refused_not_mixed(write_jsonl, tmp_path):
    """system_prompt (or apply_chat_template, model_revision) changed between an interrupted run and its resume:
    before, the samples file was resumed, and half its prompts were answered under one system prompt and half
    under the other, while the dataset card named the new one for all. Rows written before these settings were
    recorded are resumed with their defaults."""
    from hf_dpo.pairs.sampling import _done_indices, _settings, sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\nThree?\n")
    recipe = sampling_recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    write_jsonl(samples, rows)
    before = samples.read_bytes()
    for over, key in [
        ({"system_prompt": "Answer in French."}, "system_prompt"),
        ({"apply_chat_template": False}, "apply_chat_template"),
        ({"model_revision": "v2"}, "revision"),
    ]:
        with pytest.raises(
            SamplingError, match=rf"line 1: made with other sampling settings than now \({key} "
        ):
            sample(sampling_recipe(tmp_path, **over), prompts_file, samples, progress=False)
    assert samples.read_bytes() == before
    # A file from before these keys: its rows have none of them, and resume as made with the defaults.
    for row in rows:
        for key in ("revision", "system_prompt", "apply_chat_template"):
            del row["settings"][key]
    write_jsonl(samples, rows)
    settings = _settings(recipe.model, recipe.sampling, recipe.data)
    assert _done_indices(samples, ["One?", "Two?", "Three?"], settings) == {0, 1}


def test_a_full_disk_while_sampling_is_named_and_the_samples_so_far_resume(tmp_path, monkeypatch):
    """The disk full after some batches: before, a bare OSError traceback from inside the sampling loop. Now a
    SamplingError naming the file and how many prompts are kept, and the next run resumes after them."""
    import errno
    import os

    from hf_dpo.pairs import sampling

    recipe = sampling_recipe(tmp_path, sampling_batch_size=1)
    prompts = ["One?", "Two?", "Three?"]
    settings = sampling._settings(recipe.model, recipe.sampling, recipe.data)

    def rows(model, tokenizer, indices, prompts, prompt_ids, settings, cfg):  # no model: fixed answers
        return [
            {"index": i, "prompt": prompts[i], "completions": ["x", "y"], "settings": settings}
            for i in indices
        ]

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(sampling, "_sample_rows", rows)
    monkeypatch.setattr(sampling.os, "fsync", fsync)
    samples = tmp_path / "samples.jsonl"
    with pytest.raises(
        SamplingError,
        match=r"samples\.jsonl: could not write the samples \(No space left on device\)"
        r"\. The 1 prompts sampled before are kept",
    ):
        sampling._append_samples(
            samples, None, None, prompts, [[1]] * 3, [0, 1, 2], settings, recipe.sampling, False
        )
    monkeypatch.setattr(sampling.os, "fsync", real_fsync)
    assert sampling._done_indices(samples, prompts, settings) >= {0}


def test_a_second_sample_run_on_the_same_file_is_refused_and_cuts_nothing(tmp_path):
    """Two `hf-dpo sample` runs on one samples file (a second terminal): before, the second took the first run's
    line in progress for the trace of a killed run and cut it off (the rest of it then written after the cut:
    a broken line inside the file), then sampled the same prompts again (duplicates labelling refuses)."""
    import fcntl

    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\n")
    recipe = sampling_recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = tmp_path / "samples.jsonl"
    text = json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:30]  # the first run, writing its second line
    samples.write_text(text)
    with open(samples, "ab") as first_run:
        fcntl.flock(first_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(
            SamplingError, match=r"samples\.jsonl is in use: another `hf-dpo sample` is writing it"
        ):
            sample(recipe, prompts_file, samples, progress=False)
    assert samples.read_text() == text


def test_a_prompt_sampled_twice_in_the_samples_file_is_named_before_sampling_more(write_jsonl, tmp_path):
    """A samples file holding one prompt twice (two runs before the lock above, lines copied): before, sampling
    resumed into it without a word, and only labelling refused it afterwards ('appears a second time')."""
    from hf_dpo.pairs.sampling import sample

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("One?\nTwo?\n")
    recipe = sampling_recipe(tmp_path)
    rows = _sample_rows(recipe, ["One?", "Two?"])
    samples = write_jsonl(tmp_path / "samples.jsonl", [rows[0], rows[0]])
    with pytest.raises(SamplingError, match=r"samples\.jsonl, line 2: prompt index 0 appears a second time"):
        sample(recipe, prompts_file, samples, progress=False)


def test_a_train_samples_file_of_other_settings_is_named_before_the_held_out_split_is_sampled(
    write_jsonl, tmp_path, monkeypatch
):
    """run_sampling samples the held-out split first; a train samples file made with other settings was named only
    when its turn came, after the model had loaded and the held-out prompts had been sampled (minutes)."""
    from hf_dpo.pairs import sampling
    from hf_dpo.pairs.formats import default_samples_file

    (tmp_path / "train.txt").write_text("One?\nTwo?\n")
    (tmp_path / "test.txt").write_text("Three?\n")
    recipe = sampling_recipe(
        tmp_path, prompts_file=str(tmp_path / "train.txt"), test_prompts_file=str(tmp_path / "test.txt")
    )
    old = _sample_rows(sampling_recipe(tmp_path, sampling_temperature=0.3), ["One?", "Two?"])
    train_samples = default_samples_file(recipe, "train")
    train_samples.parent.mkdir(parents=True)
    write_jsonl(train_samples, old)

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded before the train samples file was checked")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    with pytest.raises(
        SamplingError, match=r"samples_train\.jsonl, line 1: made with other sampling settings"
    ):
        sampling.run_sampling(recipe, progress=False)


def test_run_sampling_says_the_samples_file_is_in_use_before_the_model_loads(
    write_jsonl, tmp_path, monkeypatch
):
    """The lock above was first taken in sample(), which run_sampling calls after loading the model."""
    import fcntl

    from hf_dpo.pairs import sampling
    from hf_dpo.pairs.formats import default_samples_file

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    (tmp_path / "train.txt").write_text("One?\nTwo?\n")
    recipe = sampling_recipe(tmp_path, prompts_file=str(tmp_path / "train.txt"))
    samples = default_samples_file(recipe)
    samples.parent.mkdir(parents=True)
    write_jsonl(samples, _sample_rows(recipe, ["One?"]))
    with open(samples, "ab") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SamplingError, match=r"samples_train\.jsonl is in use"):
            sampling.run_sampling(recipe, progress=False)
