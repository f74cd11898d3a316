"""`hf-dpo eval`'s count options are checked by argparse before the run loads."""

from __future__ import annotations

import pytest

from hf_dpo import cli


@pytest.mark.parametrize(
    "option, value, problem",
    [
        ("--max-new-tokens", "0", "must be >= 1, got 0"),
        ("--max-new-tokens", "-5", "must be >= 1, got -5"),
        ("--num-generations", "-1", "must be >= 0, got -1"),
        ("--num-generations", "-1e0", "must be >= 0, got -1"),
        ("--num-generations", "1.5", "expected a whole number, got '1.5'"),
        ("--num-generations", "1e30", "expected a whole number, got '1e30'"),
        ("--max-new-tokens", "1e9", "1000000000 is over 4194304"),
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
    assert exit_.value.code == 2 and f"argument {option}: {problem}" in err, err


def test_eval_counts_written_as_exponents_read_as_the_recipes_int_keys_read_them(tmp_path, monkeypatch):
    # `eval_num_generations: 1e3` in a recipe is 1000; `hf-dpo eval --num-generations 1e3` was refused.
    seen = {}

    def evaluate_run(run_dir, judge=None, num_generations=None, max_new_tokens=None, **elsewhere):
        seen.update(num_generations=num_generations, max_new_tokens=max_new_tokens)
        raise SystemExit(0)

    monkeypatch.setattr("hf_dpo.run.evaluate_run", evaluate_run)
    with pytest.raises(SystemExit):
        cli.main(["eval", str(tmp_path), "--num-generations", "1e3", "--max-new-tokens", "5.12e2"])
    assert seen == {"num_generations": 1000, "max_new_tokens": 512}
