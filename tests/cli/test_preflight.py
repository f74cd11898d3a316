"""`hf-dpo train` checks everything it can before loading a model: each hostile input ends in under a second with
exit code 2 and one `error:` line naming the file, row or key; the model loader is never reached."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.config import RecipeError, load_recipe
from hf_dpo.preflight import preflight
from tests.run_fixtures import recipe_on_data, write_adapter


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def test_misspelled_judge_stops_before_the_model_loads_and_leaves_no_files(train, tmp_path, capsys, no_model):
    rc, err = train(tmp_path, capsys, "judge: hf_dpo.pairs.demo_task:judgee\n")
    assert rc == 2
    line = _one_error(err)
    assert "judgee" in line and "has no attribute" in line
    assert not (tmp_path / "run" / "README.md").exists() and not (tmp_path / "run" / "recipe.yaml").exists()


@pytest.mark.parametrize(
    "rows, expected",
    [
        (
            [{"prompt": "p", "chosen": "same", "rejected": "same"}],
            r"train.jsonl, row 0, column 'rejected'.*identical",
        ),
        ([{"prompt": "p", "chosen": "a"}], r"no column 'rejected'|row 0, column 'rejected'"),
        (
            [{"prompt": [{"role": 3, "content": "hi"}], "chosen": "a", "rejected": "b"}],
            r"row 0, column 'prompt': message role 3 is not one of",
        ),
        (
            [{"prompt": [{"role": "wizard", "content": "hi"}], "chosen": "a", "rejected": "b"}],
            r"row 0, column 'prompt': message role 'wizard'",
        ),
    ],
)
def test_bad_rows_are_found_before_the_model_loads(
    arithmetic_pairs, train, write_jsonl, tmp_path, capsys, no_model, rows, expected
):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(3) + rows)
    write_jsonl(tmp_path / "data" / "test.jsonl", arithmetic_pairs(2))
    rc, err = train(tmp_path, capsys)
    assert rc == 2
    line = _one_error(err)
    assert "train.jsonl" in line
    import re

    assert re.search(expected.replace("row 0", "row 3"), line), line


def test_non_utf8_jsonl_and_json_name_the_file_and_line(arithmetic_pairs, train, tmp_path, capsys, no_model):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_bytes(
        json.dumps(arithmetic_pairs(1)[0]).encode()
        + b"\n"
        + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'
    )
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re_search(r"train.jsonl, line 2: not UTF-8", _one_error(err))

    (data / "train.jsonl").unlink()
    (data / "train.json").write_bytes(b'[{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}]')
    rc, err = train(tmp_path, capsys, "", "--dataset_test_split", "null")
    assert rc == 2 and re_search(r"train.json, line 1: not UTF-8", _one_error(err))


def test_json_file_of_numbers_is_named(train, tmp_path, capsys, no_model):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text("[1, 2, 3]")
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re_search(r"train.json, row 0: expected an object", _one_error(err))


def test_empty_held_out_split_is_named(arithmetic_pairs, train, write_jsonl, tmp_path, capsys, no_model):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    (tmp_path / "data" / "test.jsonl").write_text("")
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re_search(r"test.jsonl.*held-out split 'test' has no usable pairs", _one_error(err))
    # ... and one whose rows are all skipped as bad
    write_jsonl(tmp_path / "data" / "test.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "x"}])
    rc, err = train(tmp_path, capsys, "on_bad_rows: skip\n")
    assert rc == 2 and re_search(r"held-out split 'test' has no usable pairs", _one_error(err))


def test_eval_fraction_out_of_range_and_leaving_nothing_to_train(
    arithmetic_pairs, train, write_jsonl, tmp_path, capsys, no_model
):
    rc, err = train(tmp_path, capsys, "eval_fraction: 1.5\n")
    assert rc == 2 and re_search(r"key 'eval_fraction': must be in \[0, 1\)", _one_error(err))
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(1))
    (tmp_path / "data" / "test.jsonl").unlink()
    rc, err = train(tmp_path, capsys, "eval_fraction: 0.5\n")
    assert rc == 2 and re_search(r"eval_fraction 0.5 of 1 usable pairs leaves none", _one_error(err))


def test_unwritable_output_dir_is_named(train, tmp_path, capsys, no_model):
    (tmp_path / "afile").write_text("x")
    rc, err = train(tmp_path, capsys, "", "--output_dir", str(tmp_path / "afile" / "run"))
    assert rc == 2 and re_search(r"output_dir .*afile/run cannot be written", _one_error(err))


def test_a_recipe_failing_a_later_check_leaves_no_new_directory(train, tmp_path, capsys, no_model):
    # The writability check comes first; before, it created output_dir (and its parents) and left them behind,
    # an empty run dir a rerun could take for a resume.
    deep = tmp_path / "new" / "deeper" / "run"
    rc, err = train(tmp_path, capsys, "judge: hf_dpo.pairs.demo_task:judgee\n", "--output_dir", str(deep))
    assert rc == 2 and "judgee" in _one_error(err)
    assert not (tmp_path / "new").exists()
    # ... and one failing the last check, on the tokenized data
    rc, err = train(tmp_path, capsys, "", "--output_dir", str(deep), "--max_length", "4")
    assert rc == 2 and "no usable pairs left" in _one_error(err)
    assert not (tmp_path / "new").exists()


def test_an_existing_output_dir_is_left_as_it_was(train, tmp_path, capsys, no_model):
    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    rc, err = train(tmp_path, capsys, "judge: hf_dpo.pairs.demo_task:judgee\n")
    assert rc == 2 and "judgee" in _one_error(err)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # no probe file left either
    assert (run / "notes.txt").read_text() == "mine"


def test_output_dir_under_an_unknown_users_home_is_named(train, tmp_path, capsys, no_model):
    # Path.expanduser raises RuntimeError for `~user` with no such user: an error line, not a traceback.
    rc, err = train(tmp_path, capsys, "", "--output_dir", "~no_such_user_hf_dpo/run")
    assert rc == 2 and re_search(r"output_dir ~no_such_user_hf_dpo/run cannot be written", _one_error(err))


def test_unwritable_ref_cache_dir_is_a_warning_and_the_cache_goes_off(
    arithmetic_pairs, write_jsonl, tmp_path, caplog
):
    data = write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4)).parent
    (tmp_path / "afile").write_text("x")
    recipe = load_recipe(
        None,
        ["--dataset_name", str(data), "--output_dir", str(tmp_path / "run"), "--report_to", "none"]
        + ["--ref_logps_cache_dir", str(tmp_path / "afile" / "cache"), "--precompute_ref_log_probs", "true"],
    )
    with caplog.at_level(logging.WARNING):
        preflight(recipe)
    assert recipe.training.ref_logps_cache_dir == "none"
    assert "ref_logps_cache_dir" in caplog.text and "in memory only" in caplog.text


@pytest.fixture
def no_report_place(tmp_path, monkeypatch) -> Path:
    """evaluate's modules cache below a regular file (unwritable, root or not), no temporary directory to be had
    for it, and the report's modules not yet loaded in this process."""
    import functools
    import tempfile

    import evaluate.config

    from hf_dpo.report import evaluate_offline

    (tmp_path / "a-file").write_text("x")
    blocked = tmp_path / "a-file" / "modules"
    make_temporary = tempfile.mkdtemp

    def mkdtemp(*args, prefix=None, **kwargs):
        if prefix and prefix.startswith("hf_dpo_hf_modules_cache"):
            raise PermissionError(13, "Permission denied", "/tmp")
        return make_temporary(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", blocked)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    fresh = functools.cache(evaluate_offline._report_module.__wrapped__)
    monkeypatch.setattr(evaluate_offline, "_report_module", fresh)
    return blocked


def test_a_report_that_could_never_be_computed_stops_before_training(
    train, tmp_path, capsys, no_model, no_report_place, monkeypatch
):
    """Before: training ran, then the report (and the held-out summary) died in evaluate. Now: preflight loads
    the report's modules, before the tokenizer loads; only when the report will compute a number."""
    from hf_dpo import preflight as preflight_module
    from hf_dpo.report import evaluate_offline

    tokenizer_loads = []
    load_tokenizer = preflight_module.load_checked_tokenizer
    monkeypatch.setattr(
        preflight_module, "load_checked_tokenizer", lambda r: tokenizer_loads.append(1) or load_tokenizer(r)
    )
    rc, err = train(tmp_path, capsys)  # a held-out split: the report computes preference metrics
    line = _one_error(err)
    assert rc == 2 and str(no_report_place) in line and "HF_MODULES_CACHE" in line
    assert "training does not start" in line and "hf-dpo eval" not in line
    assert tokenizer_loads == [] and not (tmp_path / "run").exists()
    # No held-out split and no judge: the report computes no number and the modules are not needed.
    (tmp_path / "data" / "test.jsonl").unlink()
    recipe = load_recipe(
        None, ["--dataset_name", str(tmp_path / "data"), "--output_dir", str(tmp_path / "run")]
    )
    assert len(preflight(recipe).train) == 6 and tokenizer_loads == [1]
    assert evaluate_offline._report_module.cache_info().currsize == 0


def test_unwritable_ref_cache_file_write_warns_and_returns(tmp_path, caplog):
    """After the reference pass: a cache that cannot be written loses nothing but the cache."""
    from hf_dpo.train import ref_cache

    (tmp_path / "afile").write_text("x")
    with caplog.at_level(logging.WARNING):
        written = ref_cache.save(
            tmp_path / "afile" / "sub" / "k.safetensors", [1.0, 2.0], [0.5, 0.1], {"a": 1}
        )
    assert written is False
    assert "Could not write the reference log-prob cache" in caplog.text
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            assert ref_cache.save(ro / "k.safetensors", [1.0], [0.5], {}) is False
        finally:
            ro.chmod(0o700)


@pytest.mark.parametrize(
    "recipe, key",
    [
        ("on: 3\n", "True"),
        ("123: x\n", "123"),
        ("beta: .nan\n", "beta"),
        ("learning_rate: .inf\n", "learning_rate"),
        ("lora_r: -1\n", "lora_r"),
        ("lora_r: 1.5\n", "lora_r"),
        ("bnb_4bit_quant_storage: foo\n", "bnb_4bit_quant_storage"),
        ("sampling_top_p: 0\n", "sampling_top_p"),
        ("sampling_top_p: -0.5\n", "sampling_top_p"),
        ("sampling_temperature: .nan\n", "sampling_temperature"),
        ("max_new_tokens: 0\n", "max_new_tokens"),
        ("num_samples_per_prompt: 1\n", "num_samples_per_prompt"),
        ("per_device_train_batch_size: 0\n", "per_device_train_batch_size"),
        ("seed: -1\n", "seed"),
        ("max_length: 0\n", "max_length"),
        ("lora_dropout: 1.5\n", "lora_dropout"),
        ("quantization: nf4\n", "quantization"),
        ("lora_target_modules: []\n", "lora_target_modules"),
        ("dataset_name: [a, b]\n", "dataset_name"),
        ("report_to: not_an_integration\n", "report_to"),
    ],
)
def test_bad_recipe_values_name_the_key(train, tmp_path, capsys, no_model, recipe, key):
    rc, err = train(tmp_path, capsys, recipe)
    assert rc == 2
    assert key in _one_error(err)


def test_push_without_a_token_fails_before_training(train, tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored token either
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    rc, err = train(tmp_path, capsys, "push_to_hub: true\nhub_model_id: me/x\n")
    assert rc == 2 and "no Hub token" in _one_error(err)


def test_missing_local_model_dir_is_named(train, tmp_path, capsys, no_model):
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {tmp_path / 'nope'}\n")
    assert rc == 2 and "model_name_or_path" in _one_error(err)


def test_the_demo_recipe_passes(tmp_path):
    recipe = load_recipe("recipes/demo.yaml", ["--output_dir", str(tmp_path / "run")])
    data = preflight(recipe)  # tokenized: the run trains on this, it does not tokenize again
    assert len(data.train) == 128 and len(data.eval) > 0  # max_train_samples: 128
    assert data.report["train"]["pairs_used"] == 128
    assert not (tmp_path / "run").exists()  # the writability check leaves nothing behind


def test_cli_override_values_are_checked_too():
    with pytest.raises(RecipeError, match="sampling_top_p"):
        load_recipe("recipes/demo.yaml", ["--sampling_top_p", "0"])


def re_search(pattern: str, text: str) -> bool:
    import re

    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return True


def test_recipe_file_that_is_not_utf8_is_named(tmp_path, capsys, no_model):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"learning_rate: 1e-4\nsystem_prompt: caf\xe9\n")
    assert cli.main(["train", str(path)]) == 2
    assert re_search(r"r.yaml, line 2: not UTF-8", _one_error(capsys.readouterr().err))


def test_judge_that_cannot_take_prompt_and_completion_is_named(train, tmp_path, capsys, no_model):
    rc, err = train(tmp_path, capsys, "judge: os:getcwd\n")
    assert rc == 2 and re_search(
        r"judge 'os:getcwd' cannot be called as getcwd\(prompt, completion\)", _one_error(err)
    )


def test_sample_checks_prompts_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reference model was loaded before the prompts were checked")

    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)
    (tmp_path / "p.txt").write_bytes(b"fine\ncaf\xe9\n")
    rc = cli.main(
        ["sample", "recipes/demo_pairs.yaml", "--prompts_file", str(tmp_path / "p.txt")]
        + ["--output_dir", str(tmp_path / "run")]
    )
    assert rc == 2 and re_search(r"p.txt, line 2: not UTF-8", _one_error(capsys.readouterr().err))


