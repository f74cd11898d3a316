"""Recipes as people write them: YAML's own readings (dates, octal, base 60, exponents, empty lists, a key given
twice), values of the wrong kind, keys whose help says what they do, and a recipe.yaml that reads back as it ran.
A wrong value ends in one `error:` line naming the file and key, before any model loads."""

from __future__ import annotations

import re

import pytest

from hf_dpo import cli


def test_loss_weights_written_as_yaml_reads_them_are_numbers(load_recipe_text, tmp_path):
    # YAML 1.1 reads 1e-1 (no dot) as a string: it reached the loss as '1e-1' and failed in the first training
    # step, after the model had loaded.
    recipe = load_recipe_text(tmp_path, "loss_type: [sigmoid, sft]\nloss_weights: [1, 1e-1]\n")
    assert recipe.training.loss_weights == [1.0, 0.1]
    assert all(type(w) is float for w in recipe.training.loss_weights)


@pytest.mark.parametrize(
    "weights, problem",
    [("[1, .nan]", r"finite"), ("[1, true]", r"true"), ("[1, heavy]", r"'heavy'"), ("[1, [2]]", r"\[2\]")],
)
def test_loss_weights_that_are_no_numbers_are_named(load_recipe_text, tmp_path, weights, problem):
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key 'loss_weights': .*{problem}"):
        load_recipe_text(tmp_path, f"loss_type: [sigmoid, sft]\nloss_weights: {weights}\n")


@pytest.mark.parametrize("key", ["lora_target_modules", "loss_type"])
def test_a_list_key_left_empty_in_yaml_is_named(one_error, train, tmp_path, capsys, no_model, key):
    # `key:` with nothing after it is null in YAML. lora_target_modules: null passed the value checks and ended
    # in a TypeError traceback in the preflight; loss_type: null in "TypeError: 'NoneType' object is not
    # iterable" naming no key.
    rc, err = train(tmp_path, capsys, f"{key}:\n")
    assert rc == 2
    assert re.search(rf"key '{key}': needs a value \(it is not optional; default: \['", one_error(err))


@pytest.mark.parametrize(
    "value, problem",
    [
        ("eight", r"'eight' is not a whole number"),
        ("-8", r"must be >= 1, got -8"),
        ("0", r"must be >= 1, got 0"),
    ],
)
def test_pad_to_multiple_of_that_is_no_positive_whole_number_is_named(
    load_recipe_text, tmp_path, value, problem
):
    # Before: "invalid value in section DPOConfig: ValueError: invalid literal for int() with base 10: 'eight'"
    # (no key), and -8 was taken: rows padded to fewer tokens than the longest, a shape error at the first step.
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key 'pad_to_multiple_of': {problem}.*auto"):
        load_recipe_text(tmp_path, f"pad_to_multiple_of: {value}\n")
    with pytest.raises(RecipeError, match=rf"key 'pad_to_multiple_of': {problem}"):
        load_recipe_text(tmp_path, "", "--pad_to_multiple_of", value)


def test_pad_to_multiple_of_keeps_its_valid_forms(load_recipe_text, tmp_path):
    assert load_recipe_text(tmp_path, "pad_to_multiple_of: 8\n").training.pad_to_multiple_of == 8
    assert load_recipe_text(tmp_path, "", "--pad_to_multiple_of", "16").training.pad_to_multiple_of == 16
    for text in ("auto", "null", "none"):
        assert load_recipe_text(tmp_path, f"pad_to_multiple_of: {text}\n").training.pad_to_multiple_of is None


def test_precompute_ref_log_probs_that_is_no_choice_says_what_it_may_be(load_recipe_text, tmp_path):
    # Before: "key 'precompute_ref_log_probs': invalid <lambda> value: 'maybe'."
    from hf_dpo.config import RecipeError

    expected = r"key 'precompute_ref_log_probs': expected true, false or auto, got 'maybe'"
    with pytest.raises(RecipeError, match=rf"r.yaml: {expected}"):
        load_recipe_text(tmp_path, "precompute_ref_log_probs: maybe\n")
    with pytest.raises(RecipeError, match=rf"command line: {expected}"):
        load_recipe_text(tmp_path, "", "--precompute_ref_log_probs", "maybe")
    assert (
        load_recipe_text(tmp_path, "", "--precompute_ref_log_probs", "auto").training.precompute_ref_log_probs
        == "auto"
    )
    assert (
        load_recipe_text(tmp_path, "precompute_ref_log_probs: no\n").training.precompute_ref_log_probs
        is False
    )


