"""The fused LoRA forward (`hf_dpo.model.fused_lora`) computes what peft's does, output and gradients, on plain and
4-bit layers, and hands every case it does not take (adapters off, merged, DoRA, mixed-batch adapter names) to peft."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from hf_dpo.model.fused_lora import fused_forward, install_fused_lora


def lora_model(model_dir, quantization=None, **lora):
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model

    torch.manual_seed(0)
    if quantization:
        base = load_base_model(ModelConfig(model_name_or_path=model_dir, quantization=quantization))
    else:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(base, LoraConfig(**{**config, **lora}))


def logits_and_grads(model, ids):
    model.zero_grad()
    logits = model(input_ids=ids).logits
    logits.pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def fused_count(model) -> int:
    return sum(
        1 for m in model.modules() if getattr(m.__dict__.get("forward"), "__func__", None) is fused_forward
    )


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_the_fused_forward_gives_peft_s_output_and_gradients(tiny_model_dir, quantization):
    peft_side = lora_model(tiny_model_dir, quantization)
    fused_side = copy.deepcopy(peft_side)
    layers = install_fused_lora(fused_side)
    assert layers == fused_count(fused_side) == 2 * 7  # every adapted linear of the 2 layers
    ids = torch.tensor([[1, 5, 9, 200, 31, 7], [4, 4, 8, 15, 16, 23]])
    want_logits, want_grads = logits_and_grads(peft_side, ids)
    got_logits, got_grads = logits_and_grads(fused_side, ids)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and any("lora_A" in n for n in got_grads)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_a_deep_copy_keeps_a_fused_forward_of_its_own(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    install_fused_lora(model)
    copied = copy.deepcopy(model)
    layer = copied.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.forward.__self__ is layer  # bound to the copy, not to the layer it was copied from


def test_cases_the_fused_forward_does_not_take_go_to_peft(tiny_model_dir):
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    for model in (lora_model(tiny_model_dir), lora_model(tiny_model_dir, use_dora=True)):
        model.eval()  # peft takes adapter_names in eval mode only
        fused = copy.deepcopy(model)
        install_fused_lora(fused)
        with torch.no_grad():
            torch.testing.assert_close(fused(input_ids=ids).logits, model(input_ids=ids).logits)
            with model.disable_adapter(), fused.disable_adapter():  # adapters off: the base alone
                torch.testing.assert_close(fused(input_ids=ids).logits, model(input_ids=ids).logits)
            if not model.peft_config["default"].use_dora:  # peft refuses adapter_names with DoRA
                out = fused(input_ids=ids, adapter_names=["default"]).logits  # mixed-batch path
                torch.testing.assert_close(out, model(input_ids=ids, adapter_names=["default"]).logits)
            fused.merge_adapter()
            model.merge_adapter()
            torch.testing.assert_close(fused(input_ids=ids).logits, model(input_ids=ids).logits)


def test_the_trainer_trains_through_the_fused_forward(tmp_path, tiny_model_dir, caplog):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hf_dpo.train.trainer import DPOTrainer
    from tests.run_fixtures import dpo_args

    base, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    rows = [{"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}] * 2
    with caplog.at_level("INFO", logger="hf_dpo.train.setup"):
        trainer = DPOTrainer(
            model=copy.deepcopy(base),
            args=dpo_args(tmp_path),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
        )
    assert fused_count(trainer.model) == 14
    assert "the adapter's product added by one fused matmul on 14 layers" in caplog.text