def test_resume_true_picks_the_last_complete_checkpoint_and_skips_one_cut_short(
    train, tmp_path, capsys, no_model, caplog
):
    rc, err = train(tmp_path, capsys, "resume_from_checkpoint: true\n")
    assert rc == 2 and re_search(r"no complete checkpoint-N in .*run to resume from", _one_error(err))
    run = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):  # killed while saving checkpoint-6
        write_adapter(run / f"checkpoint-{step}", "smollm2-135m-instruct")
        if complete:
            (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    recipe = load_recipe(
        None,
        ["--dataset_name", str(tmp_path / "data"), "--output_dir", str(run), "--report_to", "none"]
        + ["--resume_from_checkpoint", "true"],
    )
    with caplog.at_level(logging.WARNING):
        preflight(recipe)
    assert recipe.training.resume_from_checkpoint == str(run / "checkpoint-4")
    assert "checkpoint-6 was cut short" in caplog.text
    rc, err = train(tmp_path, capsys, f"resume_from_checkpoint: {run / 'checkpoint-6'}\n")
    assert rc == 2 and re_search(r"checkpoint-6 has no trainer_state.json", _one_error(err))


def test_json_nested_too_deeply_is_named_not_a_recursion_traceback(
    arithmetic_pairs, train, write_jsonl, tmp_path, capsys, no_model
):
    deep = "[" * 100000 + "]" * 100000
    write_jsonl(tmp_path / "data" / "test.jsonl", arithmetic_pairs(2))
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps(arithmetic_pairs(1)[0]) + "\n" + deep + "\n")
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re_search(r"train.jsonl, line 2: JSON nested too deeply", _one_error(err))
    (tmp_path / "data" / "train.jsonl").unlink()
    (tmp_path / "data" / "train.json").write_text(deep)
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re_search(r"train.json: JSON nested too deeply", _one_error(err))
    (tmp_path / "deep.yaml").write_text("lora_target_modules: " + "[" * 5000 + "]" * 5000 + "\n")
    assert cli.main(["train", str(tmp_path / "deep.yaml")]) == 2
    assert re_search(r"deep.yaml is nested too deeply", _one_error(capsys.readouterr().err))
    rc = cli.main(["train", str(tmp_path / "r.yaml"), "--lora_target_modules", "[" * 5000 + "]" * 5000])
    assert rc == 2 and re_search(r"lora_target_modules", _one_error(capsys.readouterr().err))


