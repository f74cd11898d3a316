"""`use_peft: false` end to end: `hf-dpo train` trains every weight of the model and saves it whole, its reference
is the starting model (log-probs precomputed, or a frozen copy), the fast paths hold, and `hf-dpo eval` reloads
the run with its starting model as the reference."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.run_fixtures import full_finetune_overrides, tiny_full_run, write_pairs


@pytest.fixture
def full_run(tiny_model_dir, tmp_path_factory):
    """The session's full fine-tune run (read it, never change it)."""
    return tiny_full_run(tiny_model_dir, tmp_path_factory)


def _recipe(tiny_model_dir, tmp_path, **over):
    from hf_dpo.config import load_recipe

    write_pairs(tmp_path)
    return load_recipe(None, full_finetune_overrides(tiny_model_dir, tmp_path, tmp_path / "run", **over))


def test_a_full_finetune_trains_every_weight_and_saves_the_whole_model(full_run, tiny_model_dir):
    files = {p.name for p in full_run.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "run_info.json"} <= files
    assert not {"adapter_config.json", "adapter_model.safetensors"} & files
    trained, base = (
        load_file(full_run / "model.safetensors"),
        load_file(f"{tiny_model_dir}/model.safetensors"),
    )
    assert trained.keys() == base.keys()
    unchanged = [name for name in base if torch.equal(trained[name], base[name])]
    assert not unchanged, (
        f"weights that did not train: {unchanged}"
    )  # embeddings and norms too, not only linears
    assert {t.dtype for t in trained.values()} == {torch.float32}  # torch_dtype auto on CPU
    info = json.loads((full_run / "run_info.json").read_text())
    assert info["use_peft"] is False and info["lora"] is None and info["quantization"] == "none"
    assert info["eval_before"]["policy_is_reference"] and not info["eval_after"]["policy_is_reference"]
    assert "use_peft: false" in (full_run / "recipe.yaml").read_text()  # re-runs as the same full fine-tune


def test_the_training_report_compares_the_policy_with_its_starting_model(full_run, tiny_model_dir):
    report = json.loads((full_run / "eval_report.json").read_text())
    assert report["reference"] == f"the starting model `{tiny_model_dir}`, reloaded: a full fine-tune"
    markdown = (full_run / "eval_report.md").read_text()
    assert markdown.startswith(f"# Evaluation report: DPO full fine-tune of `{tiny_model_dir}`")
    assert f"pi_ref is the starting model `{tiny_model_dir}`" in markdown
    assert f"Policy vs reference (the starting model `{tiny_model_dir}`" in markdown
    assert "adapters off" not in markdown and "LoRA" not in markdown
    assert "| Trained weights | all of them: a full fine-tune (use_peft: false), no adapter |" in markdown
    assert report["behaviour"]["n"] == 4


def test_hf_dpo_eval_reloads_the_model_and_measures_it_against_its_starting_model(full_run, tmp_path):
    """The run reloads as a plain model with the saved weights; the reference is the starting model loaded again,
    so the held-out numbers are those training measured against its precomputed reference log-probs."""
    from hf_dpo.run import evaluate_run, load_run

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    _, model, _, eval_dataset, _ = load_run(run)
    assert not hasattr(model, "peft_config") and len(eval_dataset) == 4
    saved = load_file(run / "model.safetensors")
    assert all(torch.equal(p, saved[name]) for name, p in model.state_dict().items() if name in saved)
    before = json.loads((run / "eval_report.json").read_text())
    report = evaluate_run(run, num_generations=4, max_new_tokens=12)
    after = json.loads((run / "run_info.json").read_text())["eval_after"]
    metrics = report["preference"]["metrics"]
    assert metrics["reward_accuracy"]["value"] == pytest.approx(after["reward_accuracy"])
    assert metrics["rewards/margins"]["value"] == pytest.approx(after["reward_margin"], abs=1e-4)
    assert metrics["rewards/margins"]["value"] != 0  # the trained model is not its own reference
    assert report["reference"] == before["reference"]
    assert report["behaviour"]["wins"] + report["behaviour"]["ties"] + report["behaviour"]["losses"] == 4


