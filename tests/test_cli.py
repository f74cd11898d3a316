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
