"""`hf-dpo eval`'s count options are checked by argparse before the run loads."""

from __future__ import annotations

import pytest

from hf_dpo import cli


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
