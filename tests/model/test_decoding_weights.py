"""hf_dpo.model.reference (dense_copy, decoding_plan) and hf_dpo.model.kv_cache: the dense copy computes what the 4-bit + LoRA model computes, the preallocated KV
cache gives the logits of transformers' DynamicCache, and the plan falls back to the 4-bit model when a dense
copy does not fit."""

from __future__ import annotations

import logging

import pytest
import torch

from hf_dpo.config import DataConfig, ModelConfig
from hf_dpo.model import reference
from hf_dpo.model.kv_cache import preallocated_cache
from hf_dpo.model.loading import keep_4bit_layers_trainable, load_policy
from hf_dpo.model.reference import decoding_plan, dense_copy, reference_context

PROMPTS = [
    "What is 17 plus 25?",
    "Name the capital city of Peru.",
    "Add 26 and 21.",
    "What is the capital of Norway? Answer in one word.",
    "Compute 9 times 7.",
    "Which city is the capital of Kenya?",
]


def _policy(model_dir: str, quantization: str = "4bit", seed: int = 0):
    """A 4-bit base with a LoRA adapter whose B is not zero: the adapter changes what the model says. Its 4-bit
    layers compute as in training (dequantize, then a float matmul), not through bitsandbytes' CPU inference
    kernel, which multiplies in bf16 on CPUs that have it."""
    cfg = ModelConfig(
        model_name_or_path=model_dir, quantization=quantization, lora_r=8, lora_alpha=16, lora_dropout=0.0
    )
    model, tokenizer = load_policy(cfg)
    torch.manual_seed(seed)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    keep_4bit_layers_trainable(model)
    return model.eval(), tokenizer


def _prompt_ids(tokenizer, prompts=PROMPTS):
    from hf_dpo.data import prompt_token_ids

    return [prompt_token_ids(p, tokenizer, DataConfig()) for p in prompts]


def _hf_generate(model, tokenizer, prompt_ids, max_new_tokens):
    """Greedy completions through `model.generate` (left-padded batch), each cut after its first end token."""
    tokenizer.padding_side = "left"
    batch = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )  # (B, T + new)
    ends = {
        tokenizer.eos_token_id,
        *([model.generation_config.eos_token_id] if model.generation_config.eos_token_id else []),
    }
    completions = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        cut = next((i + 1 for i, tok in enumerate(row) if tok in ends), len(row))
        completions.append(row[:cut])
    return completions


@pytest.mark.slow
def test_greedy_answers_of_the_dense_copy_equal_the_4bit_lora_model_token_for_token(smollm_dir):
    """The demo model, 4-bit NF4 + LoRA, float32: `model.generate` on it and the report's decoder on its dense
    copy (NF4 dequantized once, LoRA folded in) give the same greedy tokens; with the adapters off, the dense
    copy of the reference gives the reference's."""
    from hf_dpo.report.generation import generate

    model, tokenizer = _policy(smollm_dir)
    prompt_ids = _prompt_ids(tokenizer)
    policy = dense_copy(model, torch.float32)
    assert not any("lora" in name for name, _ in policy.named_parameters())
    expected = _hf_generate(model, tokenizer, prompt_ids, 24)
    assert generate(policy, tokenizer, prompt_ids, max_new_tokens=24, batch_size=len(prompt_ids)) == expected
    with reference_context(model):
        reference = dense_copy(model, torch.float32)
        expected_reference = _hf_generate(model, tokenizer, prompt_ids, 24)
    assert expected_reference != expected  # the adapter changes the answers: the test can tell the two apart
    got = generate(reference, tokenizer, prompt_ids, max_new_tokens=24, batch_size=len(prompt_ids))
    assert got == expected_reference