def test_yaml_dates_are_text_for_the_keys_that_take_text(load_recipe_text, tmp_path):
    # YAML 1.1 reads a bare 2024-06-01 as a date: output_dir failed as "TypeError: expected str, bytes or
    # os.PathLike object, not date" naming no key; run_name, dataset_name or hub_model_id kept a date object
    # (dataset_name then a TypeError traceback in the preflight).
    recipe = load_recipe_text(
        tmp_path, "output_dir: 2024-06-01\nrun_name: 2024-06-01\ndataset_name: 2024-06-01\n"
    )
    assert recipe.training.output_dir == "2024-06-01"
    assert recipe.training.run_name == "2024-06-01" and recipe.data.dataset_name == "2024-06-01"


def test_yaml_1_1_octal_and_base_60_numbers_are_not_misread(load_recipe_text, tmp_path):
    # YAML 1.1 read seed: 010 as 8 (octal) and max_steps: 1:30 as 90 (base 60), silently.
    from hf_dpo.config import RecipeError

    assert load_recipe_text(tmp_path, "seed: 010\n").training.seed == 10
    with pytest.raises(RecipeError, match=r"key 'max_steps': expected a whole number, got '1:30'"):
        load_recipe_text(tmp_path, "max_steps: 1:30\n")
    recipe = load_recipe_text(tmp_path, "seed: 0x2A\nmax_steps: -1\nlora_r: 1_6\nlearning_rate: 1e-5\n")
    assert (recipe.training.seed, recipe.training.max_steps, recipe.model.lora_r) == (42, -1, 16)
    assert recipe.training.learning_rate == 1e-5


@pytest.mark.parametrize("recipe, overrides", [("report_to: null\n", ()), ("", ("--report_to", "null"))])
def test_report_to_null_means_no_integration(load_recipe_text, tmp_path, recipe, overrides):
    # Before: [None], which the preflight refused as "'None' is not a reporting integration (... or none)".
    from hf_dpo.train.setup import check_report_to

    args = load_recipe_text(tmp_path, recipe, *overrides).training
    assert args.report_to == []
    check_report_to(args)


@pytest.mark.parametrize("key", ["lr_scheduler_kwargs", "gradient_checkpointing_kwargs", "model_init_kwargs"])
def test_a_kwargs_key_given_text_that_is_no_mapping_is_named(load_recipe_text, tmp_path, key):
    # `lr_scheduler_kwargs: min_lr=0` was kept as the text 'min_lr=0' and spread as keyword arguments when the
    # scheduler (or the model) was built, after the model had loaded: a TypeError traceback. model_init_kwargs
    # failed as "JSONDecodeError: Expecting value" naming no key.
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key '{key}': 'min_lr=0' is not a mapping.*{{min_lr: 0}}"):
        load_recipe_text(tmp_path, f"{key}: min_lr=0\n")
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': 'min_lr=0' is not a mapping"):
        load_recipe_text(tmp_path, "", f"--{key}", "min_lr=0")
    # a mapping, in YAML or as JSON text, is what the key takes
    assert getattr(load_recipe_text(tmp_path, f"{key}: {{min_lr: 0}}\n").training, key) == {"min_lr": 0}
    assert getattr(load_recipe_text(tmp_path, "", f"--{key}", '{"min_lr": 0}').training, key) == {"min_lr": 0}


