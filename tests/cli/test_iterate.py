"""`hf-dpo iterate`: rounds of sample -> label -> train on the tiny random Llama, with a rule judge; resuming,
refusals, the checks before any model loads, the rounds table of the report and the card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_dpo import cli
from hf_dpo.config import load_recipe
from hf_dpo.hub.public_files import files_to_push
from hf_dpo.hub.run_card import refresh_card
from hf_dpo.iterate import recipe_identity
from hf_dpo.pairs.formats import read_samples
from tests.run_fixtures import write_pairs


def brevity_judge(prompt, completion):
    """A rule judge that tells the tiny model's random answers apart: shorter is better, a short one is 'brief'."""
    return {"short": -float(len(completion)), "brief": float(len(completion.split()) <= 3)}


brevity_judge.criteria = ("short", "brief")

JUDGE = f"{__name__}:brevity_judge"


def iterate_recipe(tmp_path: Path, model_dir: str, dataset: bool = True) -> Path:
    """An iterate recipe on the tiny Llama: round 1 on the capitals pairs (`dataset`) or sampled, 2 steps a round,
    3 samples of 6 tokens for each of 4 train and 2 held-out prompts, reports judged on the 2 held-out prompts."""
    (tmp_path / "train.txt").write_text(
        "What is the capital of Peru?\nName a prime number.\nWhat is 2 + 3?\nSay hello.\n"
    )
    (tmp_path / "test.txt").write_text("What is the capital of Chile?\nWhat is 4 + 4?\n")
    data = ""
    if dataset:
        (tmp_path / "data").mkdir(exist_ok=True)
        write_pairs(tmp_path / "data")
        data = f"dataset_name: {tmp_path / 'data'}\n"
    path = tmp_path / "iterate.yaml"
    path.write_text(
        f"model_name_or_path: {model_dir}\nquantization: none\nlora_r: 4\nlora_alpha: 8\n"
        "lora_target_modules: [q_proj, v_proj]\n"
        f"{data}max_length: 64\n"
        "max_steps: 2\nper_device_train_batch_size: 2\nper_device_eval_batch_size: 4\nlearning_rate: 0.05\n"
        "report_to: none\nsave_strategy: 'no'\ndisable_tqdm: true\n"
        f"prompts_file: {tmp_path / 'train.txt'}\ntest_prompts_file: {tmp_path / 'test.txt'}\n"
        "num_samples_per_prompt: 3\nmax_new_tokens: 6\nsampling_batch_size: 1\n"
        "pairs_per_prompt: all\nallow_unfinished_chosen: true\n"  # the random model never ends in 6 tokens
        f"judge: {JUDGE}\neval_num_generations: 2\neval_max_new_tokens: 6\n"
        f"output_dir: {tmp_path / 'iter'}\n"
    )
    return path


