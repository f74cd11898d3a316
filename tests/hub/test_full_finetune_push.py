"""A full fine-tune's push (use_peft: false) to the local Hub-compatible server: the model's config and weights go,
no adapter file; the card is a transformers model's, and its "How to use" runs against what was pushed."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from tests.hub.conftest import REPO
from tests.run_fixtures import tiny_full_run


@pytest.fixture
def full_run_dir(tiny_model_dir, tmp_path, tmp_path_factory):
    """A private copy of the session's full fine-tune run (pushing writes README.md into it)."""
    dst = tmp_path / "full-run"
    shutil.copytree(tiny_full_run(tiny_model_dir, tmp_path_factory), dst)
    return dst


def test_a_full_finetune_pushes_its_model_and_a_transformers_card(hub, full_run_dir):
    from huggingface_hub import ModelCard

    from hf_dpo.hub.push import push_run

    push_run(full_run_dir, REPO, backoff_s=0.01)
    pushed = hub.files(REPO)
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    } <= set(pushed)
    assert {
        "recipe.yaml",
        "eval_report.json",
        "eval_generations.jsonl",
        ".eval_results/accuracy.yaml",
    } <= set(pushed)
    assert not [name for name in pushed if name.startswith("adapter_") or name.endswith((".bin", ".pt"))]
    assert pushed["model.safetensors"] == (full_run_dir / "model.safetensors").read_bytes()
    assert "model.safetensors" in hub.repo(REPO).head("main").lfs
    assert hub.repo(REPO).head("main").message.startswith("hf-dpo: DPO full fine-tune, card and eval report")

    card = ModelCard(pushed["README.md"].decode())
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["trl", "dpo", "hf-dpo"]  # no lora / qlora: no adapter
    assert "A full fine-tune of" in card.text and "It is a complete model" in card.text
    assert "PeftModel" not in card.text and "adapter" not in card.text.split("## How to use")[1]


def test_the_cards_how_to_use_loads_the_pushed_model_with_automodel(hub, full_run_dir):
    """The card's code, run as it is: AutoModelForCausalLM from the repo, the trained weights, a generation."""
    from hf_dpo.hub.push import push_run

    push_run(full_run_dir, REPO, backoff_s=0.01)
    card = hub.files(REPO)["README.md"].decode()
    code = re.search(r"## How to use\n\n```python\n(.*?)```", card, re.DOTALL).group(1)
    assert f'model = AutoModelForCausalLM.from_pretrained("{REPO}", dtype=torch.float32)' in code
    scope: dict = {}
    exec(compile(code.replace("max_new_tokens=64", "max_new_tokens=4"), "README.md", "exec"), scope)
    from safetensors.torch import load_file

    trained = load_file(full_run_dir / "model.safetensors")
    loaded = scope["model"].state_dict()
    assert all(torch.equal(loaded[name], weight) for name, weight in trained.items())
    assert scope["output"].shape[1] > scope["inputs"]["input_ids"].shape[1]  # it generated


def test_a_full_finetune_whose_weights_are_cut_short_is_refused_before_anything_is_written(hub, full_run_dir):
    from hf_dpo.hub.errors import PushError
    from hf_dpo.hub.push import push_run

    weights = full_run_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(PushError, match=r"model.safetensors is cut short.*refusing to push a broken model"):
        push_run(full_run_dir, REPO, backoff_s=0.01)
    assert not hub.requests_to(r"/commit/", "POST")
