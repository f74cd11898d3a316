"""hf_dpo.data: every common row shape, row-level errors, truncation accounting, collation."""

import json

import pytest

from hf_dpo.config import DataConfig, DPOConfig
from hf_dpo.data import DataError, load_preference_dataset, prepare_rows, read_splits, tokenize_dataset
from hf_dpo.train.batching import PreferenceCollator


def args(**kw):
    return DPOConfig(output_dir="/tmp/hf_dpo_test", report_to="none", **kw)


def decode(tokenizer, ids):
    return tokenizer.decode(ids)


def test_standard_rows_get_the_chat_template(tokenizer):
    rows = [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "Five."}]
    cols, report = prepare_rows(rows, "mem", tokenizer, DataConfig(), 512, 256)
    prompt = decode(tokenizer, cols["prompt_input_ids"][0])
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    assert decode(tokenizer, cols["chosen_input_ids"][0]) == "4<|im_end|>\n"
    assert decode(tokenizer, cols["rejected_input_ids"][0]) == "Five.<|im_end|>\n"
    assert report.pairs_used == 1


def test_conversational_rows_equal_their_string_twin(tokenizer):
    conv = {
        "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "Five."}],
    }
    plain = {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "Five."}
    a, _ = prepare_rows([conv], "mem", tokenizer, DataConfig(), 512, 256)
    b, _ = prepare_rows([plain], "mem", tokenizer, DataConfig(), 512, 256)
    for key in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"):
        assert a[key] == b[key]


def test_implicit_prompt_conversational_and_hh_style(tokenizer):
    conv = {
        "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}],
    }
    cols, _ = prepare_rows([conv], "mem", tokenizer, DataConfig(), 512, 256)
    assert decode(tokenizer, cols["prompt_input_ids"][0]).endswith(
        "user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert decode(tokenizer, cols["chosen_input_ids"][0]).startswith("Hello!")
    hh = {
        "chosen": "\n\nHuman: Capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: Capital of France?\n\nAssistant: Pau, I think.",
    }
    cols, _ = prepare_rows([hh], "mem", tokenizer, DataConfig(), 512, 256)
    # Raw transcripts keep their own format (no chat template) and split after the last assistant marker.
    assert cols["prompt"][0] == "\n\nHuman: Capital of France?\n\nAssistant:"
    assert cols["chosen"][0] == " Paris."
    assert decode(tokenizer, cols["chosen_input_ids"][0]) == " Paris." + tokenizer.eos_token


HH_SAME_START = {
    "chosen": "\n\nHuman: Capital of Australia?\n\nAssistant: Sure.\n\nHuman: Which city?\n\nAssistant: The capital "
    "of Australia is Canberra.",
    "rejected": "\n\nHuman: Capital of Australia?\n\nAssistant: Sure.\n\nHuman: Which city?\n\nAssistant: The "
    "capital of Australia is Sydney.",
}


def test_hh_answers_that_start_with_the_same_words_keep_them(tokenizer):
    """The shared first words of two HH answers are answer, not prompt: the transcript is cut after its last
    '\\n\\nAssistant:' (as the original DPO code), and the data report counts the method."""
    cols, report = prepare_rows([HH_SAME_START], "mem", tokenizer, DataConfig(), 512, 256)
    assert cols["prompt"][0].endswith("Human: Which city?\n\nAssistant:")
    assert cols["chosen"][0] == " The capital of Australia is Canberra."
    assert cols["rejected"][0] == " The capital of Australia is Sydney."
    assert decode(tokenizer, cols["rejected_input_ids"][0]).startswith(" The capital of Australia")
    assert report.to_dict()["prompt_methods"] == {"transcript split at the last assistant turn": 1}
    assert report.prompts_inside_a_turn == 0


def test_text_rendered_through_a_chat_template_is_cut_after_its_last_assistant_header(tokenizer):
    """chosen/rejected already rendered (ChatML here): the prompt ends at the header, the answers keep their
    shared first words, and the text is tokenized as it is (its special tokens read as such)."""
    chatml = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of Australia?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of Australia is {}.<|im_end|>"
    )
    row = {"chosen": chatml.format("Canberra"), "rejected": chatml.format("Sydney")}
    cols, report = prepare_rows([row], "mem", tokenizer, DataConfig(), 512, 256)
    assert cols["prompt"][0].endswith("Capital of Australia?<|im_end|>\n<|im_start|>assistant\n")
    assert decode(tokenizer, cols["chosen_input_ids"][0]) == "The capital of Australia is Canberra.<|im_end|>"
    assert report.to_dict()["prompt_methods"] == {"rendered chat split after its last assistant header": 1}
    assert report.prompts_inside_a_turn == 0