def test_eval_with_a_misspelled_judge_stops_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the judge was checked")

    monkeypatch.setattr("hf_dpo.run.load_base_model", refuse)
    monkeypatch.setattr("hf_dpo.run.load_run", refuse)
    rc = cli.main(["eval", str(tmp_path), "--judge", "hf_dpo.pairs.demo_task:judgee"])
    assert rc == 2 and re_search(r"judgee.*has no attribute", _one_error(capsys.readouterr().err))


def test_lora_target_modules_that_match_no_layer_are_named_before_loading(
    train, tmp_path, capsys, no_model, tiny_model_dir
):
    rc, err = train(
        tmp_path, capsys, f"model_name_or_path: {tiny_model_dir}\nlora_target_modules: [q_proj, qkv]\n"
    )
    assert rc == 2 and re_search(r"lora_target_modules.*qkv matches no linear layer.*q_proj", _one_error(err))
    recipe = recipe_on_data(
        tmp_path, "--model_name_or_path", tiny_model_dir, "--lora_target_modules", "[q_proj, v_proj]"
    )
    preflight(recipe)  # names that exist pass


def _finished(run: Path) -> None:
    write_adapter(run, "smollm2-135m-instruct")
    (run / "run_info.json").write_text('{"global_steps": 16}')


def _saved_not_reported(run: Path) -> None:  # killed after saving the adapter, before run_info.json
    write_adapter(run, "smollm2-135m-instruct")


