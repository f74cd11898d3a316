"""hf_dpo.cli's rewriting of the command line before argparse reads it: option values that start with '-'."""

from __future__ import annotations

import pytest

from hf_dpo import cli
from hf_dpo.argv import NEGATIVE_NUMBER


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # a value starting with '-' reaches the command (its own check names the option)
        (["plan", "r.yaml", "--gpu-memory", "-5GB"], ["plan", "r.yaml", "--gpu-memory=-5GB"]),
        (["label", "s.jsonl", "--out", "-"], ["label", "s.jsonl", "--out=-"]),  # same value argparse gave
        (["label", "s.jsonl", "--port", "-1"], ["label", "s.jsonl", "--port=-1"]),
        (["push", "r", "--commit-message", "-x"], ["push", "r", "--commit-message=-x"]),
        # untouched: already attached, recipe overrides (not argparse options), after '--', -h
        (["plan", "r.yaml", "--gpu-memory=-5GB"], ["plan", "r.yaml", "--gpu-memory=-5GB"]),
        (["train", "r.yaml", "--output_dir", "x", "--learning_rate", "-1"], None),
        (["-v", "label", "--", "--out", "-x"], None),
        (["label", "s.jsonl", "--out", "-h"], None),
        # an option of the command is never taken as a value, however it is spelled
        (["push", "r", "--repo-id", "me/x", "--commit-message", "--revision=dev"], None),
        (["push", "r", "--repo-id", "me/x", "--commit-message", "--priv"], None),  # --private, abbreviated
        (["label", "s.jsonl", "--out", "--po", "0"], None),  # --port, abbreviated
        (["label", "s.jsonl", "--out", "-hx"], None),  # -h with x stuck on
        (["plan", "r.yaml", "--gpu-memory", "--max_length", "512"], None),  # a recipe key
    ],
)
def test_attach_dash_values(argv, expected):
    """Before: `--commit-message --revision=dev` became `--commit-message=--revision=dev` (pushing to main with
    that message instead of argparse's "expected one argument"), and so did an abbreviated option or, for plan,
    a recipe key."""
    assert cli._attach_dash_values(cli.build_parser(), argv) == (argv if expected is None else expected)