def test_a_shared_start_prompt_that_ends_inside_a_turn_is_counted_and_warned(tokenizer, caplog):
    rows = [
        {"chosen": "Q: What is 2 + 2? A: It is 4.", "rejected": "Q: What is 2 + 2? A: It is 5."},
        {"chosen": "User: Hi\nAssistant: Hello!", "rejected": "User: Hi\nAssistant: Go away."},
        {
            "chosen": "POST: My cat hides.\nTL;DR: Cat hides.",
            "rejected": "POST: My cat hides.\nTL;DR: Dog barks.",
        },
    ]
    with caplog.at_level("WARNING", logger="hf_dpo.data"):
        cols, report = prepare_rows(rows, "pairs.jsonl", tokenizer, DataConfig(), 512, 256)
    assert cols["prompt"][0] == "Q: What is 2 + 2? A: It is "  # the data's own ambiguity: kept, but named
    assert report.to_dict()["prompt_methods"] == {"shared start of the texts": 3}
    assert report.to_dict()["prompts_inside_a_turn"] == 1  # the others end at "Assistant: " and "TL;DR: "
    assert "pairs.jsonl: 1 of 3 prompts were taken from the shared start" in caplog.text
    assert "end inside a turn" in caplog.text


def test_prompt_methods_per_split_reach_the_data_report(tmp_path, tokenizer, write_jsonl):
    """TRL's implicit-prompt conversations, explicit prompts and HH transcripts each counted by method."""
    conv = {
        "chosen": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there!"},
        ],
        "rejected": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, go away."},
        ],
    }
    write_jsonl(tmp_path / "train.jsonl", [HH_SAME_START, conv])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Q?", "chosen": "a", "rejected": "b"}])
    data = load_preference_dataset(DataConfig(dataset_name=str(tmp_path)), tokenizer, args())
    assert data.report["train"]["prompt_methods"] == {
        "transcript split at the last assistant turn": 1,
        "shared turns of the conversations": 1,
    }
    assert data.report["eval"]["prompt_methods"] == {"prompt column": 1}
    # the card's usage example follows how the pairs reached the model
    assert data.report["train"]["prompt_formats"] == {"raw text": 1, "chat template": 1}
    assert json.loads(data.train["chosen"][1]) == [{"role": "assistant", "content": "Hello there!"}]


def test_column_mapping(tokenizer):
    rows = [{"question": "Q?", "good": "A", "bad": "B"}]
    cfg = DataConfig(prompt_column="question", chosen_column="good", rejected_column="bad")
    cols, _ = prepare_rows(rows, "mem", tokenizer, cfg, 512, 256)
    assert cols["prompt"] == ["Q?"] and cols["chosen"] == ["A"]
    with pytest.raises(
        DataError, match=r"mem: no column 'chosen' \(columns: bad, good, question\).*chosen_column"
    ):
        prepare_rows(rows, "mem", tokenizer, DataConfig(), 512, 256)


@pytest.mark.parametrize(
    "row, column, problem",
    [
        ({"prompt": "Q", "chosen": "A", "rejected": "A"}, "rejected", "identical"),
        ({"prompt": "Q", "chosen": "  ", "rejected": "B"}, "chosen", "empty response"),
        (
            {"prompt": "Q", "chosen": 3, "rejected": "B"},
            "chosen",
            "expected a string or a list of messages, got int",
        ),
        ({"prompt": "Q", "chosen": None, "rejected": "B"}, "chosen", "missing value"),
        ({"prompt": "", "chosen": "A", "rejected": "B"}, "prompt", "empty prompt"),
        (
            {"prompt": "Q", "chosen": [{"role": "assistant"}], "rejected": "B"},
            "chosen",
            "lacks a 'role' or a string",
        ),
    ],
)
def test_bad_rows_name_source_row_and_column(tokenizer, row, column, problem):
    good = {"prompt": "Q", "chosen": "A", "rejected": "B"}
    with pytest.raises(DataError) as err:
        prepare_rows([good, good, row], "pairs.jsonl", tokenizer, DataConfig(), 512, 256)
    message = str(err.value)
    assert f"pairs.jsonl, row 2, column '{column}'" in message
    assert problem in message
    assert "on_bad_rows: skip" in message


