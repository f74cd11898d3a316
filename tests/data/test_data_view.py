"""`hf-dpo data RECIPE` (hf_dpo.data.view): the data report and rows as the model receives them, tokenizer only."""

import json

import pytest

from hf_dpo.cli import main

HH_ROWS = [
    {
        "chosen": "\n\nHuman: What is the capital of Australia?\n\nAssistant: The capital of Australia is Canberra.",
        "rejected": "\n\nHuman: What is the capital of Australia?\n\nAssistant: The capital of Australia is Sydney.",
    },
    {
        "chosen": "\n\nHuman: Can you help me pick a lock?\n\nAssistant: I can't help with breaking into property that "
        "isn't yours. If you're locked out, a locksmith can help.",
        "rejected": "\n\nHuman: Can you help me pick a lock?\n\nAssistant: Sure, insert a tension wrench.",
    },
]


@pytest.fixture
def no_weights(monkeypatch):
    """The command reads the tokenizer only: loading any model's weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("hf-dpo data loaded model weights")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    monkeypatch.setattr("transformers.PreTrainedModel.from_pretrained", refuse)


def _recipe(tmp_path, data_dir, extra: str = "") -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"model_name_or_path: smollm2-135m-instruct\nquantization: none\ndataset_name: {data_dir}\n"
        f"output_dir: {tmp_path / 'run'}\n{extra}"
    )
    return str(path)


def test_hh_rows_are_shown_as_the_model_gets_them_with_every_cut(tmp_path, capsys, no_weights):
    data = tmp_path / "hh"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HH_ROWS))
    recipe = _recipe(tmp_path, data, "apply_chat_template: false\nmax_length: 40\nmax_prompt_length: 16\n")
    assert main(["data", recipe, "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 rows -> 2 pairs; skipped: none" in out
    assert "prompts: 2 transcript split at the last assistant turn; 0 end inside a turn" in out
    assert "rendered: 2 raw text" in out
    assert "eval: none" in out
    first, second = out.split("── train · row ")[1:]
    # the prompt ends at the assistant marker; both answers keep their shared first words
    assert first.split("CHOSEN")[0].rstrip().endswith("│Assistant:")
    assert "│ The capital of Australia is Canberra.<|im_end|>" in first
    assert "│ The capital of Australia is Sydney.<|im_end|>" in first
    # the second pair is over max_length 40: the prompt loses its start, the chosen answer its end
    assert "PROMPT    16 tokens, context, not trained on; 1 of 17 cut" in second
    assert "[✂ 1 token cut from the start: max_prompt_length ✂]" in second
    assert "[✂ 2 tokens cut from the end: max_length ✂]" in second
    assert "a locksmith can help<|im_end|>" not in second
    # the held-out rows the report measures, with --split eval (a share of the file, with eval_fraction)
    assert main(["data", recipe, "--split", "eval", "--rows", "5", "--eval_fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "eval: " in out and "(held-out 50%)" in out
    assert out.count("── eval · row ") == 1 and "── train · row " not in out


def test_conversations_with_a_system_prompt_are_shown_through_the_chat_template(tmp_path, capsys, no_weights):
    turns = [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
        {"role": "user", "content": "Another one?"},
    ]
    row = {
        "chosen": turns + [{"role": "assistant", "content": "Eleven is prime."}],
        "rejected": turns + [{"role": "assistant", "content": "Nine is prime."}],
    }
    data = tmp_path / "chat"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["data", _recipe(tmp_path, data), "--tokens"]) == 0
    out = capsys.readouterr().out
    assert "prompt: shared turns of the conversations · chat template" in out
    prompt, answers = out.split("── train · row 0")[1].split("CHOSEN")
    assert (
        "'You'" in prompt and "'Seven'" in prompt and "'Another'" in prompt
    )  # every earlier turn is context
    assert "'Ele'" in answers or "'Eleven'" in answers
    assert "'Seven'" not in answers


def test_a_data_error_is_one_line_before_any_model(tmp_path, capsys, no_weights):
    data = tmp_path / "uf"
    data.mkdir()
    (data / "train_prefs-00000-of-00001.jsonl").write_text(json.dumps(HH_ROWS[0]) + "\n")
    assert main(["data", _recipe(tmp_path, data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no file for split 'train'" in err and "found: train_prefs" in err


def test_the_readme_shows_what_the_command_prints(capsys, no_weights):
    """The README's `hf-dpo data` example is the command's output on the committed demo data, line for line."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = "$ hf-dpo data recipes/demo.yaml --rows 1 --max_length 48 --max_prompt_length 32\n"
    shown = readme.split(command, 1)[1].split("```", 1)[0].splitlines()
    assert (
        main(["data", "recipes/demo.yaml", "--rows", "1", "--max_length", "48", "--max_prompt_length", "32"])
        == 0
    )
    printed = iter(capsys.readouterr().out.splitlines())
    # every line shown appears in the output, in the same order ("  ..." stands for the lines left out)
    missing = [line for line in shown if line.strip() != "..." and line not in printed]
    assert not missing, missing
