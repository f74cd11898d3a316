"""`hf-dpo sample`'s inputs and outputs: output files that would replace hand labels, each other, a README it did
not write, or that are (or sit under) a directory or a file; `~` in recipe paths; prompts files with a byte-order
mark or a Unicode line separator; prompts training would refuse; settings out of range; a resume after a line cut
inside a UTF-8 character. Each wrong one is named before the reference model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo.pairs.formats import SamplingError
from tests.run_fixtures import sampling_recipe


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


def test_sample_into_hand_labelled_pairs_is_refused(write_jsonl, tmp_path, no_reference):
    """pairs_file pointing at `hf-dpo label`'s output (or any data set without a judge's scores): before, the
    judge's pairs replaced it once sampling finished."""
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling

    pairs = write_jsonl(
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
def test_sample_files_that_would_be_one_file_are_refused(write_jsonl, tmp_path, no_reference, over, message):
    """Before: the train pairs replaced the held-out pairs (and were then reported as held-out), the samples or
    pairs were written over the prompts, the pairs over the samples."""
    from hf_dpo.pairs.formats import SamplingError
    from hf_dpo.pairs.sampling import run_sampling

    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Question one?"}, {"prompt": "Question two?"}])
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


def test_a_txt_prompt_with_a_unicode_line_separator_stays_one_prompt(tmp_path):
    """U+2028 (pasted from a web page), NEL or a form feed inside a prompt: before, str.splitlines() cut the prompt
    there, and two half prompts were sampled with no word said. Lines end at \\n, \\r\\n or \\r only."""
    from hf_dpo.pairs.formats import read_prompts

    path = tmp_path / "prompts.txt"
    path.write_bytes("Explain this:\u2028x = 1\r\nPage one\x0cpage two\rNext\x85line\n\n".encode())
    assert read_prompts(path) == ["Explain this:\u2028x = 1", "Page one\x0cpage two", "Next\x85line"]


@pytest.mark.parametrize("key", ["samples_file", "pairs_file"])
def test_a_sampling_output_that_is_a_directory_is_named_before_sampling(tmp_path, key):
    """samples_file or pairs_file naming an existing directory: before, the checks passed, and the run ended in
    a traceback (IsADirectoryError), for pairs_file only after every prompt was sampled."""
    from hf_dpo.pairs.formats import check_output_files

    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "out").mkdir()
    recipe = sampling_recipe(
        tmp_path,
        prompts_file=str(tmp_path / "prompts.txt"),
        judge="hf_dpo.pairs.demo_task:judge",
        **{key: str(tmp_path / "out")},
    )
    with pytest.raises(SamplingError, match=r"out, which is a directory\. Set samples_file / pairs_file"):
        check_output_files(recipe, ["train"])


def test_recipe_paths_under_home_mean_the_home_directory(tmp_path, monkeypatch):
    """samples_file / pairs_file / prompts_file as `~/...` in a recipe (output_dir already meant the home directory):
    before, the samples and pairs went to a directory literally named '~' under the working directory (the checks
    had looked at the home directory), and the prompts file was 'does not exist'."""
    from hf_dpo.pairs.formats import default_pairs_file, default_samples_file, read_prompts

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "p.txt").write_text("One?\n")
    recipe = sampling_recipe(tmp_path, samples_file="~/runs/s.jsonl", pairs_file="~/pairs/train.jsonl")
    assert default_samples_file(recipe) == tmp_path / "home" / "runs" / "s.jsonl"
    assert default_samples_file(recipe, "test") == tmp_path / "home" / "runs" / "s_test.jsonl"
    assert default_pairs_file(recipe, "test") == tmp_path / "home" / "pairs" / "test.jsonl"
    assert read_prompts("~/p.txt") == ["One?"]


def test_sample_into_a_directory_is_a_named_error(tmp_path):
    """sample() (the Python API, without the preflight) with samples_file an existing directory: before, an
    IsADirectoryError traceback from reading it."""
    from hf_dpo.pairs.sampling import sample

    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "out").mkdir()
    with pytest.raises(SamplingError, match=r"samples file .*out cannot be written \(Is a directory\)"):
        sample(sampling_recipe(tmp_path), tmp_path / "prompts.txt", tmp_path / "out", progress=False)


def test_sample_under_a_file_is_named_before_the_model_loads(tmp_path, monkeypatch):
    """sample() with samples_file under a path that is a file (notes.txt/samples.jsonl): before, the model loaded,
    the prompts were encoded, and then mkdir raised a bare NotADirectoryError."""
    from hf_dpo.pairs import sampling

    def load_reference(model_cfg):
        raise AssertionError("the model was loaded first")

    monkeypatch.setattr(sampling, "load_reference", load_reference)
    (tmp_path / "prompts.txt").write_text("One?\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(SamplingError, match=r"samples file .*notes\.txt/samples\.jsonl cannot be made"):
        sampling.sample(
            sampling_recipe(tmp_path), tmp_path / "prompts.txt", tmp_path / "notes.txt" / "samples.jsonl"
        )
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
