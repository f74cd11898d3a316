"""hf_dpo.errors.quoted: every error message shows a value the user gave cut to a bounded length, in bounded work: a
YAML alias bomb, a megabyte string or a number of thousands of digits gives one short `error:` line at once."""

from __future__ import annotations

import signal
import time

import pytest

from hf_dpo import cli
from hf_dpo.errors import MAX_QUOTED, quoted


def alias_bomb(levels: int = 9) -> str:
    """A flow-style YAML list whose aliases nest: 10**levels items once expanded, from a few hundred bytes."""
    value, previous = "&a0 [x, x, x, x, x, x, x, x, x, x]", "a0"
    for level in range(1, levels + 1):
        value = f"[{value}, &a{level} [{', '.join([f'*{previous}'] * 10)}]]"
        previous = f"a{level}"
    return value


@pytest.fixture
def within_seconds():
    """Fails the test, instead of hanging it, when the command takes longer than the message should."""

    import hf_dpo.plan.estimate  # noqa: F401 - imports take their own time, before the clock starts
    import hf_dpo.run  # noqa: F401

    def timeout(*_):
        raise AssertionError("the command did not return within 20 s")

    signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)


def one_short_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert len(lines[0]) < 700, lines[0][:2000]
    return lines[0]


@pytest.mark.parametrize(
    "recipe",
    [
        f"lora_target_modules: {alias_bomb()}",  # list[str]: validate printed list(value) whole and never returned
        f"loss_weights: {alias_bomb()}",  # list[float]
        f"lr_scheduler_kwargs: {{k: {alias_bomb()}}}",  # a mapping, passed on to transformers' arguments
        f"model_name_or_path: {alias_bomb()}",  # str
        "quantization: " + "x" * 1_000_000,  # a choice
        "max_steps: "
        + "9" * 5000,  # int() of it raises past Python's 4300-digit limit: a ValueError traceback
        "learning_rate: " + "x" * 1_000_000,
        'lora_target_modules: ["' + "q, " * 300_000 + '"]',  # one name with commas: the fix quoted every name
        "x" * 100_000 + ": 1",  # a key
    ],
)
def test_a_huge_recipe_value_gives_one_short_error_at_once(recipe, tmp_path, capsys, within_seconds):
    path = tmp_path / "r.yaml"
    path.write_text(recipe + "\n")
    start = time.monotonic()
    assert cli.main(["train", str(path), "--output_dir", str(tmp_path / "run")]) == 2
    assert time.monotonic() - start < 20
    one_short_error(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "recipes/demo.yaml", "--lr_scheduler_kwargs", alias_bomb()],
        [
            "train",
            "recipes/demo.yaml",
            "--lr_scheduler_kwargs",
            "y" * 100_000,
        ],  # a regex quadratic in its length
        ["train", "recipes/demo.yaml", "--quantization", "q" * 100_000],
        ["train", "recipes/demo.yaml", "--learning_rate", "z" * 100_000],
        ["plan", "recipes/demo.yaml", "--gpu-memory", "g" * 100_000],
        ["push", "runs/none", "--repo-id", "r" * 100_000],
        ["bench", "--data-sets", "d" * 300],  # no such file: an OSError traceback (file name too long)
        ["bench", "--quantization", "q" * 100_000],
        ["bench", "--lines", "l" * 100_000],
    ],
)
def test_a_huge_command_line_value_gives_one_short_error_at_once(argv, capsys, within_seconds, no_model):
    assert cli.main(argv) == 2
    one_short_error(capsys.readouterr().err)


def test_quoted_is_bounded_in_length_and_work():
    nested: list = ["x"] * 10
    for _ in range(40):  # 10**41 items once walked
        nested = [nested] * 10
    start = time.monotonic()
    for value in (nested, "y" * 10**7, 10**5000, {"k" * 10**6: [1.5] * 10**6}, b"\0" * 10**6):
        text = quoted(value)
        assert len(text) <= MAX_QUOTED and "\n" not in text
    assert time.monotonic() - start < 1.0
    assert quoted("4bit") == "'4bit'" and quoted([1, 2]) == "[1, 2]"  # a short value is shown as it is
