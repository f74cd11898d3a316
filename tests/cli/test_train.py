"""`hf-dpo train` end to end: recipe + overrides -> run dir with adapter, recipe, state and run info."""

import json

import pytest
import yaml

from hf_dpo.cli import main

PAIRS = [
    {
        "prompt": f"What is {a} + {b}?",
        "chosen": str(a + b),
        "rejected": f"I believe {a} plus {b} is {a + b + 3}.",
    }
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 4), (6, 1), (3, 9), (8, 8)]
]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:8]))
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS[8:]))
    return d


def write_recipe(tmp_path, model, data_dir, **extra):
    values = {
        "model_name_or_path": model,
        "quantization": "none",
        "lora_r": 4,
        "dataset_name": str(data_dir),
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text("# hf-dpo train recipe.yaml\n" + yaml.safe_dump(values))
    return path


def test_train_writes_a_complete_run_dir(tmp_path, tiny_model_dir, data_dir, capsys, monkeypatch):
    from hf_dpo.model import loading

    tokenizer_loads = []
    load_tokenizer = loading.load_tokenizer
    monkeypatch.setattr(
        loading, "load_tokenizer", lambda cfg: tokenizer_loads.append(1) or load_tokenizer(cfg)
    )
    recipe = write_recipe(tmp_path, tiny_model_dir, data_dir, max_steps=1)
    assert main(["train", str(recipe), "--max_steps", "3", "--hub_token", "hf_should_not_leak"]) == 0
    assert tokenizer_loads == [1]  # preflight's tokenizer, which tokenized the data, is the one trained with
    run = tmp_path / "run"
    for name in (
        "recipe.yaml",
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_state.json",
        "run_info.json",
    ):
        assert (run / name).is_file(), name
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_steps"] == 3  # the override won over the recipe's max_steps: 1
    assert info["num_train_pairs"] == 8 and info["num_eval_pairs"] == 2
    assert info["compute_dtype"] == "float32"
    assert info["eval_before"]["reward_accuracy"] == 0.0  # policy == reference before training
    assert info["eval_before"]["policy_is_reference"] and not info["eval_after"]["policy_is_reference"]
    assert info["eval_after"]["num_pairs"] == 2
    assert info["data_report"]["train"]["pairs_used"] == 8
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["max_steps"] == 3 and "hub_token" not in saved
    for path in run.rglob("*"):
        if path.is_file():
            assert b"hf_should_not_leak" not in path.read_bytes(), path
    out = capsys.readouterr().out
    assert "Adapter written to" in out and "reward accuracy" in out
    assert "(before: policy == reference, every margin is 0, no pair is ranked yet)" in out


def test_a_resumed_run_says_so_and_counts_the_steps_it_ran(
    tmp_path, tiny_model_dir, data_dir, capsys, caplog
):
    """Resumed from checkpoint-2 to max_steps 4: a line names the checkpoint, run_info.json records it, and the
    summary says 2 steps were trained (4 in all), not 'Trained 4 steps'."""
    import logging

    recipe = write_recipe(tmp_path, tiny_model_dir, data_dir, save_steps=2, save_strategy="steps")
    assert main(["train", str(recipe), "--max_steps", "2"]) == 0
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="hf_dpo.run"):
        assert main(["train", str(recipe), "--max_steps", "4", "--resume_from_checkpoint", "true"]) == 0
    run = tmp_path / "run"
    assert f"Resuming from {run / 'checkpoint-2'}, saved at step 2." in caplog.messages
    info = json.loads((run / "run_info.json").read_text())
    assert info["resumed_from"] == {"checkpoint": "checkpoint-2", "global_step": 2}
    assert info["global_steps"] == 4 and info["steps_this_run"] == 2
    assert (
        "Trained 2 steps (resumed from checkpoint-2 at step 2; 4 in all) on 8 pairs"
        in capsys.readouterr().out
    )


def test_summary_notes_policy_equals_reference_where_measured(tmp_path, capsys):
    """Before: '(before: policy == reference ...)' was printed always, also for a resumed run whose 'before'
    had moved, and never for an 'after' that had not (learning_rate 0)."""
    from hf_dpo.run import _print_summary

    def held_out(same: bool) -> dict:
        acc = 0.0 if same else 0.5
        return {
            "num_pairs": 2,
            "reward_accuracy": acc,
            "policy_prefers_chosen": 0.5,
            "policy_is_reference": same,
        }

    info = {"global_steps": 3, "steps_this_run": 3, "resumed_from": None, "num_train_pairs": 8}
    info |= {"train_runtime_s": 1.0, "hardware": "CPU"}
    info |= {"quantization": "none", "compute_dtype": "float32"}
    for before, after, note in [
        (True, False, "   (before: policy == reference, every margin is 0, no pair is ranked yet)"),
        (False, False, ""),  # resumed from a checkpoint
        (True, True, "   (before and after: policy == reference, every margin is 0, no pair is ranked yet)"),
    ]:
        _print_summary(tmp_path, {**info, "eval_before": held_out(before), "eval_after": held_out(after)})
        line = next(x for x in capsys.readouterr().out.splitlines() if "reward accuracy" in x)
        assert line.endswith(f"after {0.0 if after else 0.5:.3f}{note}"), line
    _print_summary(tmp_path, {**info, "steps_this_run": 1, "eval_before": None, "eval_after": None})
    assert "Trained 1 step on 8 pairs" in capsys.readouterr().out


def test_bad_recipe_is_one_clear_line_not_a_traceback(tmp_path, tiny_model_dir, data_dir, capsys):
    recipe = write_recipe(tmp_path, tiny_model_dir, data_dir, lora_rank=4)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lora_rank'" in err and "'lora_r'" in err.split("Did you mean")[1]
    assert "Traceback" not in err


def test_bad_data_row_is_named(tmp_path, tiny_model_dir, data_dir, capsys):
    with (data_dir / "train.jsonl").open("a") as fh:
        fh.write(json.dumps({"prompt": "Q", "chosen": "same", "rejected": "same"}) + "\n")
    recipe = write_recipe(tmp_path, tiny_model_dir, data_dir, max_steps=1)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "train.jsonl, row 8, column 'rejected': chosen and rejected are identical" in err
    # And with skipping enabled the same data trains, the row counted.
    assert main(["train", str(recipe), "--on_bad_rows", "skip"]) == 0
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["data_report"]["train"]["skipped"] == {"chosen == rejected": 1}


def test_a_report_that_fails_after_training_says_the_run_is_saved_and_how_to_finish_it(
    tmp_path, tiny_model_dir, data_dir, capsys, monkeypatch
):
    # The preflight tries the judge on the data's chosen answer ("3"), which it scores; the trained model's own
    # answers (a random tiny model's) are what it refuses: only the report can meet them.
    (tmp_path / "digits_judge.py").write_text(
        "def judge(prompt, completion):\n"
        "    if not completion.strip().isdigit():\n"
        "        raise ValueError('not a number')\n"
        "    return 1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = write_recipe(
        tmp_path, tiny_model_dir, data_dir, max_steps=1, judge="digits_judge:judge", eval_num_generations=1
    )
    assert main(["train", str(recipe), "--eval_max_new_tokens", "4"]) == 2
    err = capsys.readouterr().err
    run = tmp_path / "run"
    assert "Traceback" not in err and "raised ValueError: not a number" in err
    assert f"The training is not lost: {run} holds the trained run" in err
    assert f"run `hf-dpo eval {run}` for its report and card" in err
    assert (run / "adapter_model.safetensors").is_file() and (run / "run_info.json").is_file()
