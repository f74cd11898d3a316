"""Hostile recipes, data files and command lines that a real user could plausibly give: each ends in one `error:`
line naming the file, row or key (exit code 2) before any model loads, or is read exactly as written, never
silently cut or misread."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_dpo import cli
from tests.run_fixtures import write_adapter


def arithmetic_pairs(n: int = 4) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": f"{i}?"} for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(tmp_path: Path, capsys, recipe: str = "", *overrides: str) -> tuple[int, str]:
    """`hf-dpo train RECIPE OVERRIDES` in-process on tmp_path/data (a train and a test split unless the test
    wrote its own): (exit code, stderr)."""
    data = tmp_path / "data"
    if not data.exists():
        write_jsonl(data / "train.jsonl", arithmetic_pairs(6))
        write_jsonl(data / "test.jsonl", arithmetic_pairs(2))
    path = tmp_path / "r.yaml"
    path.write_text(f"dataset_name: {data}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\n{recipe}")
    rc = cli.main(["train", str(path), *overrides])
    return rc, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def test_eval_strategy_without_a_held_out_split_is_named_before_the_model_loads(tmp_path, capsys, no_model):
    # transformers' Trainer refused it only once built, after the model had loaded: a ValueError traceback.
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(6))
    rc, err = train(tmp_path, capsys, "eval_strategy: steps\neval_steps: 5\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'eval_strategy': steps .*no held-out split", line), line
    assert "dataset_test_split" in line and "eval_fraction" in line
    # the same recipe with a held-out share carved out of the train split passes every check
    with pytest.raises(AssertionError, match="the model was loaded"):
        train(tmp_path, capsys, "eval_strategy: steps\neval_steps: 5\neval_fraction: 0.5\n")


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_a_split_without_the_mapped_columns_names_them_not_a_row(tmp_path, capsys, no_model, on_bad_rows):
    # StackExchange-style columns: before, "row 0, column 'chosen': missing value. Fix the row" (error), or with
    # skip "no usable pairs (3 rows read, none valid) ... set `on_bad_rows: skip`", which it already was.
    write_jsonl(
        tmp_path / "data" / "train.jsonl", [{"question": "q", "response_j": "a", "response_k": "b"}] * 3
    )
    rc, err = train(tmp_path, capsys, f"on_bad_rows: {on_bad_rows}\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(
        r"train.jsonl: no column 'chosen' \(columns: question, response_j, response_k\)", line
    ), line
    assert "chosen_column" in line and "row" not in line


def test_a_held_out_split_without_the_columns_is_named(tmp_path, capsys, no_model):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    write_jsonl(tmp_path / "data" / "test.jsonl", [{"prompt": "p", "good": "a", "bad": "b"}] * 2)
    rc, err = train(tmp_path, capsys, "on_bad_rows: skip\n")
    assert rc == 2 and re.search(r"test.jsonl: no column 'chosen'", one_error(err))


def test_a_prompt_column_set_to_a_column_the_data_lacks_is_named(tmp_path, capsys, no_model):
    # Before: every row fell back to the implicit prompt (the shared start of chosen and rejected), so the error
    # was "row 0, column 'question': no prompt column and chosen/rejected share no prefix", or, where the
    # answers did share a start, the recipe's mapping was silently ignored.
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    rc, err = train(tmp_path, capsys, "prompt_column: question\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"train.jsonl: no column 'question' \(columns: chosen, prompt, rejected\)", line), line
    assert "prompt_column" in line


def test_csv_cells_are_read_as_the_text_they_hold(tmp_path):
    # pandas' type inference read a column of numeric answers as numbers ("row 0, column 'chosen': expected a
    # string ..., got int", an error no edit of the CSV could fix), "1.50" as 1.5, and the answers NA / None /
    # null as missing values.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import read_splits

    (tmp_path / "train.csv").write_text(
        "prompt,chosen,rejected\nWhat is 1 + 1?,2,3\nPrice of 3 at 0.50?,1.50,1.5\nPandas' missing marker?,NA,None\n"
    )
    rows = read_splits(DataConfig(dataset_name=str(tmp_path / "train.csv")))["train"][1]
    assert rows == [
        {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"},
        {"prompt": "Price of 3 at 0.50?", "chosen": "1.50", "rejected": "1.5"},
        {"prompt": "Pandas' missing marker?", "chosen": "NA", "rejected": "None"},
    ]


def test_an_empty_csv_cell_is_an_empty_response_named_by_row(tmp_path, capsys, no_model):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("prompt,chosen,rejected\nq1,a,b\nq2,,d\n")
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re.search(r"train.csv, row 1, column 'chosen': empty response", one_error(err))


def load(tmp_path: Path, text: str, *overrides: str):
    from hf_dpo.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, list(overrides))


def test_loss_weights_written_as_yaml_reads_them_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-1 (no dot) as a string: it reached the loss as '1e-1' and failed in the first training
    # step, after the model had loaded.
    recipe = load(tmp_path, "loss_type: [sigmoid, sft]\nloss_weights: [1, 1e-1]\n")
    assert recipe.training.loss_weights == [1.0, 0.1]
    assert all(type(w) is float for w in recipe.training.loss_weights)


@pytest.mark.parametrize(
    "weights, problem",
    [("[1, .nan]", r"finite"), ("[1, true]", r"true"), ("[1, heavy]", r"'heavy'"), ("[1, [2]]", r"\[2\]")],
)
def test_loss_weights_that_are_no_numbers_are_named(tmp_path, weights, problem):
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key 'loss_weights': .*{problem}"):
        load(tmp_path, f"loss_type: [sigmoid, sft]\nloss_weights: {weights}\n")


@pytest.mark.parametrize("key", ["lora_target_modules", "loss_type"])
def test_a_list_key_left_empty_in_yaml_is_named(tmp_path, capsys, no_model, key):
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
def test_pad_to_multiple_of_that_is_no_positive_whole_number_is_named(tmp_path, value, problem):
    # Before: "invalid value in section DPOConfig: ValueError: invalid literal for int() with base 10: 'eight'"
    # (no key), and -8 was taken: rows padded to fewer tokens than the longest, a shape error at the first step.
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key 'pad_to_multiple_of': {problem}.*auto"):
        load(tmp_path, f"pad_to_multiple_of: {value}\n")
    with pytest.raises(RecipeError, match=rf"key 'pad_to_multiple_of': {problem}"):
        load(tmp_path, "", "--pad_to_multiple_of", value)


def test_pad_to_multiple_of_keeps_its_valid_forms(tmp_path):
    assert load(tmp_path, "pad_to_multiple_of: 8\n").training.pad_to_multiple_of == 8
    assert load(tmp_path, "", "--pad_to_multiple_of", "16").training.pad_to_multiple_of == 16
    for text in ("auto", "null", "none"):
        assert load(tmp_path, f"pad_to_multiple_of: {text}\n").training.pad_to_multiple_of is None


def test_a_held_out_split_the_recipe_names_but_the_data_lacks_is_named(tmp_path, capsys, no_model):
    # Before: the run trained without any held-out split, silently (the recipe's dataset_test_split ignored).
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    write_jsonl(tmp_path / "data" / "valid.jsonl", arithmetic_pairs(2))
    rc, err = train(tmp_path, capsys, "dataset_test_split: validation\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(
        r"data: no file for split 'validation' \(dataset_test_split; found: train, valid\)", line
    ), line
    assert "dataset_test_split" in line


def test_a_held_out_split_set_for_a_single_file_is_named(tmp_path):
    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    write_jsonl(tmp_path / "pairs.jsonl", arithmetic_pairs(4))
    with pytest.raises(
        DataError,
        match=r"pairs.jsonl is one file.*dataset_test_split 'validation'.*eval_fraction.*dataset_test_split: null",
    ):
        read_splits(DataConfig(dataset_name=str(tmp_path / "pairs.jsonl"), dataset_test_split="validation"))
    # the default test split, absent, is no error: eval_fraction (or no held-out split) then applies
    assert list(read_splits(DataConfig(dataset_name=str(tmp_path / "pairs.jsonl")))) == ["train"]


def test_a_hub_dataset_without_the_named_held_out_split_is_named(monkeypatch):
    import datasets

    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    monkeypatch.setattr(
        datasets, "get_dataset_split_names", lambda name, config=None: ["train_prefs", "test_prefs"]
    )
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(arithmetic_pairs(2))
    )
    cfg = DataConfig(
        dataset_name="org/prefs", dataset_train_split="train_prefs", dataset_test_split="test_pref"
    )
    with pytest.raises(
        DataError,
        match=r"'org/prefs' has no split 'test_pref' \(dataset_test_split; splits: train_prefs, test_prefs\)",
    ):
        read_splits(cfg)
    cfg.dataset_test_split = "test_prefs"
    assert list(read_splits(cfg)) == ["train_prefs", "test_prefs"]


def test_precompute_ref_log_probs_that_is_no_choice_says_what_it_may_be(tmp_path):
    # Before: "key 'precompute_ref_log_probs': invalid <lambda> value: 'maybe'."
    from hf_dpo.config import RecipeError

    expected = r"key 'precompute_ref_log_probs': expected true, false or auto, got 'maybe'"
    with pytest.raises(RecipeError, match=rf"r.yaml: {expected}"):
        load(tmp_path, "precompute_ref_log_probs: maybe\n")
    with pytest.raises(RecipeError, match=rf"command line: {expected}"):
        load(tmp_path, "", "--precompute_ref_log_probs", "maybe")
    assert (
        load(tmp_path, "", "--precompute_ref_log_probs", "auto").training.precompute_ref_log_probs == "auto"
    )
    assert load(tmp_path, "precompute_ref_log_probs: no\n").training.precompute_ref_log_probs is False


def test_a_string_prompt_beside_whole_conversations_is_not_asked_twice(smollm_dir):
    # UltraFeedback-binarized's shape (the GPU recipes' data): a prompt string and chosen/rejected as the whole
    # conversation, user turn included. Before, the prompt became a second user turn in front of the first,
    # and the user turn was trained on as part of the answer. Now, as TRL does (maybe_extract_prompt), the
    # prompt is the conversation's shared start.
    from transformers import AutoTokenizer

    from hf_dpo.config import DataConfig
    from hf_dpo.data import normalize_row, tokenize_pair

    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    user = {"role": "user", "content": "What colour is the sky?"}
    row = {
        "prompt": "What colour is the sky?",
        "chosen": [user, {"role": "assistant", "content": "Blue."}],
        "rejected": [user, {"role": "assistant", "content": "Green."}],
    }
    pair = normalize_row(row, DataConfig())
    assert pair["prompt"] == [user]
    assert pair["chosen"] == [{"role": "assistant", "content": "Blue."}]
    twin = normalize_row(
        {"prompt": [user], "chosen": pair["chosen"], "rejected": pair["rejected"]}, DataConfig()
    )
    assert tokenize_pair(pair, tokenizer, DataConfig()) == tokenize_pair(twin, tokenizer, DataConfig())
    ids = tokenize_pair(pair, tokenizer, DataConfig())
    assert tokenizer.decode(ids["prompt_input_ids"]).count("What colour is the sky?") == 1
    assert "user" not in tokenizer.decode(ids["chosen_input_ids"])


def plan(tmp_path: Path, capsys, recipe: str) -> tuple[int, str]:
    """`hf-dpo plan RECIPE --device cpu` in-process: (exit code, stderr)."""
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    path = tmp_path / "r.yaml"
    path.write_text(f"dataset_name: {tmp_path / 'data'}\noutput_dir: {tmp_path / 'run'}\n{recipe}")
    rc = cli.main(["plan", str(path), "--device", "cpu"])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("config", ["{bad", "[1, 2]", b"\xff\xfe{}"])
def test_plan_names_a_local_config_json_it_cannot_read(tmp_path, capsys, config):
    # Before: a JSONDecodeError (or AttributeError, UnicodeDecodeError) traceback from hf_dpo/plan/arch.py.
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    rc, err = plan(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2
    assert re.search(r"model/config.json.*(not valid JSON|not a JSON object|not UTF-8)", one_error(err))


def test_plan_names_a_local_model_without_a_tokenizer(tmp_path, capsys):
    # Before: "ValueError: Couldn't instantiate the backend tokenizer" traceback, from measuring the data's rows.
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    config |= {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
    (model / "config.json").write_text(json.dumps(config))
    rc, err = plan(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2 and re.search(r"key 'model_name_or_path': .*tokenizer", one_error(err))


def test_an_attention_kernel_transformers_does_not_know_is_named_before_the_model_loads(
    tmp_path, capsys, no_model
):
    # Before: a ValueError traceback from transformers once the model's weights were fetched.
    rc, err = train(tmp_path, capsys, "attn_implementation: flash_attn_2\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'attn_implementation': 'flash_attn_2' is not one of .*sdpa", line), line
    assert "Did you mean 'flash_attention_2'" in line


def test_flash_attention_without_its_package_is_named_before_the_model_loads(
    tmp_path, capsys, no_model, monkeypatch
):
    # Before: "ImportError: FlashAttention2 has been toggled on, but ... doesn't seem to be installed", a traceback
    # after the (Hub) model's weights had been downloaded.
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    monkeypatch.setattr(transformers.utils, "is_kernels_available", lambda: False)
    rc, err = train(tmp_path, capsys, "attn_implementation: flash_attention_2\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'attn_implementation': flash_attention_2 needs .*flash-attn.*sdpa", line), line


def test_a_lora_adapter_given_as_the_model_is_named_with_the_keys_to_use(tmp_path, capsys, no_model):
    # An SFT run's output (adapter + tokenizer, no config.json) as model_name_or_path: transformers loaded its
    # base with the adapter, and the new LoRA went on top under the same name: which weights trained and what the
    # reference was (the bare base, not the SFT adapter) was silent.
    adapter = tmp_path / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    )
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {adapter}\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'model_name_or_path': .*sft is a LoRA adapter", line), line
    assert f"adapter_name_or_path: {adapter}" in line
    assert "model_name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct" in line


@pytest.mark.parametrize("what", ["directory", "file"])
def test_an_adapter_path_that_holds_no_adapter_is_named_before_the_model_loads(
    tmp_path, capsys, no_model, what
):
    # Before: the base model loaded (minutes for a large one), then peft failed on the missing adapter_config.json.
    adapter = tmp_path / "sft"
    if what == "directory":
        (adapter / "checkpoint-10").mkdir(parents=True)  # the run dir of a run that never saved at the top
    else:
        adapter.write_text("x")
    rc, err = train(tmp_path, capsys, f"adapter_name_or_path: {adapter}\n")
    assert rc == 2
    assert re.search(r"key 'adapter_name_or_path': .*sft has no adapter_config.json", one_error(err))


def test_a_hub_split_that_fails_to_load_is_named(monkeypatch):
    # The split names were read, then load_dataset failed (the network dropped, a data file the Hub's viewer
    # cannot cast): its own exception, a traceback, reached the user.
    import datasets

    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    def fail(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'org/prefs' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "get_dataset_split_names", lambda name, config=None: ["train", "test"])
    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(
        DataError, match=r"'org/prefs', split 'train', could not be loaded \(ConnectionError: Couldn't"
    ):
        read_splits(DataConfig(dataset_name="org/prefs"))


@pytest.mark.parametrize("column", ["images", "image"])
def test_a_vision_dataset_is_named_not_trained_on_its_text_alone(tmp_path, capsys, no_model, column):
    # TRL's vision DPO format: the images were dropped silently, the prompts still speaking of them.
    rows = [dict(r, **{column: ["pics/0.png"]}) for r in arithmetic_pairs(4)]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    rc, err = train(tmp_path, capsys)
    assert rc == 2
    assert re.search(rf"train.jsonl: column '{column}' holds images.*text", one_error(err))
    # an images column that is empty throughout is no vision data
    write_jsonl(tmp_path / "data" / "train.jsonl", [dict(r, **{column: []}) for r in arithmetic_pairs(4)])
    with pytest.raises(AssertionError, match="the model was loaded"):
        train(tmp_path, capsys)


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("lora_target_modules: q_proj, v_proj\n", ()),
        ("", ("--lora_target_modules", "q_proj,v_proj")),
        ("", ("--lora_target_modules=q_proj, v_proj",)),
    ],
)
def test_lora_target_modules_written_as_one_comma_list_is_named(tmp_path, recipe, overrides):
    # Before: one module named 'q_proj, v_proj', which no layer has: for a Hub model peft said so only after the
    # model had loaded.
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=r"key 'lora_target_modules': 'q_proj, ?v_proj' .*\[q_proj, v_proj\]"
    ):
        load(tmp_path, recipe, *overrides)
    assert load(tmp_path, "lora_target_modules: [q_proj, v_proj]\n").model.lora_target_modules == [
        "q_proj",
        "v_proj",
    ]


@pytest.mark.parametrize("content", [None, "{not json\n", ""])
def test_the_reports_prompt_file_is_read_before_training_not_after(tmp_path, capsys, no_model, content):
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


def test_a_reward_model_judge_that_cannot_be_loaded_is_named_before_training(tmp_path, capsys, no_model):
    # `judge: rm:<dir>` was only checked to exist: a directory that holds no model (a run dir, a download cut
    # short) failed when the report loaded the judge, after the whole training run.
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "README.md").write_text("a reward model, soon")
    rc, err = train(tmp_path, capsys, f"judge: rm:{tmp_path / 'rm'}\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(rf"judge 'rm:{tmp_path / 'rm'}': cannot be loaded", line), line


def test_a_held_out_split_that_is_the_train_split_is_named(tmp_path):
    # Before: the "held-out" metrics before and after training were measured on the training pairs, silently.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    cfg = DataConfig(dataset_name=str(tmp_path / "data"), dataset_test_split="train")
    with pytest.raises(DataError, match=r"dataset_test_split 'train' is the train split.*eval_fraction"):
        read_splits(cfg)


def test_yaml_dates_are_text_for_the_keys_that_take_text(tmp_path):
    # YAML 1.1 reads a bare 2024-06-01 as a date: output_dir failed as "TypeError: expected str, bytes or
    # os.PathLike object, not date" naming no key; run_name, dataset_name or hub_model_id kept a date object
    # (dataset_name then a TypeError traceback in the preflight).
    recipe = load(tmp_path, "output_dir: 2024-06-01\nrun_name: 2024-06-01\ndataset_name: 2024-06-01\n")
    assert recipe.training.output_dir == "2024-06-01"
    assert recipe.training.run_name == "2024-06-01" and recipe.data.dataset_name == "2024-06-01"


def test_yaml_1_1_octal_and_base_60_numbers_are_not_misread(tmp_path):
    # YAML 1.1 read seed: 010 as 8 (octal) and max_steps: 1:30 as 90 (base 60), silently.
    from hf_dpo.config import RecipeError

    assert load(tmp_path, "seed: 010\n").training.seed == 10
    with pytest.raises(RecipeError, match=r"key 'max_steps': expected a whole number, got '1:30'"):
        load(tmp_path, "max_steps: 1:30\n")
    recipe = load(tmp_path, "seed: 0x2A\nmax_steps: -1\nlora_r: 1_6\nlearning_rate: 1e-5\n")
    assert (recipe.training.seed, recipe.training.max_steps, recipe.model.lora_r) == (42, -1, 16)
    assert recipe.training.learning_rate == 1e-5


def test_eval_names_a_prompt_file_that_moved_before_the_model_loads(tmp_path, capsys, monkeypatch):
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


@pytest.mark.parametrize("recipe, overrides", [("report_to: null\n", ()), ("", ("--report_to", "null"))])
def test_report_to_null_means_no_integration(tmp_path, recipe, overrides):
    # Before: [None], which the preflight refused as "'None' is not a reporting integration (... or none)".
    from hf_dpo.train.setup import check_report_to

    args = load(tmp_path, recipe, *overrides).training
    assert args.report_to == []
    check_report_to(args)


def test_a_dataset_saved_with_save_to_disk_is_read_as_its_splits(tmp_path):
    # Before: "no file for split 'train' (found: dataset_dict). Set dataset_train_split to one of them", advice
    # that led to reading dataset_dict.json as rows; a single saved Dataset: "(found: dataset_info, state)".
    import datasets

    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    saved = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(arithmetic_pairs(4)),
            "test": datasets.Dataset.from_list(arithmetic_pairs(2)),
        }
    )
    saved.save_to_disk(tmp_path / "dict")
    splits = read_splits(DataConfig(dataset_name=str(tmp_path / "dict")))
    assert {split: len(rows) for split, (_, rows) in splits.items()} == {"train": 4, "test": 2}
    assert splits["train"][1][0] == arithmetic_pairs(1)[0]
    with pytest.raises(
        DataError,
        match=r"dict: no split 'valid' \(dataset_test_split; splits: train, test\).*dataset_test_split",
    ):
        read_splits(DataConfig(dataset_name=str(tmp_path / "dict"), dataset_test_split="valid"))

    datasets.Dataset.from_list(arithmetic_pairs(3)).save_to_disk(tmp_path / "one")
    splits = read_splits(DataConfig(dataset_name=str(tmp_path / "one")))
    assert list(splits) == ["train"] and len(splits["train"][1]) == 3


@pytest.mark.parametrize("key", ["lr_scheduler_kwargs", "gradient_checkpointing_kwargs", "model_init_kwargs"])
def test_a_kwargs_key_given_text_that_is_no_mapping_is_named(tmp_path, key):
    # `lr_scheduler_kwargs: min_lr=0` was kept as the text 'min_lr=0' and spread as keyword arguments when the
    # scheduler (or the model) was built, after the model had loaded: a TypeError traceback. model_init_kwargs
    # failed as "JSONDecodeError: Expecting value" naming no key.
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match=rf"key '{key}': 'min_lr=0' is not a mapping.*{{min_lr: 0}}"):
        load(tmp_path, f"{key}: min_lr=0\n")
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': 'min_lr=0' is not a mapping"):
        load(tmp_path, "", f"--{key}", "min_lr=0")
    # a mapping, in YAML or as JSON text, is what the key takes
    assert getattr(load(tmp_path, f"{key}: {{min_lr: 0}}\n").training, key) == {"min_lr": 0}
    assert getattr(load(tmp_path, "", f"--{key}", '{"min_lr": 0}').training, key) == {"min_lr": 0}


def test_exponent_numbers_inside_mappings_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-6 (no dot) and 1.0e6 (no exponent sign) as text. At the top level the command-line parser
    # converts them; inside a mapping (lr_scheduler_kwargs: {min_lr: 1e-6}) the text reached the scheduler, a
    # TypeError once training started.
    recipe = load(
        tmp_path, "lr_scheduler_type: cosine_with_min_lr\nlr_scheduler_kwargs: {min_lr: 1e-6, x: 1.0e6}\n"
    )
    assert recipe.training.lr_scheduler_kwargs == {"min_lr": 1e-6, "x": 1e6}
    recipe = load(tmp_path, "", "--lr_scheduler_kwargs", "{min_lr: 1e-6}")
    assert recipe.training.lr_scheduler_kwargs == {"min_lr": 1e-6}
    # what was a number stays one, and text stays text
    recipe = load(tmp_path, "learning_rate: 5.0e-7\nbeta: .5\nmax_steps: 10\nrun_name: v1.2.3\n")
    assert (recipe.training.learning_rate, recipe.training.beta, recipe.training.max_steps) == (5e-7, 0.5, 10)
    assert type(recipe.training.max_steps) is int and recipe.training.run_name == "v1.2.3"


@pytest.mark.parametrize(
    "key, value, kind",
    [
        ("lr_scheduler_type", "cosinee", "SchedulerType"),
        ("logging_strategy", "sometimes", "IntervalStrategy"),
    ],
)
def test_a_training_argument_transformers_refuses_names_its_key(tmp_path, key, value, kind):
    # Before: "invalid value in section DPOConfig: ValueError: cosinee is not a valid SchedulerType, ..."
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=rf"r.yaml: key '{key}': {value} is not a valid {kind}, please select"
    ):
        load(tmp_path, f"{key}: {value}\n")
    with pytest.raises(RecipeError, match=rf"command line: key '{key}': invalid choice: '{value}'"):
        load(tmp_path, "", f"--{key}", value)  # argparse knows the choices there (and named the key already)


def test_a_null_prompt_in_a_dataset_with_prompts_is_named_not_guessed(tmp_path, capsys, no_model):
    # One row's prompt lost (null): it was taken from the shared start of its answers, "The answer is " here,
    # and trained on as the prompt, silently.
    rows = arithmetic_pairs(3) + [
        {"prompt": None, "chosen": "The answer is 4", "rejected": "The answer is 5"}
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    rc, err = train(tmp_path, capsys)
    assert rc == 2
    assert re.search(r"train.jsonl, row 3, column 'prompt': missing value", one_error(err))


@pytest.mark.parametrize("out", ["a_file", "a_file/merged"])
def test_merge_into_a_place_that_cannot_hold_it_is_named_before_the_base_loads(
    tmp_path, capsys, monkeypatch, out
):
    # OUT an existing file: a NotADirectoryError traceback; OUT under a file (or unwritable): the base loaded
    # and merged, then the save failed with a traceback.
    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded before OUT was checked")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    run = write_adapter(tmp_path / "run", "smollm2-135m-instruct")
    (tmp_path / "a_file").write_text("x")
    rc = cli.main(["merge", str(run), str(tmp_path / out)])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and re.search(rf"{out} cannot be written to .*choose", line), line


def test_prompt_messages_repeated_at_the_start_of_both_answers_are_not_asked_twice():
    # chosen/rejected as the whole conversation beside a prompt of messages: the prompt turns came twice, the
    # second time trained on as part of the answer.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import normalize_row

    user = {"role": "user", "content": "What colour is the sky?"}
    row = {
        "prompt": [user],
        "chosen": [user, {"role": "assistant", "content": "Blue."}],
        "rejected": [user, {"role": "assistant", "content": "Green."}],
    }
    pair = normalize_row(row, DataConfig())
    assert pair["prompt"] == [user]
    assert pair["chosen"] == [{"role": "assistant", "content": "Blue."}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Green."}]


def test_a_recipe_given_as_an_option_says_where_it_goes(tmp_path, capsys):
    # `hf-dpo bench --recipe R` exists; `hf-dpo train --recipe R` read "unknown key 'recipe'" and no more.
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    (tmp_path / "r.yaml").write_text(f"dataset_name: {tmp_path / 'data'}\n")
    rc = cli.main(["train", "--recipe", str(tmp_path / "r.yaml")])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and "unknown key 'recipe'" in line and "hf-dpo train RECIPE" in line, line


def test_a_conversation_prompt_with_no_text_is_an_empty_prompt_as_a_string_one_is():
    # Before: a prompt string of spaces was "empty prompt", the same as one user message of spaces passed.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import BadRow, normalize_row

    row = {"prompt": [{"role": "user", "content": "  \n"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(BadRow, match="empty prompt"):
        normalize_row(row, DataConfig())


def test_max_eval_samples_is_described_as_what_it_does(tmp_path):
    # Its help said "the first N held-out pairs"; the pairs are drawn at random (seeded), in file order.
    import dataclasses

    from hf_dpo.config import DataConfig
    from hf_dpo.data import _seeded_subset

    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(DataConfig)}["max_eval_samples"]
    drawn = _seeded_subset(list(range(50)), 5, seed=42)
    assert drawn != list(range(5))  # not the first five: the help must not say so
    assert "first" not in help_text and "random" in help_text and "seed" in help_text


@pytest.mark.parametrize(
    "option, value, problem",
    [
        ("--max-new-tokens", "0", "must be >= 1"),
        ("--max-new-tokens", "-5", "must be >= 1"),
        ("--num-generations", "-1", "must be >= 0"),
    ],
)
def test_eval_counts_out_of_range_are_refused_before_the_model_loads(
    tmp_path, capsys, monkeypatch, option, value, problem
):
    # --max-new-tokens -5 reached generate() after the model had loaded (a ValueError traceback); 0 fell back to
    # the recipe's value silently (`or`); --num-generations -1 was reported as "num_generations is 0".
    def refuse(*args, **kwargs):
        raise AssertionError("the run was loaded before the options were checked")

    monkeypatch.setattr("hf_dpo.run.load_run", refuse)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", str(tmp_path), option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {option}: {problem}, got {value}" in err, err


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
    tmp_path, capsys, no_model, config, problem
):
    # A causal LM (the policy's own base, say) given as rm: was refused only when the report loaded the judge,
    # after the whole training run.
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
    rc, err = train(tmp_path, capsys, f"judge: rm:{tmp_path / 'rm'}\n")
    assert rc == 2 and re.search(problem, one_error(err))


def test_lora_target_modules_of_a_hub_model_are_checked_from_its_config(
    tmp_path, capsys, no_model, monkeypatch
):
    # Hub models were left to the loader: a target no layer has (q_proj on GPT-2, whose attention is c_attn)
    # failed in peft after the model had been downloaded and loaded. Now their config is read from the Hub cache
    # (faked here: this machine has no network).
    import hf_dpo.model.checks

    asked = []

    def layers(model):
        asked.append(model)
        return ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc")

    monkeypatch.setattr(hf_dpo.model.checks, "_linear_layer_names", layers)
    rc, err = train(
        tmp_path, capsys, "model_name_or_path: openai-community/gpt2\nlora_target_modules: [q_proj]\n"
    )
    assert asked == ["openai-community/gpt2"]
    assert rc == 2 and re.search(
        r"q_proj matches no linear layer of openai-community/gpt2.*c_attn", one_error(err)
    )


def test_the_saved_recipe_reads_back_as_it_ran(tmp_path):
    # recipe.yaml is re-runnable as it is: text that the recipe reader takes for a number (1e5, read as YAML 1.2
    # reads it) must be written quoted, or a re-run gets run_name 100000.0.
    from hf_dpo.config import load_recipe

    recipe = load(tmp_path, "run_name: '1e5'\nhub_model_id: '2024-06-01'\nlearning_rate: 1e-5\n")
    assert recipe.training.run_name == "1e5"
    (tmp_path / "again.yaml").write_text(recipe.to_yaml())
    again = load_recipe(tmp_path / "again.yaml")
    assert again.training.run_name == "1e5" and again.training.hub_model_id == "2024-06-01"
    assert again.training.learning_rate == 1e-5


def test_bf16_on_a_machine_without_it_names_the_key(tmp_path, monkeypatch):
    # An alignment-handbook recipe (bf16: true) on a CPU machine: "invalid value in section DPOConfig: ValueError:
    # Your setup doesn't support bf16/gpu. You need to assign use_cpu ...", no key, and advice that trains in bf16
    # autocast on the CPU (many times slower there than float32).
    import transformers.training_args

    from hf_dpo.config import RecipeError

    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: False)
    with pytest.raises(RecipeError, match=r"r.yaml: key 'bf16': .*bf16: false.*torch_dtype"):
        load(tmp_path, "bf16: true\n")


def test_a_model_config_json_that_is_no_mapping_is_named_before_the_model_loads(
    tmp_path, capsys, no_model, smollm_dir
):
    # A config.json holding a list (a file overwritten by another tool): transformers' TypeError ("argument after
    # ** must be a mapping") came out of the preflight's tokenizer load as a traceback.
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    for name in Path(smollm_dir).iterdir():
        if "token" in name.name:
            shutil.copy(name, model / name.name)
    (model / "config.json").write_text("[1, 2]")
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2 and re.search(r"key 'model_name_or_path': .*config.json", one_error(err))


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


def test_the_reports_prompt_file_is_read_by_the_recipes_prompt_column(tmp_path, smollm_dir):
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


@pytest.mark.parametrize("eval_fraction", [None, "0.5"])
def test_a_bad_jsonl_row_is_also_named_by_the_line_an_editor_shows(tmp_path, capsys, no_model, eval_fraction):
    """Before: rows count from 0 and skip blank lines, so a file with blank lines had its refused 'row 3' on
    line 8 and nothing said so; the error now gives the line too, in the held-out share's rows as well."""
    good = [json.dumps(row) for row in arithmetic_pairs(6)]
    bad = json.dumps({"prompt": "What is 9 + 1?", "chosen": "10", "rejected": "10"})
    lines = [good[0], "", good[1], "", "", good[2], "", bad, *good[3:]]  # the bad row: row 3, line 8
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    if eval_fraction is None:
        write_jsonl(data / "test.jsonl", arithmetic_pairs(2))
    extra = f"eval_fraction: {eval_fraction}\ndataset_test_split: null\n" if eval_fraction else ""
    rc, err = train(tmp_path, capsys, extra)
    message = one_error(err)
    assert rc == 2 and "train.jsonl" in message and "row 3" in message, message
    assert "column 'rejected'" in message and "(row 3 is line 8 of the file)" in message, message