def _report_only(run: Path) -> None:  # the adapter deleted by hand; the report and run_info.json still there
    run.mkdir(parents=True)
    (run / "run_info.json").write_text('{"global_steps": 16}')


@pytest.mark.parametrize("leaves", [_finished, _saved_not_reported, _report_only])
def test_training_into_a_finished_run_is_refused_naming_overwrite_output_dir(
    train, tmp_path, capsys, no_model, leaves
):
    # `make demo` twice, or a second recipe with the same output_dir, replaced the run's adapter, report and card
    # without a word.
    run = tmp_path / "run"
    leaves(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, err = train(tmp_path, capsys)
    line = _one_error(err)
    assert rc == 2 and re_search(r"key 'output_dir': .*run holds a finished run \(", line), line
    assert "overwrite_output_dir: true" in line and f"--output_dir {run}-2" in line
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # not one byte changed
    with pytest.raises(AssertionError, match="the model was loaded"):  # every check passes, set
        train(tmp_path, capsys, "", "--overwrite_output_dir", "true")


def test_training_into_a_stopped_run_is_refused_unless_it_is_resumed(train, tmp_path, capsys, no_model):
    run = tmp_path / "run"
    write_adapter(run / "checkpoint-2", "smollm2-135m-instruct")
    (run / "checkpoint-2" / "trainer_state.json").write_text("{}")
    rc, err = train(tmp_path, capsys)
    line = _one_error(err)
    assert rc == 2 and re_search(r"key 'output_dir': .*run holds checkpoint-2 of a run that stopped", line), (
        line
    )
    assert "resume_from_checkpoint: true" in line and "overwrite_output_dir: true" in line
    with pytest.raises(AssertionError, match="the model was loaded"):  # a resumed run is not refused
        train(tmp_path, capsys, "resume_from_checkpoint: true\n")
    _finished(run)  # a finished run resumed from its last checkpoint (to train further): not refused either
    with pytest.raises(AssertionError, match="the model was loaded"):
        train(tmp_path, capsys, f"resume_from_checkpoint: {run / 'checkpoint-2'}\n")


def test_the_demo_recipe_may_replace_its_own_run():
    # `make demo` is re-run as the README says: its recipe sets overwrite_output_dir; the shipped GPU recipes do not
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    assert load_recipe(recipes / "demo.yaml").training.overwrite_output_dir is True
    assert load_recipe(recipes / "zephyr-7b-qlora.yaml").training.overwrite_output_dir is False


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("", ("--judge", "")),
        ("", ("--judge", " \t")),
        ('judge: ""\n', ()),
        ("judge: hf_dpo.pairs.demo_task:judge\n", ("--judge", "")),
    ],
)
def test_an_empty_judge_stops_before_the_model_loads_not_in_the_report_after_training(
    train, tmp_path, capsys, no_model, recipe, overrides
):
    rc, err = train(tmp_path, capsys, recipe, *overrides)
    line = _one_error(err)
    assert rc == 2 and re_search(r"key 'judge' is empty.*module:function.*--judge null", line)
    assert not (tmp_path / "run" / "recipe.yaml").exists()