def test_skip_mode_counts_bad_rows(tokenizer):
    rows = [
        {"prompt": "Q", "chosen": "A", "rejected": "B"},
        {"prompt": "Q", "chosen": "A", "rejected": "A"},
        {"prompt": "Q", "chosen": "", "rejected": "B"},
        {"prompt": "Q", "chosen": "C", "rejected": "D"},
    ]
    cols, report = prepare_rows(rows, "mem", tokenizer, DataConfig(on_bad_rows="skip"), 512, 256)
    assert report.pairs_used == 2 and len(cols["prompt_input_ids"]) == 2
    assert report.skipped == {"chosen == rejected": 1, "empty response": 1}
    assert report.to_dict()["rows_read"] == 4


def test_truncation_is_counted_never_silent(tokenizer):
    long_prompt = "word " * 300
    rows = [
        {"prompt": long_prompt, "chosen": "yes " * 100, "rejected": "no " * 100},
        {"prompt": "short?", "chosen": "a " * 200, "rejected": "b"},
        {"prompt": "fine", "chosen": "x", "rejected": "y"},
    ]
    cols, report = prepare_rows(rows, "mem", tokenizer, DataConfig(), 128, 64)
    assert report.pairs_used == 3
    assert report.prompt_truncated == 1
    assert report.completion_truncated == 2
    for p, c, r in zip(cols["prompt_input_ids"], cols["chosen_input_ids"], cols["rejected_input_ids"]):
        assert len(p) + max(len(c), len(r)) <= 128
    assert len(cols["prompt_input_ids"][0]) == 64
    # The prompt keeps its end (the question and the assistant header), not its start.
    assert decode(tokenizer, cols["prompt_input_ids"][0]).endswith("<|im_start|>assistant\n")


