"""Rows as people bring them (hf_dpo/data/rows.py): columns the recipe maps but the data lacks, empty and null
cells, string prompts beside whole conversations, prompt messages repeated in both answers, text the tokenizer
cannot encode, and a bad JSON line named by the line an editor shows. Each wrong one ends in one `error:` line
naming the file, row or column, before any model loads."""

from __future__ import annotations

import json
import re

import pytest


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_a_split_without_the_mapped_columns_names_them_not_a_row(
    one_error, train, write_jsonl, tmp_path, capsys, no_model, on_bad_rows
):
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


def test_a_held_out_split_without_the_columns_is_named(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model
):
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    write_jsonl(tmp_path / "data" / "test.jsonl", [{"prompt": "p", "good": "a", "bad": "b"}] * 2)
    rc, err = train(tmp_path, capsys, "on_bad_rows: skip\n")
    assert rc == 2 and re.search(r"test.jsonl: no column 'chosen'", one_error(err))


def test_a_prompt_column_set_to_a_column_the_data_lacks_is_named(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model
):
    # Before: every row fell back to the implicit prompt (the shared start of chosen and rejected), so the error
    # was "row 0, column 'question': no prompt column and chosen/rejected share no prefix", or, where the
    # answers did share a start, the recipe's mapping was silently ignored.
    write_jsonl(tmp_path / "data" / "train.jsonl", arithmetic_pairs(4))
    rc, err = train(tmp_path, capsys, "prompt_column: question\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"train.jsonl: no column 'question' \(columns: chosen, prompt, rejected\)", line), line
    assert "prompt_column" in line


def test_an_empty_csv_cell_is_an_empty_response_named_by_row(one_error, train, tmp_path, capsys, no_model):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("prompt,chosen,rejected\nq1,a,b\nq2,,d\n")
    rc, err = train(tmp_path, capsys)
    assert rc == 2 and re.search(r"train.csv, row 1, column 'chosen': empty response", one_error(err))


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


def test_a_null_prompt_in_a_dataset_with_prompts_is_named_not_guessed(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model
):
    # One row's prompt lost (null): it was taken from the shared start of its answers, "The answer is " here,
    # and trained on as the prompt, silently.
    rows = arithmetic_pairs(3) + [
        {"prompt": None, "chosen": "The answer is 4", "rejected": "The answer is 5"}
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    rc, err = train(tmp_path, capsys)
    assert rc == 2
    assert re.search(r"train.jsonl, row 3, column 'prompt': missing value", one_error(err))


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


def test_a_conversation_prompt_with_no_text_is_an_empty_prompt_as_a_string_one_is():
    # Before: a prompt string of spaces was "empty prompt", the same as one user message of spaces passed.
    from hf_dpo.config import DataConfig
    from hf_dpo.data import BadRow, normalize_row

    row = {"prompt": [{"role": "user", "content": "  \n"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(BadRow, match="empty prompt"):
        normalize_row(row, DataConfig())


@pytest.mark.parametrize("eval_fraction", [None, "0.5"])
def test_a_bad_jsonl_row_is_also_named_by_the_line_an_editor_shows(
    arithmetic_pairs, one_error, train, write_jsonl, tmp_path, capsys, no_model, eval_fraction
):
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


@pytest.mark.parametrize("column", ["prompt", "chosen"])
def test_a_lone_surrogate_in_a_row_is_named_before_the_tokenizer(read_splits_of, tmp_path, column):
    """'\\ud800' in the JSON: before, the row passed every check and the tokenizer raised TypeError ('TextEncodeInput
    must be Union[...]') from inside transformers once the model was loaded."""
    from hf_dpo.config import DataConfig
    from hf_dpo.data import BadRow, normalize_row

    row = {"prompt": "p", "chosen": "a", "rejected": "b"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row).replace(f'"{row[column]}"', f'"{row[column]}\\ud800"') + "\n")
    (parsed,) = (r for _, rows in read_splits_of(path).values() for r in rows)
    with pytest.raises(BadRow, match="surrogate") as bad:
        normalize_row(parsed, DataConfig())
    assert bad.value.column == column
    messages = {"prompt": [{"role": "user", "content": "p\ud800"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(BadRow, match="surrogate"):
        normalize_row(messages, DataConfig())
