"""Data files and splits as people bring them (hf_dpo/data/reading.py): CSV cells read as the text they hold,
column-oriented JSON, two files for one split, a byte-order mark, datasets saved with save_to_disk, Hub datasets
and their splits, held-out splits that are missing or the train split. Each wrong one ends in one `error:` line
naming the file or split, before any model loads."""

from __future__ import annotations

import json
import re

import pytest


def test_eval_strategy_without_a_held_out_split_is_named_before_the_model_loads(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model
):
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


def test_a_held_out_split_the_recipe_names_but_the_data_lacks_is_named(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model
):
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


def test_a_held_out_split_set_for_a_single_file_is_named(arithmetic_pairs, write_jsonl, tmp_path):
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


def test_a_hub_dataset_without_the_named_held_out_split_is_named(arithmetic_pairs, monkeypatch):
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
def test_a_vision_dataset_is_named_not_trained_on_its_text_alone(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model, column
):
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


def test_a_held_out_split_that_is_the_train_split_is_named(arithmetic_pairs, write_jsonl, tmp_path):
    # Before: the "held-out" metrics before and after training were measured on the training pairs, silently.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import DataError, read_splits

    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    cfg = DataConfig(dataset_name=str(tmp_path / "data"), dataset_test_split="train")
    with pytest.raises(DataError, match=r"dataset_test_split 'train' is the train split.*eval_fraction"):
        read_splits(cfg)


def test_a_dataset_saved_with_save_to_disk_is_read_as_its_splits(arithmetic_pairs, tmp_path):
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


def test_eval_fraction_beside_a_test_split_says_it_is_not_used(
    arithmetic_pairs, write_jsonl, tmp_path, caplog, smollm_dir
):
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


def test_column_oriented_json_with_columns_of_different_lengths_is_named(read_splits_of, tmp_path):
    """Before: zip cut every column to the shortest, and 2 of 3 rows trained without a word."""
    from hf_dpo.data import DataError

    path = tmp_path / "pairs.json"
    path.write_text(
        json.dumps({"prompt": ["a", "b", "c"], "chosen": ["x", "y", "z"], "rejected": ["r", "s"]})
    )
    with pytest.raises(DataError, match=r"pairs\.json: its columns have different lengths.*rejected: 2"):
        read_splits_of(path)


def test_two_files_for_one_split_are_named_not_one_ignored(read_splits_of, write_jsonl, tmp_path):
    """Before: train.json was read and train.jsonl beside it silently ignored."""
    from hf_dpo.data import DataError

    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    (tmp_path / "train.json").write_text(json.dumps([row]))
    write_jsonl(tmp_path / "train.jsonl", [row] * 6)
    with pytest.raises(DataError, match=r"two files for split 'train' \(train\.json and train\.jsonl\)"):
        read_splits_of(tmp_path)


def test_a_split_file_that_cannot_be_opened_is_named_itself(read_splits_of, write_jsonl, tmp_path):
    """Before: 'DIR: cannot be read (No such file or directory)', naming the directory, which exists."""
    from hf_dpo.data import DataError

    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    (tmp_path / "test.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(DataError, match=r"test\.jsonl: cannot be read \(No such file"):
        read_splits_of(tmp_path, dataset_test_split="test")


def test_a_csv_that_cannot_be_parsed_says_why(read_splits_of, tmp_path):
    """Before: 'could not be read as csv: An error occurred while generating the dataset' (datasets' wrapper)."""
    from hf_dpo.data import DataError

    (tmp_path / "pairs.csv").write_text('prompt,chosen,rejected\n"a,b\n')
    with pytest.raises(
        DataError, match=r"pairs\.csv: could not be read as csv \(ParserError: .*EOF inside string"
    ):
        read_splits_of(tmp_path / "pairs.csv")


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


CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: pairs/learn.jsonl
  - split: held_out
    path: [pairs/eval-a.jsonl, pairs/eval-b.jsonl]
- config_name: globbed
  data_files:
  - split: train
    path: "pairs/eval-*.jsonl"
---
# pairs
"""


def _card_dataset(tmp_path, write_jsonl, pairs):
    """A directory whose README.md `configs:` names its splits, with files named unlike them (and a train.jsonl
    the card does not name: the card decides, as `datasets.load_dataset` reads it)."""
    root = tmp_path / "ds"
    write_jsonl(root / "pairs" / "learn.jsonl", pairs[:4])
    write_jsonl(root / "pairs" / "eval-a.jsonl", pairs[4:5])
    write_jsonl(root / "pairs" / "eval-b.jsonl", pairs[5:6])
    write_jsonl(root / "train.jsonl", pairs[:1])
    (root / "README.md").write_text(CARD)
    return root


def test_a_dataset_card_configs_names_the_splits_and_their_files(
    read_splits_of, write_jsonl, arithmetic_pairs, tmp_path
):
    root = _card_dataset(tmp_path, write_jsonl, arithmetic_pairs(6))
    splits = read_splits_of(root, dataset_test_split="held_out")
    assert sorted(splits) == ["held_out", "train"]
    pairs = arithmetic_pairs(6)
    assert splits["train"] == (str(root / "pairs" / "learn.jsonl"), pairs[:4])
    assert splits["held_out"][1] == pairs[4:6]  # both files, in the card's order
    assert "eval-a.jsonl, pairs/eval-b.jsonl" in splits["held_out"][0]
    # another config by dataset_config, its path a glob resolved by datasets
    globbed = read_splits_of(root, dataset_config="globbed", dataset_test_split=None)
    assert globbed["train"][1] == pairs[4:6]


def test_a_data_file_beside_a_card_that_does_not_name_it_is_reported(
    write_jsonl, arithmetic_pairs, tmp_path, caplog
):
    """`hf-dpo sample` writes a card naming train.jsonl only; a test.jsonl copied beside it later is not read (by
    datasets either): the user is told, not left without the held-out split they meant to give."""
    from hf_dpo.data.reading import split_files

    root = tmp_path / "pairs"
    write_jsonl(root / "train.jsonl", arithmetic_pairs(2))
    write_jsonl(root / "test.jsonl", arithmetic_pairs(2))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: train.jsonl\n---\n"
    )
    with caplog.at_level("WARNING", logger="hf_dpo.data.reading"):
        assert split_files(root) == {"train": [root / "train.jsonl"]}
    assert "not read, as README.md's `configs:` do not name them" in caplog.text
    assert "do not name them (datasets reads the card the same way): test.jsonl. Add them" in caplog.text
    caplog.clear()
    (root / "test.jsonl").unlink()
    with caplog.at_level("WARNING", logger="hf_dpo.data.reading"):
        split_files(root)
    assert "not read" not in caplog.text


def test_a_split_or_file_the_card_lacks_is_named_with_what_there_is(
    read_splits_of, write_jsonl, arithmetic_pairs, tmp_path
):
    from hf_dpo.data import DataError

    root = _card_dataset(tmp_path, write_jsonl, arithmetic_pairs(6))
    with pytest.raises(
        DataError, match=r"no file for split 'test_prefs' \(dataset_test_split; found: train, held_out\)"
    ):
        read_splits_of(root, dataset_test_split="test_prefs")
    with pytest.raises(
        DataError, match=r"README.md: no config 'nope' among its configs \(default, globbed\)"
    ):
        read_splits_of(root, dataset_config="nope")
    (root / "pairs" / "eval-b.jsonl").unlink()
    with pytest.raises(DataError, match=r"names pairs/eval-b.jsonl for split 'held_out'"):
        read_splits_of(root, dataset_test_split="held_out")
