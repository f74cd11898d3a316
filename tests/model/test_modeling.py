"""hf_dpo.model.loading: dtype choice, the built-in alias, 4-bit loading on CPU, adapters and the reference."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from hf_dpo.config import ModelConfig, RecipeError
from hf_dpo.model.loading import ModelLoadError, hub_id_for, load_policy, pick_dtype, resolve_model_path
from hf_dpo.model.reference import REFERENCE_ADAPTER, reference_context


def test_cpu_compute_dtype_is_float32_automatically():
    assert pick_dtype("auto", device="cpu") == torch.float32
    assert pick_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ModelLoadError, match="torch_dtype 'fp8'"):
        pick_dtype("fp8")


def test_alias_resolves_to_converted_safetensors(smollm_dir):
    assert resolve_model_path("smollm2-135m-instruct") == smollm_dir
    assert resolve_model_path("SmolLM2-135M-Instruct") == smollm_dir
    assert hub_id_for("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("org/some-model") == "org/some-model"


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="Could not load"):
        load_policy(ModelConfig(model_name_or_path=str(tmp_path / "nope"), quantization="none"))
    with pytest.raises(RecipeError, match="quantization.*3bit"):  # refused when the config is built
        ModelConfig(model_name_or_path="smollm2-135m-instruct", quantization="3bit")


@pytest.mark.slow
def test_smollm2_in_4bit_on_cpu_trains_a_lora(smollm_dir):
    """The real QLoRA path on CPU: NF4 base (double quant), float32 compute, LoRA gets gradients."""
    import bitsandbytes as bnb

    model, tokenizer = load_policy(ModelConfig(model_name_or_path="smollm2-135m-instruct", lora_r=4))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    qconfig = model.config.quantization_config
    qconfig = qconfig.to_dict() if hasattr(qconfig, "to_dict") else qconfig
    assert qconfig["bnb_4bit_quant_type"] == "nf4" and qconfig["bnb_4bit_use_double_quant"]
    assert qconfig["bnb_4bit_compute_dtype"] in ("float32", torch.float32)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with reference_context(model):
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_starting_adapter_is_the_reference(tmp_path, tiny_model_dir):
    """Continuing from an SFT adapter: the policy starts as that adapter and the reference stays it."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sft = get_peft_model(
        base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    )
    sft.save_pretrained(tmp_path / "sft")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        sft_logits = sft(input_ids=ids).logits
        with sft.disable_adapter():
            base_logits = sft(input_ids=ids).logits

    cfg = ModelConfig(
        model_name_or_path=tiny_model_dir, quantization="none", adapter_name_or_path=str(tmp_path / "sft")
    )
    model, _ = load_policy(cfg)
    assert REFERENCE_ADAPTER in model.peft_config
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, sft_logits, atol=1e-5)
        for p in (p for n, p in model.named_parameters() if "lora_B" in n and ".default." in n):
            p.add_(0.5)  # training moves the policy ...
        assert not torch.allclose(model(input_ids=ids).logits, sft_logits, atol=1e-3)
        with reference_context(model):  # ... but not the reference
            ref_logits = model(input_ids=ids).logits
        assert torch.allclose(ref_logits, sft_logits, atol=1e-5)
        assert not torch.allclose(ref_logits, base_logits, atol=1e-3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)


def test_building_the_lora_model_prints_no_peft_deprecation_warning(tmp_path):
    """Before: every `hf-dpo train` printed transformers' FutureWarning "`is_gradient_checkpointing` is deprecated
    ... Use `is_activation_checkpointing`", raised when peft's PeftModel reads the old name. Silenced around each
    PeftModel construction, and only there: the property still warns when read anywhere else."""
    import warnings
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_dpo.model.loading import attach_adapter, lora_config
    from hf_dpo.train.setup import prepare_policy
    from tests.run_fixtures import dpo_args

    def tiny():
        config = LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
        return LlamaForCausalLM(config)

    cfg = ModelConfig(model_name_or_path="tiny", quantization="none")
    tokenizer = SimpleNamespace(pad_token="<pad>", eos_token="<pad>")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attach_adapter(tiny(), cfg).save_pretrained(tmp_path / "sft")  # get_peft_model: a new adapter
        starting = ModelConfig(
            model_name_or_path="tiny", quantization="none", adapter_name_or_path=str(tmp_path / "sft")
        )
        attach_adapter(tiny(), starting)  # PeftModel.from_pretrained: a starting adapter
        prepare_policy(tiny(), tokenizer, lora_config(cfg), dpo_args(tmp_path))  # DPOTrainer(peft_config=...)
        assert tiny().is_gradient_checkpointing is False  # outside them the warning is untouched
    deprecations = [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert [w.category for w in deprecations] == [FutureWarning], [str(w.message) for w in deprecations]


def test_importing_bitsandbytes_asks_no_hub_endpoint_for_a_kernel(tmp_path):
    """bitsandbytes' import (on an AVX512-BF16 CPU) asked HF_ENDPOINT for the 'kernels-community' organisation
    and, where that failed, warned 'Failed to load CPU gemm_4bit_forward': on every command, a push's endpoint
    included. Imported after hf_dpo (as every hf-dpo command does), it asks nothing and says nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.hub_server import HubServer

    root = Path(__file__).resolve().parents[2]
    hub = HubServer().start()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(root), "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)

    def import_bitsandbytes(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr

    try:
        alone = import_bitsandbytes("import bitsandbytes")
        asked_alone = len(hub.requests_to("kernels"))
        after_hf_dpo = import_bitsandbytes("import hf_dpo, bitsandbytes")
        assert len(hub.requests_to("kernels")) == asked_alone  # nothing more asked
    finally:
        hub.stop()
    assert "gemm_4bit_forward" not in after_hf_dpo
    if asked_alone:  # this CPU has AVX512-BF16: bitsandbytes on its own does ask (and warns)
        assert "Failed to load CPU gemm_4bit_forward" in alone


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_use_peft_false_loads_the_model_itself_every_weight_trainable_in_its_dtype(tiny_model_dir, dtype):
    """A full fine-tune: no adapter (no PeftModel, no lora_ weights), every parameter trains, in torch_dtype."""
    model, tokenizer = load_policy(
        ModelConfig(model_name_or_path=tiny_model_dir, use_peft=False, torch_dtype=dtype)
    )
    assert not hasattr(model, "peft_config")
    assert not [name for name, _ in model.named_parameters() if "lora_" in name]
    assert all(p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}
    assert tokenizer.pad_token is not None
