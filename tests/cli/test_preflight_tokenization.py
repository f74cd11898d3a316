"""Preflight runs every row through the chat template and the tokenizer, and checks the length keys, before any
model weight loads: a row the template refuses, or a split that truncation would empty, ends in one `error:` line
naming the file, row, column or key — not a jinja traceback after the model (and the reference pass) started."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.config import DataConfig, RecipeError, load_recipe
from hf_dpo.data import DataError, prepare_rows
from hf_dpo.preflight import preflight
from tests.run_fixtures import recipe_on_data

# A template of the kind many chat models ship: turns must go user, assistant, user, ...; no system turn.
STRICT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _save_tokenizer(smollm_dir: str, out: Path, template: str | None) -> str:
    """A model dir of SmolLM2 (its config.json, its weights linked, not copied) whose tokenizer has `template` as
    its chat template: a whole model dir, so the preflight's model-dir check passes and the template is what the
    tests meet."""
    from transformers import AutoTokenizer

    source = Path(smollm_dir)
    shutil.copy(source / "config.json", out / "config.json")
    for weights in source.glob("*.safetensors*"):
        (out / weights.name).symlink_to(weights)
    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def strict_dir(smollm_dir, tmp_path_factory) -> str:
    return _save_tokenizer(smollm_dir, tmp_path_factory.mktemp("strict-template"), STRICT_TEMPLATE)


@pytest.fixture(scope="module")
def no_template_dir(smollm_dir, tmp_path_factory) -> str:
    return _save_tokenizer(smollm_dir, tmp_path_factory.mktemp("no-template"), None)


def _messages(*roles: str) -> list[dict]:
    return [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]


@pytest.fixture
def train_on_rows(write_jsonl, arithmetic_pairs):
    """train_on_rows(tmp_path, capsys, train_rows, *overrides, test_rows=None) -> (exit code, the one error line or
    None, the run dir) of `hf-dpo train` on these rows in-process."""

    def train(tmp_path: Path, capsys, train_rows: list, *overrides: str, test_rows: list | None = None):
        write_jsonl(tmp_path / "data" / "train.jsonl", train_rows)
        write_jsonl(
            tmp_path / "data" / "test.jsonl", test_rows if test_rows is not None else arithmetic_pairs(2)
        )
        run = tmp_path / "new" / "run"
        argv = [
            "train",
            "--dataset_name",
            str(tmp_path / "data"),
            "--output_dir",
            str(run),
            "--report_to",
            "none",
        ]
        rc = cli.main([*argv, *overrides])
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == (1 if rc else 0), err
        return rc, (lines[0] if lines else None), run

    return train


# ---------------------------------------------------------------- the chat template


def test_a_turn_order_the_template_refuses_is_named_before_the_model_loads(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model, strict_dir
):
    bad = {"prompt": _messages("user", "user"), "chosen": "yes", "rejected": "no"}
    rc, line, run = train_on_rows(
        tmp_path, capsys, [*arithmetic_pairs(3), bad], "--model_name_or_path", strict_dir
    )
    assert rc == 2
    assert re.search(
        r"train.jsonl, row 3, column 'prompt': the tokenizer's chat template rejects it", line
    ), line
    assert "Conversation roles must alternate" in line and "on_bad_rows: skip" in line
    assert not (tmp_path / "new").exists()  # the run dir the check probed was removed again


def test_the_column_named_is_the_one_the_template_failed_on(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model, strict_dir
):
    bad = {"prompt": "q", "chosen": _messages("assistant", "assistant"), "rejected": _messages("assistant")}
    rc, line, _ = train_on_rows(
        tmp_path, capsys, [*arithmetic_pairs(2), bad], "--model_name_or_path", strict_dir
    )
    assert rc == 2 and "row 2, column 'chosen'" in line, line


def test_row_numbers_are_the_files_even_when_a_held_out_share_and_a_subset_are_drawn(
    arithmetic_pairs, write_jsonl, tmp_path, strict_dir
):
    rows = arithmetic_pairs(12)
    rows[10] = {"prompt": _messages("assistant"), "chosen": "yes", "rejected": "no"}
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    # Seed 42 holds out rows 1, 6, 8 (eval_fraction 0.25), or leaves out row 9 (max_train_samples 11): either
    # way the bad row is the 8th or 10th row the pipeline sees, and the error still names the file's row 10.
    for extra in ([], ["--eval_fraction", "0.25"], ["--max_train_samples", "11", "--eval_fraction", "0"]):
        recipe = recipe_on_data(
            tmp_path, "--model_name_or_path", strict_dir, "--dataset_test_split", "null", *extra
        )
        with pytest.raises(DataError, match=r"train.jsonl, row 10, column 'prompt'"):
            preflight(recipe)


def test_a_system_prompt_the_template_refuses_says_where_the_system_turn_comes_from(
    arithmetic_pairs, write_jsonl, tmp_path, strict_dir
):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(3))
    recipe = recipe_on_data(tmp_path, "--model_name_or_path", strict_dir, "--system_prompt", "Be brief.")
    with pytest.raises(DataError, match=r"row 0, column 'prompt'.*system_prompt adds a system turn"):
        preflight(recipe)


def test_with_on_bad_rows_skip_a_refused_row_is_dropped_and_counted(
    arithmetic_pairs, write_jsonl, tmp_path, strict_dir
):
    bad = {"prompt": _messages("user", "user"), "chosen": "yes", "rejected": "no"}
    write_jsonl(tmp_path / "data" / "train.jsonl", [*arithmetic_pairs(3), bad])
    write_jsonl(tmp_path / "data" / "test.jsonl", arithmetic_pairs(2))
    data = preflight(recipe_on_data(tmp_path, "--model_name_or_path", strict_dir, "--on_bad_rows", "skip"))
    assert len(data.train) == 3
    assert data.report["train"]["skipped"] == {"rejected by the chat template": 1}


def test_conversational_rows_without_a_chat_template_name_the_row(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model, no_template_dir
):
    rows = [*arithmetic_pairs(2), {"prompt": _messages("user"), "chosen": "yes", "rejected": "no"}]
    rc, line, _ = train_on_rows(tmp_path, capsys, rows, "--model_name_or_path", no_template_dir)
    assert rc == 2 and re.search(
        r"train.jsonl, row 2: conversational rows .*need a tokenizer with a chat", line
    )


def test_a_tokenizer_that_cannot_be_loaded_names_the_key(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model
):
    (tmp_path / "empty-model").mkdir()
    rc, line, _ = train_on_rows(
        tmp_path, capsys, arithmetic_pairs(3), "--model_name_or_path", str(tmp_path / "empty-model")
    )
    assert rc == 2 and line.startswith("error: key 'model_name_or_path':"), line


def test_prepare_rows_turns_a_template_exception_into_a_row_error(arithmetic_pairs, strict_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(strict_dir)
    rows = [*arithmetic_pairs(2), {"prompt": _messages("user", "assistant"), "chosen": "a", "rejected": "b"}]
    with pytest.raises(DataError, match=r"pairs.jsonl, row 2, column 'chosen': .*TemplateError.*alternate"):
        prepare_rows(rows, "pairs.jsonl", tokenizer, DataConfig(), 512, None)


# ---------------------------------------------------------------- lengths


@pytest.mark.parametrize("prompt_length", ["64", "100"])
def test_max_prompt_length_not_below_max_length_is_refused_naming_both_keys(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model, prompt_length
):
    rc, line, _ = train_on_rows(
        tmp_path, capsys, arithmetic_pairs(3), "--max_length", "64", "--max_prompt_length", prompt_length
    )
    assert rc == 2
    assert f"key 'max_prompt_length': must be below max_length (64), got {prompt_length}" in line, line
    assert "Lower max_prompt_length (e.g. 32) or raise max_length" in line


def test_max_prompt_length_just_below_max_length_is_accepted():
    assert (
        load_recipe(None, ["--max_length", "64", "--max_prompt_length", "63"]).training.max_prompt_length
        == 63
    )
    with pytest.raises(RecipeError, match="Raise max_length"):  # no max_prompt_length fits under 1
        load_recipe(None, ["--max_length", "1", "--max_prompt_length", "1"])


def test_every_train_pair_dropped_for_length_is_an_error_naming_the_keys(
    train_on_rows, tmp_path, capsys, no_model
):
    rows = [{"prompt": "word " * 100, "chosen": "a", "rejected": "b"}] * 4
    rc, line, _ = train_on_rows(tmp_path, capsys, rows, "--max_length", "32")
    assert rc == 2
    assert re.search(r"train.jsonl: there are no usable pairs left .*prompt longer than max_length", line), (
        line
    )
    assert "raise max_length, or set max_prompt_length below it (e.g. 16)" in line
    assert not (tmp_path / "new").exists()


def test_a_held_out_split_emptied_by_length_names_the_keys_not_missing_pairs(
    arithmetic_pairs, train_on_rows, tmp_path, capsys, no_model
):
    long_rows = [{"prompt": "word " * 100, "chosen": "a", "rejected": "b"}] * 2
    rc, line, _ = train_on_rows(
        tmp_path, capsys, arithmetic_pairs(4), "--max_length", "64", test_rows=long_rows
    )
    assert rc == 2
    assert re.search(r"test.jsonl: the held-out split has no usable pairs left .*raise max_length", line), (
        line
    )


def test_pairs_identical_once_cut_name_the_keys_too(train_on_rows, tmp_path, capsys, no_model):
    rows = [{"prompt": "q", "chosen": "same start " * 20 + "yes", "rejected": "same start " * 20 + "no"}] * 3
    rc, line, _ = train_on_rows(tmp_path, capsys, rows, "--max_length", "24", "--max_prompt_length", "8")
    assert rc == 2 and "identical once cut to fit (max_length 24, max_prompt_length 8)" in line, line


def test_some_pairs_dropped_for_length_is_a_warning_naming_the_keys(
    arithmetic_pairs, write_jsonl, tmp_path, caplog
):
    rows = [*arithmetic_pairs(3), {"prompt": "word " * 100, "chosen": "a", "rejected": "b"}]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "test.jsonl", arithmetic_pairs(2))
    with caplog.at_level(logging.WARNING):
        data = preflight(recipe_on_data(tmp_path, "--max_length", "64"))
    assert len(data.train) == 3
    assert re.search(
        r"train.jsonl: 1 of 4 pairs dropped for length; prompts over max_length \(64\)", caplog.text
    )


def test_a_judged_prompt_the_template_refuses_is_named_before_training_not_in_the_report(
    arithmetic_pairs, train_on_rows, write_jsonl, tmp_path, capsys, no_model, strict_dir
):
    # The report templates test_prompts_file's prompts after training: a jinja error there lost the report.
    prompts = write_jsonl(
        tmp_path / "judged.jsonl", [{"prompt": "What is 1 + 1?"}, {"prompt": _messages("user", "user")}]
    )
    rc, line, run = train_on_rows(
        tmp_path,
        capsys,
        arithmetic_pairs(4),
        *("--model_name_or_path", strict_dir, "--judge", "hf_dpo.pairs.demo_task:judge"),
        *("--test_prompts_file", str(prompts)),
    )
    assert rc == 2 and re.search(
        r"key 'test_prompts_file'.*judged.jsonl, prompt 1: the tokenizer's chat template rejects it", line
    ), line
    assert "Conversation roles must alternate" in line and not run.exists()
    # Only the prompts the report judges: the first eval_num_generations.
    recipe = recipe_on_data(
        tmp_path,
        *("--model_name_or_path", strict_dir, "--test_prompts_file", str(prompts)),
        *("--judge", "hf_dpo.pairs.demo_task:judge", "--eval_num_generations", "1"),
    )
    preflight(recipe)


def test_sample_names_a_prompt_the_template_refuses_before_the_model_loads(
    write_jsonl, tmp_path, capsys, monkeypatch, strict_dir
):
    def refuse(*args, **kwargs):
        raise AssertionError("the reference model was loaded before the prompts were templated")

    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi"}, {"prompt": _messages("system", "user")}])
    rc = cli.main(
        [
            "sample",
            "recipes/demo_pairs.yaml",
            "--prompts_file",
            str(prompts),
            "--model_name_or_path",
            strict_dir,
        ]
        + ["--output_dir", str(tmp_path / "run"), "--pairs_file", str(tmp_path / "pairs" / "train.jsonl")]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert re.search(
        r"error: key 'prompts_file': .*p.jsonl, prompt 1: the tokenizer's chat template rejects it", err
    )
