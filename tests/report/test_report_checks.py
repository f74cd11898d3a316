"""hf_dpo/report/checks.py: what the report will need (its prompt file, read by the recipe's prompt column, CSV
cells as text; its judge) is checked before training, and `hf-dpo eval` checks its prompt file before the model
loads."""

from __future__ import annotations

import json
import re

import pytest

from hf_dpo import cli
from tests.run_fixtures import write_adapter


@pytest.mark.parametrize("content", [None, "{not json\n", ""])
def test_the_reports_prompt_file_is_read_before_training_not_after(
    one_error, train, tmp_path, capsys, no_model, content
):
    # The report reads test_prompts_file to judge policy and reference on; a missing, broken or empty one failed
    # only then, after the whole training run (and before the card and the push).
    prompts = tmp_path / "prompts_test.jsonl"
    if content is not None:
        prompts.write_text(content)
    recipe = f"judge: hf_dpo.pairs.demo_task:judge\ntest_prompts_file: {prompts}\n"
    rc, err = train(tmp_path, capsys, recipe)
    assert rc == 2
    line = one_error(err)
    assert "prompts_test.jsonl" in line and "test_prompts_file" in line, line
    # no judge, or no generations: the report never reads the file, and neither does the preflight
    with pytest.raises(AssertionError, match="the model was loaded"):
        train(tmp_path, capsys, recipe + "eval_num_generations: 0\n")


def test_a_reward_model_judge_that_cannot_be_loaded_is_named_before_training(
    one_error, train, tmp_path, capsys, no_model
):
    # `judge: rm:<dir>` was only checked to exist: a directory that holds no model (a run dir, a download cut
    # short) failed when the report loaded the judge, after the whole training run.
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "README.md").write_text("a reward model, soon")
    rc, err = train(tmp_path, capsys, f"judge: rm:{tmp_path / 'rm'}\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(rf"judge 'rm:{tmp_path / 'rm'}': cannot be loaded", line), line


def test_eval_names_a_prompt_file_that_moved_before_the_model_loads(one_error, tmp_path, capsys, monkeypatch):
    # A run's recipe.yaml names its test_prompts_file as given (often relative: recipes/data/...): evaluated from
    # another directory or machine, the file was missed only after the model had loaded and the held-out pairs
    # were scored.
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompt file was checked")

    monkeypatch.setattr("hf_dpo.run.load_base_model", refuse)
    monkeypatch.setattr("hf_dpo.run.load_tokenizer", refuse)
    run = write_adapter(tmp_path / "run", "smollm2-135m-instruct")
    recipe = "judge: hf_dpo.pairs.demo_task:judge\ntest_prompts_file: moved/prompts_test.txt\n"
    (run / "recipe.yaml").write_text(f"dataset_name: {tmp_path / 'data'}\n{recipe}")
    rc = cli.main(["eval", str(run)])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and re.search(r"key 'test_prompts_file'.*moved/prompts_test.txt does not exist", line), (
        line
    )


@pytest.mark.parametrize(
    "config, problem",
    [
        (
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
            r"is not a reward model.*LlamaForCausalLM",
        ),
        (
            {"model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "num_labels": 3},
            r"has 3 outputs",
        ),
    ],
)
def test_a_judge_that_is_no_reward_model_is_named_before_training(
    one_error, train, tmp_path, capsys, no_model, config, problem
):
    # A causal LM (the policy's own base, say) given as rm: was refused only when the report loaded the judge,
    # after the whole training run.
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    rc, err = train(tmp_path, capsys, f"judge: rm:{tmp_path / 'rm'}\n")
    assert rc == 2 and re.search(problem, one_error(err))


def test_a_csv_prompts_file_is_read_as_the_text_of_its_cells(tmp_path):
    """Before: pandas' type guessing read the prompt NA as missing ('row 0: ... got None') and 1234 as a
    number; a prompts file's cells are text, as a data file's are."""
    from hf_dpo.pairs.formats import read_prompts

    path = tmp_path / "prompts.csv"
    path.write_text("prompt\nNA\n1234\nWhat is 1.50 + 1?\n")
    assert read_prompts(path) == ["NA", "1234", "What is 1.50 + 1?"]
    (tmp_path / "header.csv").write_text("prompt\n")
    with pytest.raises(Exception, match="header.csv"):
        read_prompts(tmp_path / "header.csv")


def test_the_reports_prompt_file_is_read_by_the_recipes_prompt_column(write_jsonl, tmp_path, smollm_dir):
    """Before: the report (and the preflight check of it) read test_prompts_file's 'prompt' column whatever
    prompt_column said, while hf-dpo sample read the recipe's column: a file with a 'question' column was
    refused with 'no 'prompt' column (set prompt_column)', prompt_column being set."""
    from transformers import AutoTokenizer

    from hf_dpo.config import DataConfig
    from hf_dpo.report.checks import check_judged_prompts
    from hf_dpo.report.prompts import prompts_from_file

    path = write_jsonl(tmp_path / "test_prompts.jsonl", [{"question": "What is 2 + 2?"}, {"question": "Hi?"}])
    check_judged_prompts(str(path), "hf_dpo.pairs.demo_task:judge", 2, prompt_column="question")
    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    prompts = prompts_from_file(str(path), tokenizer, DataConfig(prompt_column="question"), 10)
    assert [text for text, _ in prompts] == ["What is 2 + 2?", "Hi?"]