def test_prompt_longer_than_max_length_is_skipped_and_counted(tokenizer):
    rows = [
        {"prompt": "word " * 300, "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ]
    _, report = prepare_rows(rows, "mem", tokenizer, DataConfig(), 64, None)
    assert report.pairs_used == 1
    assert report.skipped == {"prompt longer than max_length": 1}


def test_a_dataset_with_every_prompt_too_long_is_an_error_naming_the_lever(tokenizer):
    # The Python API (DPOTrainer(train_dataset=...)): before, training began on zero pairs and failed
    # with a KeyError inside the reference pass.
    rows = [{"prompt": "word " * 300, "chosen": "a", "rejected": "b"}] * 3
    with pytest.raises(
        DataError, match=r"no usable pairs left of 3.*prompt longer than max_length.*max_prompt_length"
    ):
        tokenize_dataset(rows, tokenizer, DataConfig(), DPOConfig(output_dir="unused", max_length=64))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_local_formats_and_splits(tmp_path, tokenizer, fmt):
    import datasets

    rows = [{"prompt": f"Q{i}?", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(10)]
    for split, part in (("train", rows[:8]), ("test", rows[8:])):
        datasets.Dataset.from_list(part).to_json(
            tmp_path / f"{split}.{fmt}", lines=True
        ) if fmt == "jsonl" else None
        if fmt == "json":
            (tmp_path / f"{split}.json").write_text(json.dumps(part))
        elif fmt == "csv":
            datasets.Dataset.from_list(part).to_csv(tmp_path / f"{split}.csv")
        elif fmt == "parquet":
            datasets.Dataset.from_list(part).to_parquet(tmp_path / f"{split}.parquet")
    data = load_preference_dataset(DataConfig(dataset_name=str(tmp_path)), tokenizer, args())
    assert len(data.train) == 8 and len(data.eval) == 2
    assert data.train["prompt"][0] == "Q0?"
    assert data.report["train"]["pairs_used"] == 8


def test_single_file_with_eval_fraction_and_max_samples(write_jsonl, tmp_path, tokenizer):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(20)]
    )
    cfg = DataConfig(dataset_name=str(path), eval_fraction=0.25, max_train_samples=5)
    data = load_preference_dataset(cfg, tokenizer, args())
    assert len(data.eval) == 5 and len(data.train) == 5
    assert not set(data.train["prompt"]) & set(data.eval["prompt"])
    again = load_preference_dataset(cfg, tokenizer, args())
    assert again.train["prompt"] == data.train["prompt"]  # seeded, reproducible


def test_broken_json_line_is_named(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Q", "chosen": "a", "rejected": "b"}\n{"prompt": "Q", "chosen": \n')
    with pytest.raises(DataError, match=r"pairs.jsonl, line 2: not valid JSON"):
        read_splits(DataConfig(dataset_name=str(path)))


def test_missing_file_and_missing_split(write_jsonl, tmp_path, tokenizer):
    with pytest.raises(DataError, match="does not exist"):
        read_splits(DataConfig(dataset_name=str(tmp_path / "nope.jsonl")))
    write_jsonl(tmp_path / "validation.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(
        DataError, match=r"no file for split 'train' \(dataset_train_split; found: validation\)"
    ):
        read_splits(DataConfig(dataset_name=str(tmp_path)))


def test_collator_layout():
    collate = PreferenceCollator(pad_token_id=0)
    batch = collate(
        [
            {"prompt_input_ids": [5, 6], "chosen_input_ids": [7], "rejected_input_ids": [8, 9]},
            {"prompt_input_ids": [5], "chosen_input_ids": [7, 7, 7], "rejected_input_ids": [9]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [5, 7, 7, 7], [5, 6, 8, 9], [5, 9, 0, 0]]
    assert batch["labels"].tolist() == [
        [-100, -100, 7, -100],
        [-100, 7, 7, 7],
        [-100, -100, 8, 9],
        [-100, 9, -100, -100],
    ]
    assert batch["attention_mask"].sum(1).tolist() == [3, 4, 4, 2]


def _uf_row(i: int) -> dict:
    """A row as UltraFeedback-binarized lays it out: the prompt string, and both conversations holding it."""
    prompt = f"What is {i} + {i}?"
    return {
        "prompt": prompt,
        "prompt_id": str(i),
        "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(2 * i)}],
        "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "I do not know."}],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }


def _parquet(path, rows):
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(path)


def test_hub_split_files_at_the_top_are_splits(tmp_path, tokenizer):
    """UltraFeedback-binarized's files as the Hub names them: `train_prefs-00000-of-00001.parquet` is split
    train_prefs (train_sft beside it is another split, never mixed in)."""
    for split, n in (("train_prefs", 6), ("test_prefs", 3), ("train_sft", 4)):
        _parquet(tmp_path / f"{split}-00000-of-00001.parquet", [_uf_row(i) for i in range(n)])
    cfg = DataConfig(
        dataset_name=str(tmp_path), dataset_train_split="train_prefs", dataset_test_split="test_prefs"
    )
    data = load_preference_dataset(cfg, tokenizer, args())
    assert len(data.train) == 6 and len(data.eval) == 3
    assert data.report["train"]["source"].endswith("train_prefs-00000-of-00001.parquet")
    assert json.loads(data.train["prompt"][1]) == [{"role": "user", "content": "What is 1 + 1?"}]


def test_sharded_splits_in_a_data_folder_are_read_whole(tmp_path, tokenizer):
    _parquet(tmp_path / "data" / "train-00000-of-00002.parquet", [_uf_row(i) for i in range(4)])
    _parquet(tmp_path / "data" / "train-00001-of-00002.parquet", [_uf_row(i) for i in range(4, 9)])
    _parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [_uf_row(i) for i in range(2)])
    data = load_preference_dataset(DataConfig(dataset_name=str(tmp_path)), tokenizer, args())
    assert len(data.train) == 9 and len(data.eval) == 2  # both shards, in shard order
    assert json.loads(data.train["chosen"][8]) == [{"role": "assistant", "content": "16"}]
    assert (
        "2 files: data/train-00000-of-00002.parquet, data/train-00001-of-00002.parquet"
        in (data.report["train"]["source"])
    )


def test_split_folders_are_found_through_datasets(tmp_path, write_jsonl):
    """A directory with a folder per split (no file at its top): datasets' own inference finds them."""
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    write_jsonl(tmp_path / "train" / "part-a.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    write_jsonl(tmp_path / "test" / "part-a.jsonl", [{"prompt": "R", "chosen": "c", "rejected": "d"}] * 2)
    splits = read_splits(DataConfig(dataset_name=str(tmp_path)))
    assert {split: len(rows) for split, (_, rows) in splits.items()} == {"train": 1, "test": 2}


def test_a_missing_hub_split_lists_the_splits_found(tmp_path):
    for split in ("train_prefs", "test_prefs", "train_sft"):
        _parquet(tmp_path / "data" / f"{split}-00000-of-00001.parquet", [_uf_row(0)])
    with pytest.raises(
        DataError,
        match=r"no file for split 'train' \(dataset_train_split; found: test_prefs, train_prefs, train_sft\)",
    ):
        read_splits(DataConfig(dataset_name=str(tmp_path)))


def test_one_split_in_two_layouts_is_an_error(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    _parquet(tmp_path / "data" / "train-00000-of-00001.parquet", [_uf_row(0)])
    with pytest.raises(DataError, match=r"two files for split 'train' \(train.jsonl and data/train-00000"):
        read_splits(DataConfig(dataset_name=str(tmp_path)))