def test_exponent_numbers_inside_mappings_are_numbers(load_recipe_text, tmp_path):
    # YAML 1.1 reads 1e-6 (no dot) and 1.0e6 (no exponent sign) as text. At the top level the command-line parser
    # converts them; inside a mapping (lr_scheduler_kwargs: {min_lr: 1e-6}) the text reached the scheduler, a
    # TypeError once training started.
    recipe = load_recipe_text(
        tmp_path, "lr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr: 1e-6, x: 1.0e6}\n"
    )
    assert recipe.training.lr_scheduler_kwargs == {"min_lr": 1e-6, "x": 1e6}
    recipe = load_recipe_text(tmp_path, "", "--lr_scheduler_kwargs", "{min_lr: 1e-6}")
    assert recipe.training.lr_scheduler_kwargs == {"min_lr": 1e-6}
    # what was a number stays one, and text stays text
    recipe = load_recipe_text(tmp_path, "learning_rate: 5.0e-7\nbeta: .5\nmax_steps: 10\nrun_name: v1.2.3\n")
    assert (recipe.training.learning_rate, recipe.training.beta, recipe.training.max_steps) == (5e-7, 0.5, 10)
    assert type(recipe.training.max_steps) is int and recipe.training.run_name == "v1.2.3"


@pytest.mark.parametrize(
    "key, value, kind",
    [
        ("lr_scheduler_type", "cosinee", "SchedulerType"),
        ("logging_strategy", "sometimes", "IntervalStrategy"),
    ],
)
def test_a_training_argument_transformers_refuses_names_its_key(load_recipe_text, tmp_path, key, value, kind):
    # Before: "invalid value in section DPOConfig: ValueError: cosinee is not a valid SchedulerType, ..."
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=rf"r.yaml: key '{key}': {value} is not a valid {kind}, please select"
    ):
        load_recipe_text(tmp_path, f"{key}: {value}\n")
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': invalid choice: '{value}'"):
        load_recipe_text(
            tmp_path, "", f"--{key}", value
        )  # argparse knows the choices there (and named the key already)


def test_a_recipe_given_as_an_option_says_where_it_goes(
    arithmetic_pairs, one_error, write_jsonl, tmp_path, capsys
):
    # `hf-dpo bench --recipe R` exists; `hf-dpo train --recipe R` read "unknown key 'recipe'" and no more.
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    (tmp_path / "r.yaml").write_text(f"dataset_name: {tmp_path / 'data'}\n")
    rc = cli.main(["train", "--recipe", str(tmp_path / "r.yaml")])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and "unknown key 'recipe'" in line and "hf-dpo train RECIPE" in line, line


def test_max_eval_samples_is_described_as_what_it_does(tmp_path):
    # Its help said "the first N held-out pairs"; the pairs are drawn at random (seeded), in file order.
    import dataclasses

    from hf_dpo.config import DataConfig
    from hf_dpo.data import _seeded_subset

    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(DataConfig)}["max_eval_samples"]
    drawn = _seeded_subset(list(range(50)), 5, seed=42)
    assert drawn != list(range(5))  # not the first five: the help must not say so
    assert "first" not in help_text and "random" in help_text and "seed" in help_text


def test_the_saved_recipe_reads_back_as_it_ran(load_recipe_text, tmp_path):
    # recipe.yaml is re-runnable as it is: text that the recipe reader takes for a number (1e5, read as YAML 1.2
    # reads it) must be written quoted, or a re-run gets run_name 100000.0.
    from hf_dpo.config import load_recipe

    recipe = load_recipe_text(tmp_path, "run_name: '1e5'\nhub_model_id: '2024-06-01'\nlearning_rate: 1e-5\n")
    assert recipe.training.run_name == "1e5"
    (tmp_path / "again.yaml").write_text(recipe.to_yaml())
    again = load_recipe(tmp_path / "again.yaml")
    assert again.training.run_name == "1e5" and again.training.hub_model_id == "2024-06-01"
    assert again.training.learning_rate == 1e-5