def test_push_with_a_missing_commit_message_pushes_nothing(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr("hf_dpo.hub.push.push_run", lambda *args, **kwargs: calls.append(kwargs))
    argv = ["push", str(tmp_path), "--repo-id", "me/x", "--commit-message", "--revision=dev"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and calls == []
    assert "argument --commit-message: expected one argument" in capsys.readouterr().err
    assert cli.main([*argv[:-1], "-m dev"]) == 0  # a value that starts with '-' still gets through
    assert calls[0]["commit_message"] == "-m dev" and calls[0]["revision"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--learning_rate", "-1e-3"], "key 'learning_rate': must be >= 0, got -0.001."),
        (["--beta", "-.5"], "key 'beta': must be > 0, got -0.5."),
        (["--beta", "-5E-1"], "key 'beta': must be > 0, got -0.5."),
        (["--max_steps", "-2"], "key 'max_steps': must be in [-1, 100000000]"),
        (["--lora_r", "-1_000"], "key 'lora_r': must be in [1, 65536], got -1000."),
        (["--learning_rate", "-inf"], "key 'learning_rate': must be a finite number, got -inf."),
        (["--adam_epsilon", "-NaN"], "key 'adam_epsilon': must be a finite number"),
        (["--loss_weights", "1", "-1e-3"], "loss_weights has 2 weights for 1 loss types"),
        (["--x", "-inf"], "unknown key 'x'"),
    ],
)
def test_negative_numbers_in_any_form_reach_the_check_of_their_key(override, message, capsys):
    """argparse took `-1e-3`, `-.5e1`, `-inf`, `-1_000` for options ("expected one argument"); every form float()
    reads is a value, so the key's own check says what is wrong with it."""
    assert cli.main(["plan", "recipes/demo.yaml", "--loss_type", "sigmoid", *override]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err and "expected at least one argument" not in err
    assert message in err


@pytest.mark.parametrize("value", ["-1e-3", "-.5", "-1_0", "-inf", "-Infinity", "-nan"])
def test_negative_numbers_are_values_of_the_subcommands_own_options(value):
    """The same for the subcommands' own options, as argparse reads them; a word after '-' stays an option."""
    parser = cli.build_parser()
    assert (
        parser.parse_args(["push", "r", "--repo-id", "me/x", "--commit-message", value]).commit_message
        == value
    )
    assert parser.parse_args(["plan", "r.yaml", "--gpu-memory", value]).gpu_memory == value
    assert parser.parse_args(["bench", "--data-sets", "demo", value]).data_sets == ["demo", value]
    for option in ("-e5", "--1", "-i", "-h1"):
        assert NEGATIVE_NUMBER.match(option) is None


def test_merge_names_its_own_dtype_option(capsys, tmp_path):
    # --dtype float64 was reported as "torch_dtype 'float64' is not one of ...", a key the command has not.
    with pytest.raises(SystemExit):
        cli.main(["merge", str(tmp_path), str(tmp_path / "out"), "--dtype", "float64"])
    assert "argument --dtype: invalid choice: 'float64'" in capsys.readouterr().err


def test_keys_lists_every_recipe_key_once_by_section_one_line_each(capsys):
    """`hf-dpo keys` was argparse's help of every key (1,006 lines, wrapped): now one line a key under the
    recipe's sections, and `hf-dpo keys WORD` gives the matching keys' whole help."""
    import dataclasses

    from hf_dpo.config import RECIPE_SECTIONS, all_field_names

    assert cli.main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("# ")]
    assert [h.split(":")[0] for h in headers] == [
        "# model",
        "# data",
        "# training",
        "# training",
        "# sampling",
        "# report",
    ]
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    keys = [f.name for section in RECIPE_SECTIONS for f in dataclasses.fields(section) if f.init]
    assert sorted(listed) == sorted(set(keys)) == sorted(all_field_names())  # each key once, on its own line
    assert len(lines) == len(listed) + 2 * len(headers)  # a header and a blank line per section, nothing else
    beta = next(line for line in lines if line.startswith("  beta "))
    assert beta.split()[1] == "0.1" and beta.endswith("the KL pull towards the reference")
    section_of = {}
    for line in lines:
        if line.startswith("# "):
            current = line
        elif line.startswith("  "):
            section_of[line.split()[0]] = current
    assert section_of["lora_r"].startswith("# model") and section_of["judge"].startswith("# report")
    assert "DPO objective" in section_of["beta"] and "TrainingArguments" in section_of["adam_beta1"]
    assert cli.main(["keys", "beta"]) == 0
    whole = capsys.readouterr().out
    assert "the KL pull towards the reference. Lower: drift further." in whole and "lora_r " not in whole


FAST_COMMANDS = {
    "--help": (["--help"], 0, ""),
    "keys": (["keys"], 0, ""),
    "keys WORD": (["keys", "beta"], 0, ""),
    "a misspelled recipe key": (["train", "{bad_key}"], 2, "unknown key 'lora_rank'. Did you mean"),
    "a misspelled override": (
        ["plan", "recipes/demo.yaml", "--lerning_rate", "1"],
        2,
        "command line: unknown key",
    ),
    "a recipe that is not YAML": (["sample", "{not_yaml}"], 2, "is not valid YAML"),
    "a missing recipe": (["train", "nowhere.yaml"], 2, "does not exist"),
    "a bad value in the recipe": (
        ["train", "{bad_value}"],
        2,
        "{bad_value}: key 'beta': must be > 0, got -1.",
    ),
    "a bad override": (
        ["plan", "recipes/demo.yaml", "--lora_r", "0"],
        2,
        "command line: key 'lora_r': must be in",
    ),
    "an override that is no number": (
        ["train", "recipes/demo.yaml", "--beta", "abc"],
        2,
        "command line: key 'beta': expected a number, got 'abc'.",
    ),
    "an unknown loss": (
        ["data", "recipes/demo.yaml", "--loss_type", "nope"],
        2,
        "loss_type ['nope'] is not a",
    ),
    "keys that clash": (
        ["sample", "recipes/demo.yaml", "--max_length", "64", "--max_prompt_length", "64"],
        2,
        "key 'max_prompt_length': must be below max_length (64)",
    ),
    "a missing data file": (
        ["data", "recipes/demo.yaml", "--dataset_name", "{data_dir}/nope.jsonl"],
        2,
        "Dataset file {data_dir}/nope.jsonl does not exist.",
    ),
    "a split the data lacks": (
        ["data", "recipes/demo.yaml", "--dataset_train_split", "nope"],
        2,
        "recipes/data/demo: no file for split 'nope' (dataset_train_split; found: test, train)",
    ),
    "a row without chosen, planned": (
        ["plan", "recipes/demo.yaml", "--dataset_name", "{data_dir}", "--dataset_test_split", "null"],
        2,
        "{data_dir}/train.jsonl, row 1, column 'chosen': missing value",
    ),
    "a row without chosen": (
        ["data", "recipes/demo.yaml", "--dataset_name", "{data_dir}", "--dataset_test_split", "null"],
        2,
        "{data_dir}/train.jsonl, row 1, column 'chosen': missing value (row 1 is line 2 of the file)",
    ),
}


@pytest.mark.parametrize("case", FAST_COMMANDS)
def test_commands_answer_without_importing_torch_or_transformers(case, tmp_path):
    """`--help`, `keys`, the recipe errors a command finds before it loads anything (YAML, keys, the values of
    hf_dpo's own sections) and, for `hf-dpo data`, the data's (a missing file, a split not there, a bad row) answer
    without importing the training stack (torch, transformers, peft, bitsandbytes, datasets: ~15 s on 2 cores),
    naming the file, key or row, checked in a fresh interpreter through sys.modules."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "bad.yaml").write_text("model_name_or_path: x\nlora_rank: 4\n")
    (tmp_path / "not.yaml").write_text("beta: [0.1\n")
    (tmp_path / "value.yaml").write_text("model_name_or_path: smollm2-135m-instruct\nbeta: -1\n")
    (tmp_path / "data").mkdir()
    pair = '{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n'
    (tmp_path / "data" / "train.jsonl").write_text(pair + pair.replace('"chosen": "4", ', ""))
    argv, rc, message = FAST_COMMANDS[case]
    places = dict(
        bad_key=tmp_path / "bad.yaml",
        not_yaml=tmp_path / "not.yaml",
        bad_value=tmp_path / "value.yaml",
        data_dir=tmp_path / "data",
    )
    argv, message = [a.format(**places) for a in argv], message.format(**places)
    heavy = ["torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate"]
    code = (
        "import contextlib, io, json, sys\n"
        "from hf_dpo import cli\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
        "    try:\n"
        f"        rc = cli.main({argv!r})\n"
        "    except SystemExit as exit:\n"
        "        rc = exit.code\n"
        f"print(json.dumps({{'rc': rc, 'err': err.getvalue(), 'heavy': [m for m in {heavy!r} if m in sys.modules]}}))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["rc"] == rc and message in out["err"], out
    assert out["heavy"] == [], f"{case} imported {out['heavy']}"