def iterate(recipe: Path, rounds: int, *overrides: str) -> int:
    return cli.main(["iterate", str(recipe), "--rounds", str(rounds), *overrides])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_rounds_sample_from_train_from_and_judge_against_the_last_round(tmp_path, tiny_model_dir, capsys):
    recipe = iterate_recipe(tmp_path, tiny_model_dir)
    assert iterate(recipe, 2) == 0
    out = tmp_path / "iter"
    one, two = out / "round_1", out / "round_2"
    # Round 1 trained on the recipe's dataset and sampled nothing; round 2 on pairs sampled from round 1's adapter.
    assert json.loads((one / "run_info.json").read_text())["dataset"] == str(tmp_path / "data")
    assert not (one / "samples_train.jsonl").exists()
    samples = read_samples(two / "samples_train.jsonl")
    assert len(samples) == 4 and {row["settings"]["adapter"] for row in samples} == {str(one)}
    pairs = jsonl(two / "pairs" / "train.jsonl")
    assert pairs and all(len(p["chosen"]) < len(p["rejected"]) for p in pairs)  # the judge's order
    info = json.loads((two / "run_info.json").read_text())
    assert info["dataset"] == str(two / "pairs") and info["num_train_pairs"] == len(pairs)
    assert info["num_eval_pairs"] == len(jsonl(two / "pairs" / "test.jsonl"))
    # Round 2 started from round 1's adapter, which is its reference: before its first step the policy equals
    # the reference, and the reference answers the held-out prompts exactly as round 1's policy did.
    recipe_two = (two / "recipe.yaml").read_text()
    assert f"adapter_name_or_path: {one}" in recipe_two
    assert info["eval_before"]["policy_is_reference"] and not info["eval_after"]["policy_is_reference"]
    gen_one, gen_two = jsonl(one / "eval_generations.jsonl"), jsonl(two / "eval_generations.jsonl")
    assert [g["reference"]["answer"] for g in gen_two] == [g["policy"]["answer"] for g in gen_one]
    assert [g["policy"]["answer"] for g in gen_two] != [g["policy"]["answer"] for g in gen_one]
    # One report, one row a round, each number its round's own report's.
    rows = json.loads((out / "iterate_report.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2] and [r["started_from"] for r in rows] == [
        "the starting model",
        "round_1",
    ]
    for row, run in zip(rows, (one, two)):
        report = json.loads((run / "eval_report.json").read_text())
        assert row["verdict"]["line"] == report["verdict"]["line"]
        assert row["reward_accuracy"] == report["preference"]["metrics"]["reward_accuracy"]
        for name in ("short", "brief"):
            crit = report["behaviour"]["per_criterion"][name]
            assert row["criteria"][name] == {
                "policy": crit["policy"]["value"],
                "reference": crit["reference"]["value"],
            }
    assert rows[1]["sampling"]["pairs"] == len(pairs) and rows[0]["sampling"] is None
    text = (out / "iterate_report.md").read_text()
    assert "| 2 | `round_1` | " in text and f"{len(pairs)} of {len(pairs)} sampled" in text
    assert f"- Round 2: {rows[1]['verdict']['line']}" in text
    # The last round's card carries the rounds table; round 1's, its own row only.
    card = (two / "README.md").read_text()
    assert "Iterative DPO: the rounds so far" in card and "| 1 | the starting model |" in card
    assert "| 2 | `round_1` |" in card
    assert "| 2 | `round_1` |" not in (one / "README.md").read_text()
    assert Path("iterate_rounds.json") in files_to_push(two)  # the card's table goes to the Hub with its rows
    # `hf-dpo eval` rewriting round 2's report later: its card's own row tells the report as it is now.
    report = json.loads((two / "eval_report.json").read_text())
    report["verdict"]["line"] = "Verdict: improved on short: judged again."
    (two / "eval_report.json").write_text(json.dumps(report))
    refresh_card(two)
    assert "- Round 2: Verdict: improved on short: judged again." in (two / "README.md").read_text()
    assert "Rounds side by side:" in capsys.readouterr().out


def test_a_rerun_resumes_keeps_finished_rounds_and_refuses_to_replace_them(
    tmp_path, tiny_model_dir, monkeypatch, capsys, one_error
):
    """Round 1 sampled from the starting model (no dataset). Interrupted inside round 2's sampling, then inside
    round 2's training: each rerun of the same command keeps round 1 as it is, resumes the samples, and trains
    round 2 again. A finished iterate, or a changed recipe, is refused; more --rounds add rounds."""
    import hf_dpo.iterate
    import hf_dpo.pairs.sampling

    recipe = iterate_recipe(tmp_path, tiny_model_dir, dataset=False)
    out = tmp_path / "iter"
    real_rows, calls = hf_dpo.pairs.sampling._sample_rows, []

    def interrupted_rows(*args, **kwargs):  # one prompt a batch: round 1 samples 6, round 2 stops at its 4th
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_rows(*args, **kwargs)

    monkeypatch.setattr(hf_dpo.pairs.sampling, "_sample_rows", interrupted_rows)
    with pytest.raises(KeyboardInterrupt):
        iterate(recipe, 2)
    state = json.loads((out / "iterate_state.json").read_text())
    assert state["rounds"]["1"]["finished"] and "2" not in state["rounds"]
    assert (out / "round_1" / "run_info.json").is_file() and not (out / "round_2" / "run_info.json").exists()
    assert len(read_samples(out / "round_2" / "samples_train.jsonl")) == 1
    round_one = {p.name: p.stat().st_mtime_ns for p in (out / "round_1").iterdir() if p.is_file()}
    monkeypatch.setattr(hf_dpo.pairs.sampling, "_sample_rows", real_rows)

    real_training, trained, kills = hf_dpo.iterate.run_training, [], [KeyboardInterrupt]

    def training_interrupted_after_its_run(path, overrides):
        trained.append(dict(zip(overrides[::2], overrides[1::2]))["--output_dir"])  # the last one given
        run_dir = real_training(path, overrides)
        if kills:  # killed once, after the run was written and before iterate recorded the round
            raise kills.pop()
        return run_dir

    monkeypatch.setattr(hf_dpo.iterate, "run_training", training_interrupted_after_its_run)
    with pytest.raises(KeyboardInterrupt):
        iterate(recipe, 2)
    sampled = json.loads((out / "iterate_state.json").read_text())["rounds"]["2"]["sampling"]
    assert sampled["resumed"] == 3 and sampled["prompts"] == 6  # 2 held-out + 1 train prompt sampled before
    assert [row["index"] for row in read_samples(out / "round_2" / "samples_train.jsonl")] == [0, 1, 2, 3]
    assert iterate(recipe, 2) == 0
    assert trained == [str(out / "round_2")] * 2  # round 2 trained again; round 1 never
    assert round_one == {p.name: p.stat().st_mtime_ns for p in (out / "round_1").iterdir() if p.is_file()}
    rows = json.loads((out / "iterate_report.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2] and rows[0]["sampling"]["pairs"] > 0
    assert {row["settings"]["adapter"] for row in read_samples(out / "round_1" / "samples_train.jsonl")} == {
        None
    }
    assert "(3 of 6 prompts sampled before)" in (out / "iterate_report.md").read_text()
    capsys.readouterr()

    # The same command again: refused, naming what to do; nothing is touched.
    report_before = (out / "iterate_report.md").read_text()
    assert iterate(recipe, 2) == 2
    err = one_error(capsys.readouterr().err)
    assert "holds a finished iterate of 2 rounds" in err and "overwrite_output_dir: true" in err
    assert "--rounds 3 or more" in err
    # A changed recipe: refused, naming the key and both values.
    assert iterate(recipe, 3, "--beta", "0.2") == 2
    err = one_error(capsys.readouterr().err)
    assert "another recipe" in err and "key 'beta': not set then, 0.2 now" in err
    assert (out / "iterate_report.md").read_text() == report_before
    # More rounds: round 3 alone, from round 2's adapter.
    trained.clear()
    assert iterate(recipe, 3) == 0
    assert trained == [str(out / "round_3")]
    rows = json.loads((out / "iterate_report.json").read_text())["rounds"]
    assert [r["started_from"] for r in rows] == ["the starting model", "round_1", "round_2"]
    assert "| 3 | `round_2` |" in (out / "round_3" / "README.md").read_text()


def raising_judge(prompt, completion):
    raise RuntimeError("judge service down")


@pytest.fixture
def nothing_runs(monkeypatch, no_model):
    """Fails the test if a round starts sampling or training, or any model loads: the checks all come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a round started before every round's settings were checked")

    for name in ("run_sampling", "run_training"):
        monkeypatch.setattr(f"hf_dpo.iterate.{name}", refuse)
    monkeypatch.setattr("hf_dpo.pairs.sampling.load_reference", refuse)


@pytest.mark.parametrize(
    "dataset, overrides, expected",
    [
        (False, ["--judge", "null"], "key 'judge': iterate labels each round's samples"),
        (True, ["--prompts_file", "null"], "key 'prompts_file': rounds 2 and later sample"),
        (
            False,
            ["--samples_file", "s.jsonl"],
            "key 'samples_file' ('s.jsonl'): each round writes its samples",
        ),
        (False, ["--pairs_file", "p/train.jsonl"], "key 'pairs_file' ('p/train.jsonl'): each round writes"),
        (False, ["--use_peft", "false"], "key 'use_peft': iterate trains a LoRA adapter"),
        (
            False,
            ["--push_to_hub", "true", "--hub_model_id", "me/x"],
            "key 'push_to_hub': iterate does not push",
        ),
        (False, ["--resume_from_checkpoint", "true"], "key 'resume_from_checkpoint' ('true'): a rerun"),
        (
            False,
            ["--prompt_column", "question"],
            "key 'prompt_column' ('question'): the pairs iterate samples",
        ),
        (False, ["--judge", f"{__name__}:raising_judge"], "tried on the first prompt of prompts_file"),
        (False, ["--judge", "no_such_module:judge"], "judge 'no_such_module:judge': cannot import"),
        (False, ["--lora_target_modules", "[nope]"], "nope"),  # a training key of a round with no pairs yet
        (False, ["--test_prompts_file", "missing.txt"], "missing.txt"),
        (True, ["--dataset_test_split", "validation"], "validation"),  # round 1 reads the recipe's data
    ],
)
def test_every_rounds_settings_are_checked_before_any_model_loads(
    tmp_path, tiny_model_dir, capsys, one_error, nothing_runs, dataset, overrides, expected
):
    recipe = iterate_recipe(tmp_path, tiny_model_dir, dataset=dataset)
    assert iterate(recipe, 2, *overrides) == 2
    assert expected in one_error(capsys.readouterr().err)
    assert not (tmp_path / "iter").exists()  # no state, no round


def test_a_ref_model_beside_the_rounds_own_reference_is_refused(
    tmp_path, tiny_model_dir, capsys, one_error, nothing_runs
):
    recipe = iterate_recipe(tmp_path, tiny_model_dir)
    assert iterate(recipe, 2, "--ref_model_name_or_path", tiny_model_dir) == 2
    assert "key 'ref_model_name_or_path'" in one_error(capsys.readouterr().err)


def test_an_output_dir_this_command_cannot_resume_is_refused(
    tmp_path, tiny_model_dir, capsys, one_error, nothing_runs
):
    recipe = iterate_recipe(tmp_path, tiny_model_dir)
    foreign = tmp_path / "iter" / "round_1"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    assert iterate(recipe, 2) == 2
    err = one_error(capsys.readouterr().err)
    assert "holds round_1 but no iterate_state.json" in err and "overwrite_output_dir: true" in err
    (tmp_path / "iter" / "iterate_state.json").write_text("[1, 2]")
    assert iterate(recipe, 2) == 2
    assert "is not an iterate state file hf-dpo wrote" in one_error(capsys.readouterr().err)
    assert (foreign / "notes.txt").read_text() == "mine"
    # A state of this very recipe whose finished round lost its run files: round 2 would start from nothing.
    state = {"recipe": recipe_identity(load_recipe(recipe)), "rounds": {"1": {"finished": True}}}
    (tmp_path / "iter" / "iterate_state.json").write_text(json.dumps(state))
    assert iterate(recipe, 2) == 2
    assert "records round_1 as finished, but its run_info.json is gone" in one_error(capsys.readouterr().err)


def test_overwrite_output_dir_starts_a_finished_iterate_afresh(tmp_path, tiny_model_dir, monkeypatch):
    """With overwrite_output_dir: true a finished iterate's rounds are removed and every round runs again (its
    samples too: the adapter they came from is retrained)."""
    import hf_dpo.iterate

    recipe = iterate_recipe(tmp_path, tiny_model_dir)
    out = tmp_path / "iter"
    rounds = [round_dir for round_dir in (out / "round_1", out / "round_2")]
    for run_dir in rounds:
        (run_dir / "pairs").mkdir(parents=True)
        (run_dir / "samples_train.jsonl").write_text("{}\n")
    state = {"recipe": {"beta": 0.5}, "rounds": {"1": {"finished": True}, "2": {"finished": True}}}
    (out / "iterate_state.json").write_text(json.dumps(state))
    started = []
    monkeypatch.setattr(hf_dpo.iterate, "sample_round", lambda plan: started.append(plan.number) or {})

    def stop(path, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_dpo.iterate, "run_training", stop)
    with pytest.raises(KeyboardInterrupt):
        iterate(recipe, 2, "--overwrite_output_dir", "true")
    assert not (out / "round_2").exists() and not (out / "round_1" / "samples_train.jsonl").exists()
    fresh = json.loads((out / "iterate_state.json").read_text())
    assert (
        fresh["rounds"] == {}
        and "beta" not in fresh["recipe"]
        and "overwrite_output_dir" not in fresh["recipe"]
    )


def test_iterate_help_and_its_rounds(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["iterate", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--rounds" in text and "output_dir/round_K/" in text and "round k-1's policy as the reference" in text
    )
    with pytest.raises(SystemExit):
        cli.main(["iterate", "recipe.yaml", "--rounds", "0"])
    assert "--rounds: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_two_rounds_on_smollm2_in_4bit_judge_round_two_against_round_ones_answers(tmp_path, smollm_dir):
    """The demo model as the product runs it (4-bit base, decoding from its dequantized copy): round 2's reference
    gives round 1's policy's greedy answers, word for word."""
    (tmp_path / "train.txt").write_text("What is the capital of Peru?\nWhat is 2 + 3?\nName a colour.\n")
    (tmp_path / "test.txt").write_text("What is the capital of Chile?\nWhat is 4 + 4?\n")
    recipe = tmp_path / "iterate.yaml"
    recipe.write_text(
        f"model_name_or_path: {smollm_dir}\nquantization: 4bit\nlora_r: 4\nlora_alpha: 8\n"
        "lora_target_modules: [q_proj, v_proj]\nmax_length: 96\nmax_steps: 1\nper_device_train_batch_size: 2\n"
        "learning_rate: 0.01\nreport_to: none\nsave_strategy: 'no'\ndisable_tqdm: true\n"
        f"prompts_file: {tmp_path / 'train.txt'}\ntest_prompts_file: {tmp_path / 'test.txt'}\n"
        "num_samples_per_prompt: 2\nmax_new_tokens: 12\npairs_per_prompt: all\nallow_unfinished_chosen: true\n"
        f"judge: {JUDGE}\neval_num_generations: 2\neval_max_new_tokens: 12\noutput_dir: {tmp_path / 'iter'}\n"
    )
    assert iterate(recipe, 2) == 0
    one, two = tmp_path / "iter" / "round_1", tmp_path / "iter" / "round_2"
    gen_one, gen_two = jsonl(one / "eval_generations.jsonl"), jsonl(two / "eval_generations.jsonl")
    assert [g["reference"]["answer"] for g in gen_two] == [g["policy"]["answer"] for g in gen_one]
    assert {row["settings"]["adapter"] for row in read_samples(two / "samples_train.jsonl")} == {str(one)}