def test_max_prompt_length_without_max_length_is_refused_not_ignored(tmp_path, capsys, no_model):
    """Before: with max_length: null no pair is truncated, so max_prompt_length cut nothing, silently."""
    rc, err = train(tmp_path, capsys, "max_length: null\nmax_prompt_length: 64\n")
    message = one_error(err)
    assert rc == 2 and "key 'max_prompt_length'" in message and "max_length: null" in message, message


def test_eval_fraction_beside_a_test_split_says_it_is_not_used(tmp_path, caplog, smollm_dir):
    """Before: eval_fraction beside a dataset's test split was ignored without a word (the split is held out)."""
    import logging

    from transformers import AutoTokenizer

    from hf_dpo.config import DataConfig, DPOConfig
    from hf_dpo.data import load_preference_dataset

    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(6))
    write_jsonl(tmp_path / "data" / "test.jsonl", arithmetic_pairs(2))
    cfg = DataConfig(dataset_name=str(tmp_path / "data"), eval_fraction=0.25, apply_chat_template=False)
    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    with caplog.at_level(logging.WARNING, logger="hf_dpo.data"):
        data = load_preference_dataset(
            cfg, tokenizer, DPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True)
        )
    assert len(data.eval) == 2 and len(data.train) == 6  # the test split held out, the train split whole
    assert "eval_fraction 0.25 is not used: the dataset's 'test' split is the held-out set" in caplog.text


@pytest.mark.parametrize("split", ["\r", "val\nid"])
def test_a_split_name_with_a_line_break_is_shown_escaped_beside_its_key(tmp_path, capsys, no_model, split):
    """Found by test_properties: `--dataset_test_split $'\\r'` printed the name raw, so the error line broke
    before it named the key; the name is shown escaped and the key beside it."""
    rc, err = train(tmp_path, capsys, "", "--dataset_test_split", split)
    line = one_error(err)
    assert rc == 2 and "dataset_test_split" in line and repr(split) in line, line