def test_judge_null_on_the_command_line_switches_the_recipes_judge_off(
    tmp_path, write_jsonl, arithmetic_pairs
):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    recipe = recipe_on_data(tmp_path, "--judge", "hf_dpo.pairs.demo_task:judge", "--judge", "null")
    assert recipe.report.judge is None
    preflight(recipe)  # no judge, no judged comparison: nothing to refuse


def test_eval_and_sample_refuse_an_empty_judge_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the judge was checked")

    monkeypatch.setattr("hf_dpo.run.load_base_model", refuse)
    monkeypatch.setattr("hf_dpo.run.load_run", refuse)
    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)
    assert cli.main(["eval", str(tmp_path), "--judge", ""]) == 2
    assert re_search(r"--judge is empty", _one_error(capsys.readouterr().err))
    (tmp_path / "p.txt").write_text("What is 1 + 1?\n")
    rc = cli.main(
        ["sample", "recipes/demo_pairs.yaml", "--prompts_file", str(tmp_path / "p.txt"), "--judge", " "]
        + ["--output_dir", str(tmp_path / "run"), "--pairs_file", str(tmp_path / "pairs" / "train.jsonl")]
    )
    assert rc == 2 and re_search(r"key 'judge' is empty", _one_error(capsys.readouterr().err))


