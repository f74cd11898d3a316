"""hf_dpo.model_files: a local model directory or a run's adapter that lacks a file, or holds one cut short, is named
by every command that reads it (train, plan, eval, merge, push, resume), before anything loads from it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hf_dpo import cli
from tests.run_fixtures import write_adapter


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _shards(d: Path) -> None:
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


# How a model directory is broken -> what the error says about it.
BROKEN_MODELS = {
    "empty": (lambda d: [p.unlink() for p in d.iterdir()], r"model has no config.json, .*\(it is empty\)"),
    "tokenizer only": (
        _no_config,
        r"model has no config.json, so it is no model directory \(it holds .*tokenizer",
    ),
    "config cut": (lambda d: cut(d / "config.json", 20), r"config.json is not valid JSON"),
    "config a list": (lambda d: (d / "config.json").write_text("[]"), r"config.json must hold a JSON object"),
    "no model_type": (
        lambda d: (d / "config.json").write_text('{"hidden_size": 64}'),
        r"config.json names no model_type",
    ),
    "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), r"model has no tokenizer files"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), r"model has no weights"),
    "weights cut": (lambda d: cut(d / "model.safetensors", 4000), r"model.safetensors is cut short"),
    "header cut": (lambda d: cut(d / "model.safetensors", 5), r"model.safetensors is cut short"),
    "shard missing": (_shards, r"names model-00002-of-00002.safetensors, which is missing"),
}


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.mark.parametrize("broken", list(BROKEN_MODELS))
def test_a_model_directory_lacking_what_a_model_needs_is_named_before_loading(
    broken, model_copy, tmp_path, capsys, no_model
):
    # An empty directory said "You need to have sentencepiece or tiktoken installed"; a cut weights file was found
    # only by from_pretrained, after the data had been tokenized.
    (tmp_path / "data").mkdir()
    rows = [{"prompt": f"{i} + 1?", "chosen": str(i + 1), "rejected": "?"} for i in range(4)]
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    breaks, message = BROKEN_MODELS[broken]
    breaks(model_copy)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: {model_copy}\ndataset_name: {tmp_path / 'data'}\nreport_to: none\n"
    )
    assert cli.main(["train", str(recipe), "--output_dir", str(tmp_path / "run")]) == 2
    line = one_error(capsys.readouterr().err)
    assert line.startswith("error: ") and "key 'model_name_or_path'" in line, line
    assert re.search(message, line), line
    assert "config.json, tokenizer files, weights" in line  # what a model directory holds
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("broken", ["empty", "tokenizer only"])
def test_plan_names_a_model_directory_without_config(broken, model_copy, capsys):
    # plan said the directory was "not a local directory" and quoted transformers' "Unrecognized model".
    BROKEN_MODELS[broken][0](model_copy)
    assert cli.main(["plan", "recipes/demo.yaml", "--model_name_or_path", str(model_copy)]) == 2
    line = one_error(capsys.readouterr().err)
    assert re.search(r"key 'model_name_or_path': .*model has no config.json", line), line


def test_the_loaders_name_what_a_model_directory_lacks(model_copy):
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import ModelLoadError, load_base_model, load_tokenizer

    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer of .*model has no tokenizer files"):
        load_tokenizer(ModelConfig(model_name_or_path=str(model_copy), quantization="none"))
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model has no weights"):
        load_base_model(ModelConfig(model_name_or_path=str(model_copy), quantization="none"))


# ---------------------------------------------------------------- run dirs


@pytest.fixture
def run_dir(tiny_model_dir, tmp_path) -> Path:
    """A run dir as `hf-dpo train` leaves it, as far as eval, merge and push read it before loading a model."""
    run = write_adapter(tmp_path / "run", tiny_model_dir)
    (run / "recipe.yaml").write_text(f"model_name_or_path: {tiny_model_dir}\nquantization: none\n")
    return run


BROKEN_RUNS = {
    "no weights": (lambda d: (d / "adapter_model.safetensors").unlink(), r"run has no adapter"),
    "header cut": (
        lambda d: cut(d / "adapter_model.safetensors", 5),
        r"adapter_model.safetensors is cut short",
    ),
    "tensors cut": (
        lambda d: cut(d / "adapter_model.safetensors", 300),
        r"adapter_model.safetensors is cut short",
    ),
    "not safetensors": (
        lambda d: (d / "adapter_model.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 64),
        r"adapter_model.safetensors is cut short or no safetensors file",
    ),
    "header garbage": (
        lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x04\0\0\0\0\0\0\0{{{{rest"),
        r"adapter_model.safetensors is damaged",
    ),
    "config cut": (lambda d: cut(d / "adapter_config.json", 12), r"adapter_config.json is not valid JSON"),
    "config a list": (
        lambda d: (d / "adapter_config.json").write_text("[1]"),
        r"adapter_config.json must hold a JSON object",
    ),
    "config no peft_type": (
        lambda d: (d / "adapter_config.json").write_text('{"r": 4}'),
        r"adapter_config.json names no peft_type",
    ),
}


@pytest.mark.parametrize("command", ["eval", "merge", "push"])
@pytest.mark.parametrize("broken", list(BROKEN_RUNS))
def test_a_run_dir_with_a_broken_adapter_is_named_by_every_command_that_reads_it(
    command, broken, run_dir, tmp_path, capsys, monkeypatch
):
    # eval and merge died with HFValidationError (the path taken for a Hub id), SafetensorError or JSONDecodeError
    # tracebacks, after the base model had loaded; push uploaded the broken file.
    def refuse(*args, **kwargs):
        raise AssertionError("a model or the network was reached before the run dir was checked")

    for loader in ("hf_dpo.run.load_base_model", "hf_dpo.run.load_tokenizer", "hf_dpo.hub.push.hf_api"):
        monkeypatch.setattr(loader, refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    breaks, message = BROKEN_RUNS[broken]
    breaks(run_dir)
    argv = {
        "eval": ["eval", str(run_dir), "--num-generations", "0"],
        "merge": ["merge", str(run_dir), str(tmp_path / "merged")],
        "push": ["push", str(run_dir), "--repo-id", "me/x"],
    }[command]
    assert cli.main(argv) == 2
    line = one_error(capsys.readouterr().err)
    assert re.search(message, line), line
    assert "Copy the run dir again" in line or "push a finished `hf-dpo train` run" in line, line


def test_a_run_whose_base_model_directory_was_emptied_is_named_by_eval_and_merge(
    run_dir, model_copy, tmp_path, capsys
):
    (run_dir / "recipe.yaml").write_text(f"model_name_or_path: {model_copy}\nquantization: none\n")
    (model_copy / "model.safetensors").unlink()
    assert cli.main(["eval", str(run_dir), "--num-generations", "0"]) == 2
    assert re.search(
        r"recipe.yaml: model_name_or_path: .*model has no weights", one_error(capsys.readouterr().err)
    )
    assert cli.main(["merge", str(run_dir), str(tmp_path / "merged")]) == 2
    assert re.search(r"base model of .*run: .*model has no weights", one_error(capsys.readouterr().err))


def test_resume_names_a_checkpoint_whose_adapter_is_cut_and_true_skips_it(run_dir, tmp_path, caplog):
    from hf_dpo.config import RecipeError
    from hf_dpo.train.setup import check_resume
    from tests.run_fixtures import dpo_args

    out = tmp_path / "out"
    for step in (2, 4):
        shutil.copytree(run_dir, out / f"checkpoint-{step}")
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    cut(out / "checkpoint-4" / "adapter_model.safetensors", 300)
    args = dpo_args(tmp_path, output_dir=str(out), resume_from_checkpoint=str(out / "checkpoint-4"))
    with pytest.raises(
        RecipeError, match=r"resume_from_checkpoint': .*checkpoint-4/adapter_model.safetensors is cut"
    ):
        check_resume(args)
    args.resume_from_checkpoint = "true"
    check_resume(args)  # the last whole checkpoint, the cut one named in the log
    assert args.resume_from_checkpoint == str(out / "checkpoint-2")
    assert "checkpoint-4 was cut short" in caplog.text


def test_resume_takes_a_full_finetunes_checkpoint_and_names_one_whose_model_is_cut(
    tiny_model_dir, tmp_path, caplog
):
    """A use_peft: false checkpoint holds the whole model (config.json, model.safetensors), no adapter."""
    from hf_dpo.config import RecipeError
    from hf_dpo.train.setup import check_resume
    from tests.run_fixtures import dpo_args

    out = tmp_path / "out"
    for step in (2, 4):
        shutil.copytree(tiny_model_dir, out / f"checkpoint-{step}")
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    args = dpo_args(tmp_path, output_dir=str(out), resume_from_checkpoint=str(out / "checkpoint-4"))
    check_resume(args)  # whole: taken as it is
    cut(out / "checkpoint-4" / "model.safetensors", 300)
    with pytest.raises(
        RecipeError, match=r"resume_from_checkpoint': .*checkpoint-4/model.safetensors is cut"
    ):
        check_resume(args)
    args.resume_from_checkpoint = "true"
    check_resume(args)
    assert args.resume_from_checkpoint == str(out / "checkpoint-2")
    assert "checkpoint-4 was cut short" in caplog.text
