"""`hf-dpo sample`'s inputs and outputs: output files that would replace hand labels, each other or a README it did
not write, prompts files with a byte-order mark, prompts training would refuse, settings out of range, and a
resume after a line cut inside a UTF-8 character. Each wrong one is named before the reference model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _sampling_recipe(tmp_path: Path, **over):
    from hf_dpo.config import load_recipe

    (tmp_path / "prompts.txt").write_text("Question one?\nQuestion two?\n")
    values = {
        "model_name_or_path": str(tmp_path / "no-model"),
        "prompts_file": str(tmp_path / "prompts.txt"),
        "judge": "hf_dpo.pairs.demo_task:judge",
        "output_dir": str(tmp_path / "run"),
        **over,
    }
    return load_recipe(None, [x for k, v in values.items() for x in (f"--{k}", str(v))])


@pytest.fixture
def no_reference(monkeypatch):
    """Sampling must stop before the reference model loads (the check is for files, not weights)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the reference model was loaded before the output files were checked")

    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)


def test_sample_into_hand_labelled_pairs_is_refused(tmp_path, no_reference):
    """pairs_file pointing at `hf-dpo label`'s output (or any data set without a judge's scores): before, the
    judge's pairs replaced it once sampling finished."""
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling

    pairs = _write_jsonl(
        tmp_path / "mine.jsonl", [{"prompt": "P", "chosen": "c", "rejected": "r", "judge": "human"}] * 5
    )
    before = pairs.read_bytes()
    with pytest.raises(SamplingError, match=r"mine\.jsonl exists and line 1 is not a judge's pair.*5 rows"):
        run_sampling(_sampling_recipe(tmp_path, pairs_file=pairs))
    assert pairs.read_bytes() == before


@pytest.mark.parametrize(
    "over, message",
    [
        # the held-out pairs go to test.jsonl beside pairs_file: here the train pairs file itself
        (
            {"pairs_file": "{d}/test.jsonl", "test_prompts_file": "{d}/prompts.txt"},
            "also the test pairs file",
        ),
        ({"pairs_file": "{d}/prompts.jsonl", "prompts_file": "{d}/prompts.jsonl"}, "also prompts_file"),
        ({"samples_file": "{d}/prompts.txt"}, "also prompts_file"),
        ({"pairs_file": "{d}/run/samples_train.jsonl"}, "also the train samples file"),
    ],
)
def test_sample_files_that_would_be_one_file_are_refused(tmp_path, no_reference, over, message):
    """Before: the train pairs replaced the held-out pairs (and were then reported as held-out), the samples or
    pairs were written over the prompts, the pairs over the samples."""
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling

    _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Question one?"}, {"prompt": "Question two?"}])
    recipe = _sampling_recipe(tmp_path, **{k: v.format(d=tmp_path) for k, v in over.items()})
    with pytest.raises(SamplingError, match=message):
        run_sampling(recipe)


def test_sample_keeps_a_readme_it_did_not_write(tmp_path, no_reference):
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("# My project\n")
    with pytest.raises(SamplingError, match="README.md exists and is not a dataset card hf-dpo wrote"):
        run_sampling(_sampling_recipe(tmp_path, pairs_file=tmp_path / "data" / "train.jsonl"))
    assert (tmp_path / "data" / "README.md").read_text() == "# My project\n"


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    """Before: a .txt saved by a Windows editor gave '\\ufeffQuestion one?' as the first prompt, sampled and
    trained on with an invisible character in front."""
    from hf_dpo.pairs.formats import read_prompts

    (tmp_path / "prompts.txt").write_bytes("\ufeffQuestion one?\r\nQuestion two?\r\n".encode())
    assert read_prompts(tmp_path / "prompts.txt") == ["Question one?", "Question two?"]


