"""Hostile inputs found by an audit after issue 12's (tests/test_hardening.py): each test failed before its fix.

Labelling into an existing pairs file, sampling outputs that would replace other files, preference data that was
silently cut short or crashed the tokenizer, prompts files with a byte-order mark or foreign roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _samples(path: Path) -> Path:
    rows = [{"index": i, "prompt": f"Question {i}?", "completions": [f"a{i}", f"b{i}"]} for i in range(2)]
    return _write_jsonl(path, rows)


# ---------------------------------------------------------------- hand labelling never replaces other pairs


def test_label_out_that_is_an_existing_pairs_file_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    """`hf-dpo label S --out train.jsonl` on a judge's (or anyone's) pairs file: before, the server started and
    the first click rewrote it with the one hand-labelled pair; its 100 rows were gone."""
    import socketserver

    def stop(self, *args, **kwargs):  # a server that started returns at once (as after Ctrl-C)
        raise KeyboardInterrupt

    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", stop)
    samples = _samples(tmp_path / "s.jsonl")
    pairs = _write_jsonl(
        tmp_path / "train.jsonl",
        [{"prompt": f"P{i}", "chosen": "c", "rejected": "r", "score_chosen": 1.0} for i in range(100)],
    )
    before = pairs.read_bytes()
    rc = cli.main(["label", str(samples), "--out", str(pairs), "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.jsonl already exists" in err and "100 rows would be lost" in err
    assert "Traceback" not in err and pairs.read_bytes() == before


def test_label_resumes_into_its_own_pairs_file(tmp_path):
    """The guard above leaves resuming alone: OUT written by labelling, with its log beside it, reopens."""
    from hf_dpo.pairs.label_store import LabelStore

    samples = _samples(tmp_path / "s.jsonl")
    store = LabelStore(samples)
    store.decide(0, "left")
    again = LabelStore(samples)
    assert again.state()["done"] == 1 and len(again.pairs()) == 1
    # ... but not when its log is gone: the pairs file is then the only copy of those labels.
    again.log.unlink()
    with pytest.raises(Exception, match="no decision log"):
        LabelStore(samples)


# ---------------------------------------------------------------- hf-dpo sample never replaces other files


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


# ---------------------------------------------------------------- preference data: never cut short, never a traceback


def _read(path: Path, **cfg):
    from hf_dpo.config import DataConfig
    from hf_dpo.data import read_splits

    return read_splits(DataConfig(dataset_name=str(path), **cfg))


def test_column_oriented_json_with_columns_of_different_lengths_is_named(tmp_path):
    """Before: zip cut every column to the shortest, and 2 of 3 rows trained without a word."""
    from hf_dpo.data import DataError

    path = tmp_path / "pairs.json"
    path.write_text(
        json.dumps({"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"], "rejected": ["r", "s"]})
    )
    with pytest.raises(DataError, match=r"pairs\.json: its columns have different lengths.*rejected: 2"):
        _read(path)


def test_two_files_for_one_split_are_named_not_one_ignored(tmp_path):
    """Before: train.json was read and train.jsonl beside it silently ignored."""
    from hf_dpo.data import DataError

    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (tmp_path / "train.json").write_text(json.dumps([row]))
    _write_jsonl(tmp_path / "train.jsonl", [row] * 6)
    with pytest.raises(DataError, match=r"two files for split 'train' \(train\.json and train\.jsonl\)"):
        _read(tmp_path)


def test_a_split_file_that_cannot_be_opened_is_named_itself(tmp_path):
    """Before: 'DIR: cannot be read (No such file or directory)', naming the directory, which exists."""
    from hf_dpo.data import DataError

    _write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    (tmp_path / "test.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(DataError, match=r"test\.jsonl: cannot be read \(No such file"):
        _read(tmp_path, dataset_test_split="test")


def test_a_csv_that_cannot_be_parsed_says_why(tmp_path):
    """Before: 'could not be read as csv: An error occurred while generating the dataset' (datasets' wrapper)."""
    from hf_dpo.data import DataError

    (tmp_path / "pairs.csv").write_text('prompt,chosen,rejected\n"a,b\n')
    with pytest.raises(
        DataError, match=r"pairs\.csv: could not be read as csv \(ParserError: .*EOF inside string"
    ):
        _read(tmp_path / "pairs.csv")


@pytest.mark.parametrize("column", ["prompt", "chosen"])
def test_a_lone_surrogate_in_a_row_is_named_before_the_tokenizer(tmp_path, column):
    """'\\ud800' in the JSON: before, the row passed every check and the tokenizer raised TypeError ('TextEncodeInput
    must be Union[...]') from inside transformers once the model was loaded."""
    from hf_dpo.config import DataConfig
    from hf_dpo.data import BadRow, normalize_row

    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row).replace(f'"{row[column]}"', f'"{row[column]}\\ud800"') + "\n")
    (parsed,) = (r for _, rows in _read(path).values() for r in rows)
    with pytest.raises(BadRow, match="surrogate") as bad:
        normalize_row(parsed, DataConfig())
    assert bad.value.column == column
    messages = {"prompt": [{"role": "user", "content": "p\ud800"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(BadRow, match="surrogate"):
        normalize_row(messages, DataConfig())


# ---------------------------------------------------------------- prompts for sampling


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


# ---------------------------------------------------------------- hf-dpo bench: bad options before any line starts


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quantization", "3bit"], "--quantization 3bit: choose from 4bit, 8bit, none"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--batch-size", "-2"], "--batch-size must be >= 1, got -2"),
        (
            ["--warmup", "1" + "0" * 30],
            "--warmup 1000000000000000000000000000000 is over 100000000 (10^8 steps",
        ),
        (["--max-length", "100000000"], "--max-length 100000000 is over 4194304 (4M tokens"),
        (["--out", "{d}"], "is a directory"),
        (["--out", "{d}/file.txt/bench.json"], "cannot be written"),
        (["--recipe", "{d}/missing.yaml"], "missing.yaml cannot be read"),
        (["--recipe", "{d}/bad.yaml"], "bad.yaml cannot be read (ParserError"),
        (["--data-sets", "{d}/broken.jsonl"], "broken.jsonl, line 2: not valid JSON"),
        (["--data-sets", "{d}/no_prompt.jsonl"], "no_prompt.jsonl, row 0: no prompt"),
    ],
)
def test_bench_options_are_checked_before_any_line_runs(tmp_path, monkeypatch, capsys, argv, message):
    """Before: a bad --quantization, --steps or --out was met in each line's fresh process (a model load each) or
    after the whole bench (--out: the table was lost); a bad --recipe or data file was a Python traceback."""
    pytest.importorskip("trl")

    def refuse(*args, **kwargs):
        raise AssertionError("a bench line started before the options were checked")

    monkeypatch.setattr("hf_dpo.bench.runner.spawn", refuse)
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "bad.yaml").write_text("lora_r: [1\n")
    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (tmp_path / "broken.jsonl").write_text(json.dumps(row) + "\n{not json\n")
    _write_jsonl(tmp_path / "no_prompt.jsonl", [{"chosen": "a", "rejected": "b"}] * 4)
    argv = [a.format(d=tmp_path) for a in argv]
    rc = cli.main(["bench", "--quick", "--batch-size", "1", "--out", str(tmp_path / "b.json"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


# ---------------------------------------------------------------- hf-dpo plan


@pytest.mark.parametrize("text", ["0", "0GB", "1.2.3GB", "."])
def test_plan_memory_sizes_that_are_no_size_are_named(text):
    """Before: '1.2.3GB' and '.' raised ValueError from float(); '0' planned against 0 bytes ('does not fit')."""
    from hf_dpo.plan.arch import PlanError
    from hf_dpo.plan.fit import parse_size

    with pytest.raises(PlanError, match=f"memory size '{text}'"):
        parse_size(text)


def test_plan_a_model_name_too_long_for_a_path_is_named(monkeypatch):
    """Before: OSError 'File name too long' from pathlib while looking for a local config.json."""
    from hf_dpo.plan.arch import PlanError, load_arch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("hf_dpo.plan.arch._hub_reachable", lambda: False)
    with pytest.raises(PlanError, match="No architecture for 'aaaa"):
        load_arch("a" * 300)


# ---------------------------------------------------------------- recipe files: a key twice, a directory


def test_recipe_key_given_twice_is_refused_naming_file_key_and_line(tmp_path):
    """Before: `beta: 0.1` then `beta: 0.2` silently trained with 0.2 (YAML keeps the last value)."""
    from hf_dpo.config import RecipeError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta: 0.1\nlearning_rate: 1.0e-6\nbeta: 0.2\n")
    with pytest.raises(RecipeError, match=r"r\.yaml, line 3: key 'beta' is given twice"):
        load_recipe(recipe)
    # `<<: *base` then the same key is YAML's override, not a key written twice
    recipe.write_text("base: &b {a: 1}\nc:\n  <<: *b\n  a: 2\n")
    from hf_dpo.config import read_recipe_file

    assert read_recipe_file(recipe)["c"] == {"a": 2}


def test_recipe_path_that_is_a_directory_says_so(tmp_path):
    """Before: "Recipe recipes does not exist", for a directory that plainly exists."""
    from hf_dpo.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"is a directory; a recipe is a YAML file"):
        load_recipe(tmp_path)


# ---------------------------------------------------------------- a byte-order mark is not part of the first row


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_data_file_with_a_byte_order_mark_reads_its_first_row(tmp_path, suffix):
    """Before: "line 1: not valid JSON (Unexpected UTF-8 BOM ...). Fix or delete that line": deleting lost a row."""
    from hf_dpo.config import DataConfig
    from hf_dpo.data import read_splits

    rows = [
        {"prompt": "P1", "chosen": "c", "rejected": "r"},
        {"prompt": "P2", "chosen": "c", "rejected": "r"},
    ]
    text = json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / f"train{suffix}").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    _, read = read_splits(DataConfig(dataset_name=str(tmp_path / f"train{suffix}")))["train"]
    assert read == rows


def test_prompts_jsonl_with_a_byte_order_mark_reads_its_first_prompt(tmp_path):
    from hf_dpo.pairs.formats import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "One?"}\n{"prompt": "Two?"}\n')
    assert read_prompts(path) == ["One?", "Two?"]


# ---------------------------------------------------------------- the output-files check is part of the preflight


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