def test_the_reference_is_precomputed_with_no_second_model_or_a_frozen_copy(tiny_model_dir, tmp_path):
    from hf_dpo.run import build_trainer
    from hf_dpo.train.ref_cache import REF_COLUMNS

    trainer, _ = build_trainer(_recipe(tiny_model_dir, tmp_path))
    assert trainer.ref_model is None
    assert set(REF_COLUMNS) <= set(trainer.train_dataset.column_names)  # computed once, before the first step
    assert set(REF_COLUMNS) <= set(trainer.eval_dataset.column_names)
    copy, _ = build_trainer(_recipe(tiny_model_dir, tmp_path, precompute_ref_log_probs="false"))
    reference = dict(copy.ref_model.named_parameters())
    assert reference and not any(p.requires_grad for p in reference.values())
    for name, param in copy.model.named_parameters():
        assert param.requires_grad and torch.equal(param, reference[name]) and param is not reference[name]


def test_the_fast_paths_give_a_full_finetune_the_plain_paths_log_probs(tiny_model_dir, tmp_path, caplog):
    """Prefix sharing and chunked log-probs (on by default) and packing compute what the plain layout computes."""
    from hf_dpo.run import build_trainer

    with caplog.at_level(logging.INFO):
        fast, _ = build_trainer(_recipe(tiny_model_dir, tmp_path))
        fast_logps = fast.pair_logps()
    assert "Prefix sharing on" in caplog.text and "Log-probs through the LM head in chunks" in caplog.text
    plain, _ = build_trainer(_recipe(tiny_model_dir, tmp_path, prefix_sharing="false", logps_chunk_size=0))
    packed, _ = build_trainer(_recipe(tiny_model_dir, tmp_path, padding_free="true"))
    for other in (plain.pair_logps(), packed.pair_logps()):
        for key in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"):
            assert torch.allclose(fast_logps[key], other[key], atol=1e-4), key


@pytest.fixture
def other_model_dir(tiny_model_dir, tmp_path):
    """The tiny Llama's architecture and tokenizer with other random weights: a reference that is not the policy."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir))
    model.save_pretrained(tmp_path / "sft")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "sft")
    return tmp_path / "sft"


def test_ref_model_name_or_path_is_the_reference_of_training_and_of_the_report(
    tiny_model_dir, other_model_dir, tmp_path
):
    """TRL's ref_model as a recipe key: the trainer's frozen reference, the reference log-probs (so the policy is
    no reference before the first step), run_info.json, and the model the report and `hf-dpo eval` compare with."""
    from hf_dpo.run import build_trainer, evaluate_run, run_training

    recipe = _recipe(tiny_model_dir, tmp_path, ref_model_name_or_path=str(other_model_dir))
    trainer, _ = build_trainer(recipe)
    reference = load_file(other_model_dir / "model.safetensors")
    held = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(held[name], weight) for name, weight in reference.items())
    assert not any(p.requires_grad for p in held.values())
    run = tmp_path / "run"
    run_training(
        None, full_finetune_overrides(tiny_model_dir, tmp_path, run, ref_model_name_or_path=other_model_dir)
    )
    info = json.loads((run / "run_info.json").read_text())
    assert info["ref_model"] == str(other_model_dir)
    assert not info["eval_before"]["policy_is_reference"]  # another model: margins from the first step on
    words = f"the reference model `{other_model_dir}` (ref_model_name_or_path)"
    assert json.loads((run / "eval_report.json").read_text())["reference"] == words
    after = info["eval_after"]
    report = evaluate_run(run, num_generations=4, max_new_tokens=12)
    assert report["reference"] == words
    assert report["preference"]["metrics"]["rewards/margins"]["value"] == pytest.approx(
        after["reward_margin"], abs=1e-4
    )