def test_bf16_on_a_machine_without_it_names_the_key(load_recipe_text, tmp_path, monkeypatch):
    # An alignment-handbook recipe (bf16: true) on a CPU machine: "invalid value in section DPOConfig: ValueError:
    # Your setup doesn't support bf16/gpu. You need to assign use_cpu ...", no key, and advice that trains in bf16
    # autocast on the CPU (many times slower there than float32).
    import transformers.training_args

    from hf_dpo.config import RecipeError

    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: False)
    with pytest.raises(RecipeError, match=r"r.yaml: key 'bf16': .*bf16: false.*torch_dtype"):
        load_recipe_text(tmp_path, "bf16: true\n")


def test_max_prompt_length_without_max_length_is_refused_not_ignored(
    one_error, train, tmp_path, capsys, no_model
):
    """Before: with max_length: null no pair is truncated, so max_prompt_length cut nothing, silently."""
    rc, err = train(tmp_path, capsys, "max_length: null\nmax_prompt_length: 64\n")
    message = one_error(err)
    assert rc == 2 and "key 'max_prompt_length'" in message and "max_length: null" in message, message


@pytest.mark.parametrize("split", ["\r", "val\nid"])
def test_a_split_name_with_a_line_break_is_shown_escaped_beside_its_key(
    one_error, train, tmp_path, capsys, no_model, split
):
    """Found by test_properties: `--dataset_test_split $'\\r'` printed the name raw, so the error line broke
    before it named the key; the name is shown escaped and the key beside it."""
    rc, err = train(tmp_path, capsys, "", "--dataset_test_split", split)
    line = one_error(err)
    assert rc == 2 and "dataset_test_split" in line and repr(split) in line, line


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


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("eval_num_generations", "1e3", 1000),
        ("eval_max_new_tokens", "1.0e+3", 1000),
        ("max_steps", "2e1", 20),
        ("max_length", "1E3", 1000),
    ],
)
def test_an_int_key_written_as_an_exponent_reads_alike_in_the_recipe_and_on_the_command_line(
    load_recipe_text, tmp_path, key, text, expected
):
    # The recipe read `eval_num_generations: 1e3` as 1000 while `--eval_num_generations 1e3` was refused.
    from_yaml = load_recipe_text(tmp_path, f"{key}: {text}\n")
    from_cli = load_recipe_text(tmp_path, "", f"--{key}", text)
    for recipe in (from_yaml, from_cli):
        value = vars(recipe.report) | vars(recipe.training)
        assert value[key] == expected and type(value[key]) is int


@pytest.mark.parametrize(
    "text, problem",
    [
        ("1.5", "expected a whole number, got 1.5"),
        ("1e30", "1e\\+30 is a float past 2\\^53"),
        ("inf", "expected a whole number, got 'inf'"),
    ],
)
def test_an_int_key_refuses_a_fraction_or_a_huge_float_alike_in_the_recipe_and_on_the_command_line(
    load_recipe_text, tmp_path, text, problem
):
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"command line: key 'max_steps': {problem}"):
        load_recipe_text(tmp_path, "", "--max_steps", text)
    if text != "inf":  # YAML reads .inf, not inf: a string, refused as no number
        with pytest.raises(RecipeError, match=rf"r.yaml: key 'max_steps': {problem}"):
            load_recipe_text(tmp_path, f"max_steps: {text}\n")


@pytest.mark.parametrize(
    "key", ["adapter_name_or_path", "ref_model_name_or_path", "model_revision", "test_prompts_file"]
)
def test_a_blank_name_is_refused_when_the_recipe_is_read_while_an_empty_one_means_none(
    load_recipe_text, tmp_path, key
):
    # `ref_model_name_or_path: "  "` passed every check (not a local path) and failed as a Hub id once the policy
    # had loaded; a blank test_prompts_file was read as a file named "  " by the report.
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=rf"r.yaml: key '{key}': '  ' is blank: give a value, or leave the key out"
    ):
        load_recipe_text(tmp_path, f'{key}: "  "\n')
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': '\\t' is blank"):
        load_recipe_text(tmp_path, "", f"--{key}", "\t")
    recipe = load_recipe_text(tmp_path, f'{key}: ""\n')
    assert not (vars(recipe.model) | vars(recipe.report))[key]  # unset, as every reader of it takes ""