def test_dense_copy_computes_the_4bit_lora_logits_and_leaves_the_model_as_it_was(tiny_model_dir):
    model, _ = _policy(tiny_model_dir)
    ids = torch.tensor([[1, 5, 9, 300, 42, 7], [3, 8, 2, 11, 90, 4]])  # (2, 6)
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        with reference_context(model):
            expected_reference = model(input_ids=ids).logits
    policy = dense_copy(model, torch.float32)
    with reference_context(model):
        reference = dense_copy(model, torch.float32)
    with torch.inference_mode():
        torch.testing.assert_close(policy(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(reference(input_ids=ids).logits, expected_reference, rtol=1e-4, atol=1e-4)
        assert (expected - expected_reference).abs().max() > 1e-2  # the adapter matters here
        assert torch.equal(model(input_ids=ids).logits, expected)  # the 4-bit model is untouched
    assert policy.get_output_embeddings().weight is policy.get_input_embeddings().weight  # still tied
    bf16 = dense_copy(model, torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_preallocated_cache_gives_the_logits_of_the_dynamic_cache_while_rows_leave(tiny_model_dir):
    """Prefill, then decode; two of three rows are dropped midway and the last is repeated twice: every step's
    logits equal those computed with transformers' DynamicCache doing the same."""
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([[5, 9, 300, 42], [8, 2, 11, 90], [7, 7, 1, 3]])  # (3, 4)

    def run(cache):
        logits, ids = [], prompt
        with torch.inference_mode():
            out = model(input_ids=ids, cache=cache)
            for step in range(6):
                token = out.logits[:, -1].argmax(-1, keepdim=True)  # (rows, 1)
                logits.append(out.logits[:, -1])
                if step == 2:
                    cache.batch_select_indices(torch.tensor([1]))
                    token = token[[1]]
                if step == 4:
                    cache.batch_repeat_interleave(2)
                    token = token.repeat_interleave(2, dim=0)
                out = model(input_ids=token, cache=cache)
        return logits

    dynamic = run(DynamicCache(config=model.config))
    preallocated = run(preallocated_cache(model, prompt.shape[1] + 6))
    assert type(preallocated_cache(model, 10).layers[0]).__name__ == "PreallocatedLayer"
    for a, b in zip(dynamic, preallocated):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_preallocated_cache_refuses_to_write_past_its_length(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    cache = preallocated_cache(model, 4)
    with torch.inference_mode(), pytest.raises(ValueError, match="holds 4 positions; 5 were written"):
        model(input_ids=torch.tensor([[5, 9, 300, 42, 1]]), cache=cache)


def test_plan_decodes_the_4bit_model_when_a_dense_copy_does_not_fit(tiny_model_dir, monkeypatch, caplog):
    model, _ = _policy(tiny_model_dir)
    caplog.set_level(logging.INFO, logger="hf_dpo.model.reference")
    roomy = decoding_plan(model, torch.float32)
    assert roomy.dense and roomy.dtype == torch.float32
    monkeypatch.setattr(reference, "free_memory_bytes", lambda device: 1000)
    tight = decoding_plan(model, torch.bfloat16)
    assert not tight.dense and tight.dtype == torch.float32  # the 4-bit model computes in its compute dtype
    assert "Decoding from the model as loaded in float32: a dense copy would take" in caplog.text
    assert "Decoding from dense weights" in caplog.text


def test_dense_copy_decodes_with_sdpa_when_training_switched_the_attention(tiny_model_dir):
    """Prefix sharing gives the training model an attention that also takes FlexAttention block masks; the dense
    copy decodes with SDPA, and computes the same logits."""
    from hf_dpo.train.attention import SDPA_OR_FLEX, enable_flex_for_block_masks

    model, _ = _policy(tiny_model_dir)
    enable_flex_for_block_masks(model)
    assert model.get_base_model().config._attn_implementation == SDPA_OR_FLEX
    ids = torch.tensor([[1, 5, 9, 300, 42, 7]])  # (1, 6)
    dense = dense_copy(model, torch.float32)
    assert dense.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        torch.testing.assert_close(
            dense(input_ids=ids).logits, model(input_ids=ids).logits, rtol=1e-4, atol=1e-4
        )