@pytest.mark.parametrize(
    "prompt, message",
    [
        ([{"role": "human", "content": "Hi"}], "role 'human' is not one of system, user"),
        ("Hi \ud800", "surrogate"),
        ([{"role": "user", "content": "Hi \ud800"}], "surrogate"),
    ],
)
def test_prompts_training_would_refuse_are_named_before_sampling(tmp_path, prompt, message):
    """Before: sampled for minutes, then `hf-dpo train` refused every pair of the prompt (role) or the tokenizer
    raised TypeError once the reference was loaded (surrogate)."""
    from hf_dpo.pairs.formats import SamplingError, read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Fine?"}) + "\n" + json.dumps({"prompt": prompt}) + "\n")
    with pytest.raises(SamplingError, match=rf"prompts\.jsonl, line 2: .*{message}"):
        read_prompts(path)


def test_prompts_jsonl_with_a_byte_order_mark_reads_its_first_prompt(tmp_path):
    from hf_dpo.pairs.formats import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "One?"}\n{"prompt": "Two?"}\n')
    assert read_prompts(path) == ["One?", "Two?"]


def test_preflight_sampling_checks_the_output_files(tmp_path):
    """Before: only run_sampling checked them; preflight_sampling, the one check of a sampling recipe, passed a
    recipe whose pairs would replace a README.md it did not write. run_sampling still checks for API callers."""
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling
    from hf_dpo.preflight import preflight_sampling

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("# My project\n")
    recipe = _sampling_recipe(tmp_path, pairs_file=tmp_path / "data" / "train.jsonl")
    with pytest.raises(SamplingError, match="README.md exists and is not a dataset card hf-dpo wrote"):
        preflight_sampling(recipe)
    with pytest.raises(SamplingError, match="README.md exists and is not a dataset card hf-dpo wrote"):
        run_sampling(recipe)  # the Python API without the preflight: checked before any model loads


def test_per_row_sampler_refuses_top_p_and_temperature_out_of_range():
    from hf_dpo.pairs.row_sampler import PerRowSampler

    for top_p in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(SamplingError, match="sampling_top_p"):
            PerRowSampler([0], 1.0, top_p)
    for temperature in (-1.0, float("nan"), float("inf")):
        with pytest.raises(SamplingError, match="sampling_temperature"):
            PerRowSampler([0], temperature, 1.0)


def test_sampling_resume_drops_a_last_line_cut_inside_a_utf8_character(tmp_path, tiny_model_dir):
    from hf_dpo.config import ModelConfig, load_recipe
    from hf_dpo.pairs.sampling import load_reference, sample

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "Qu'est-ce qu'un café ☕ ?\nÉcris « bonjour ».\nNenne drei Städte.\n", encoding="utf-8"
    )
    recipe = load_recipe(
        None,
        ["--model_name_or_path", tiny_model_dir, "--quantization", "none", "--num_samples_per_prompt", "2"]
        + ["--max_new_tokens", "4", "--sampling_batch_size", "3", "--output_dir", str(tmp_path / "run")],
    )
    tiny = load_reference(ModelConfig(model_name_or_path=tiny_model_dir, quantization="none"))
    full_path = tmp_path / "full.jsonl"
    sample(recipe, prompts, full_path, tiny, progress=False)
    full = full_path.read_bytes()
    lines = full.splitlines(keepends=True)
    third = lines[2]
    cut = third.index("ä".encode()) + 1  # inside the two bytes of "ä"
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines[:2]) + third[:cut])
    stats = sample(recipe, prompts, part, tiny, progress=False)
    assert stats["resumed"] == 2 and stats["sampled_now"] == 1
    assert part.read_bytes() == full
    # Killed at any byte: the rerun drops what was cut and ends with the same file as an uninterrupted run.
    import random

    for cut in sorted(random.Random(12).sample(range(1, len(full)), 6)):
        part.write_bytes(full[:cut])
        sample(recipe, prompts, part, tiny, progress=False)
        assert part.read_bytes() == full, cut