@pytest.mark.parametrize(
    "recipe, overrides, problem",
    [
        ("", ("--hub_revision", ""), r"key 'hub_revision' is empty: give a branch name"),
        ("hub_revision: dpo run 1\n", (), r"key 'hub_revision' 'dpo run 1' is no branch name git accepts"),
        ("", ("--hub_revision", "a..b"), r"key 'hub_revision' 'a..b' is no branch name"),
        ("", ("--hub_token", " "), r"key 'hub_token' holds whitespace"),
        ("hub_token: 'hf_abc\n\n  '\n", (), r"key 'hub_token' holds whitespace"),
    ],
)
def test_push_settings_the_push_would_refuse_after_training_are_named_before_it(
    train, tmp_path, capsys, no_model, monkeypatch, recipe, overrides, problem
):
    monkeypatch.setenv("HF_TOKEN", "hf_fine")
    rc, err = train(tmp_path, capsys, "push_to_hub: true\nhub_model_id: me/x\n" + recipe, *overrides)
    line = _one_error(err)
    assert rc == 2 and re_search(problem, line)
    assert "hf_abc" not in err  # the token is never shown


def test_push_under_hf_hub_offline_fails_before_training(train, tmp_path, capsys, no_model, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_fine")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # as huggingface_hub read it at import
    rc, err = train(tmp_path, capsys, "push_to_hub: true\nhub_model_id: me/x\n")
    assert rc == 2 and re_search(r"push_to_hub is on but HF_HUB_OFFLINE is set.*hf-dpo push", _one_error(err))


@pytest.mark.parametrize(
    "body, problem",
    [
        ("    return 'good'\n", r"returned 'good' \(str\)"),
        ("    return 1 / 0\n", r"raised ZeroDivisionError"),
        (
            "    return float('nan')\n",
            r"returned nan .*finite float.*run again \(nothing has been trained yet\)",
        ),
    ],
)
def test_a_judge_that_cannot_score_the_data_is_named_before_training_not_in_the_report(
    train, tmp_path, capsys, no_model, monkeypatch, body, problem
):
    module = f"judges_{abs(hash(body))}"  # one module per case: an imported one stays in sys.modules
    (tmp_path / f"{module}.py").write_text("def judge(prompt, completion):\n" + body)
    monkeypatch.syspath_prepend(str(tmp_path))
    rc, err = train(tmp_path, capsys, f"judge: {module}:judge\n")
    line = _one_error(err)
    assert rc == 2 and re_search(
        rf"key 'judge', tried on the first pair's prompt and chosen answer: .*{problem}", line
    )
    assert not (tmp_path / "run" / "recipe.yaml").exists()


def test_a_judge_the_report_will_not_call_is_not_tried(train, tmp_path, capsys, monkeypatch):
    # eval_num_generations: 0 skips the judged comparison: the judge is imported (check_judge), never called.
    from hf_dpo.report.checks import check_report_judge

    (tmp_path / "judges_never_called.py").write_text("def judge(prompt, completion):\n    return 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = load_recipe(
        None,
        [
            "--dataset_name",
            str(tmp_path / "data"),
            "--judge",
            "judges_never_called:judge",
            "--eval_num_generations",
            "0",
        ],
    )
    check_report_judge(recipe, {"train": ("t", [{"prompt": "p", "chosen": "a", "rejected": "b"}])})


def test_sample_names_a_min_chosen_criterion_the_judge_does_not_declare_before_the_model_loads(
    tmp_path, capsys, monkeypatch
):
    # It was found when labelling, after every prompt had been sampled.
    def refuse(*args, **kwargs):
        raise AssertionError("the reference model was loaded before min_chosen_criterion was checked")

    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)
    (tmp_path / "p.txt").write_text("What is 1 + 1?\n")
    rc = cli.main(
        ["sample", "recipes/demo_pairs.yaml", "--prompts_file", str(tmp_path / "p.txt")]
        + ["--min_chosen_criterion", "corect", "--output_dir", str(tmp_path / "run")]
        + ["--pairs_file", str(tmp_path / "pairs" / "train.jsonl")]
    )
    assert rc == 2 and re_search(
        r"min_chosen_criterion 'corect' is not one of the judge's criteria \['correct', 'concise'\]",
        _one_error(capsys.readouterr().err),
    )
