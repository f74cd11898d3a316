"""Merging: the merged full-precision model computes the same log-probs as base + adapter (unquantized base)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_dpo.model.loading import ModelLoadError
from hf_dpo.model.merge import merge_run


@pytest.fixture()
def run_dir(tmp_path, tiny_model_dir) -> Path:
    """A run dir as `hf-dpo train` leaves it: recipe.yaml + a LoRA adapter whose B matrices are non-zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter really changes the model
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    out = tmp_path / "run"
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    (out / "recipe.yaml").write_text(f"model_name_or_path: {tiny_model_dir}\nquantization: none\nlora_r: 8\n")
    return out


def _logps(model, input_ids) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float()  # (B, T, V)
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)


def test_merged_logps_equal_adapter_logps(run_dir, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge_run(run_dir, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(run_dir)).eval()
    ids = torch.randint(0, 1000, (3, 24), generator=torch.Generator().manual_seed(0))

    merged_logps, adapter_logps = _logps(merged, ids), _logps(adapted, ids)
    torch.testing.assert_close(merged_logps, adapter_logps, rtol=1e-5, atol=1e-5)
    with adapted.disable_adapter():
        base_logps = _logps(adapted, ids)
    assert (merged_logps - base_logps).abs().max() > 1e-2, "the adapter should change the model"

    # a plain transformers model: no LoRA modules, no adapter files; the tokenizer travels with it
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert not (out / "adapter_config.json").exists()
    assert AutoTokenizer.from_pretrained(out).encode("hello") == AutoTokenizer.from_pretrained(
        tiny_model_dir
    ).encode("hello")


def test_merge_without_recipe_uses_adapter_base(run_dir, tmp_path):
    (run_dir / "recipe.yaml").unlink()
    base = json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_dir()
    out = merge_run(run_dir, tmp_path / "merged")
    assert (out / "config.json").is_file() and any(out.glob("*.safetensors"))


def test_merge_refuses_non_empty_output(run_dir, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not empty"):
        merge_run(run_dir, target)


def test_merge_needs_an_adapter(tmp_path):
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        merge_run(tmp_path, tmp_path / "out")


def test_cli_merge(run_dir, tmp_path, capsys):
    from hf_dpo.cli import main

    assert main(["merge", str(run_dir), str(tmp_path / "m")]) == 0
    assert "Merged model written to" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "nowhere"), str(tmp_path / "m2")]) == 2


def test_a_full_finetune_run_has_nothing_to_merge_and_says_how_to_load_it(tiny_model_dir, tmp_path):
    """A use_peft: false run dir is a whole model (config.json, weights, no adapter_config.json)."""
    with pytest.raises(ModelLoadError, match=r"a full fine-tune, use_peft: false.*AutoModelForCausalLM"):
        merge_run(tiny_model_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
