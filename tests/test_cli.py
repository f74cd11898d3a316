"""hf_dpo.cli's rewriting of the command line before argparse reads it: option values that start with '-'."""

from __future__ import annotations

import pytest

from hf_dpo import cli


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
