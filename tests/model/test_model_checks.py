"""hf_dpo/model/checks.py and the merge's destination check: attention kernels, an adapter given as the model or a
path without one, LoRA targets (local and Hub models, from their config), a config.json that is no mapping, a
merge destination that cannot hold the model. Each ends in one `error:` line naming the key, before the model
loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_dpo import cli
from tests.run_fixtures import write_adapter


def test_an_attention_kernel_transformers_does_not_know_is_named_before_the_model_loads(
    one_error, train, tmp_path, capsys, no_model
):
    # Before: a ValueError traceback from transformers once the model's weights were fetched.
    rc, err = train(tmp_path, capsys, "attn_implementation: flash_attn_2\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'attn_implementation': 'flash_attn_2' is not one of .*sdpa", line), line
    assert "Did you mean 'flash_attention_2'" in line


def test_flash_attention_without_its_package_is_named_before_the_model_loads(
    one_error, train, tmp_path, capsys, no_model, monkeypatch
):
    # Before: "ImportError: FlashAttention2 has been toggled on, but ... doesn't seem to be installed", a traceback
    # after the (Hub) model's weights had been downloaded.
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    monkeypatch.setattr(transformers.utils, "is_kernels_available", lambda: False)
    rc, err = train(tmp_path, capsys, "attn_implementation: flash_attention_2\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'attn_implementation': flash_attention_2 needs .*flash-attn.*sdpa", line), line


def test_a_lora_adapter_given_as_the_model_is_named_with_the_keys_to_use(
    one_error, train, tmp_path, capsys, no_model
):
    # An SFT run's output (adapter + tokenizer, no config.json) as model_name_or_path: transformers loaded its
    # base with the adapter, and the new LoRA went on top under the same name: which weights trained and what the
    # reference was (the bare base, not the SFT adapter) was silent.
    adapter = tmp_path / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    )
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {adapter}\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'model_name_or_path': .*sft is a LoRA adapter", line), line
    assert f"adapter_name_or_path: {adapter}" in line
    assert "model_name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct" in line


@pytest.mark.parametrize("what", ["directory", "file"])
def test_an_adapter_path_that_holds_no_adapter_is_named_before_the_model_loads(
    one_error, train, tmp_path, capsys, no_model, what
):
    # Before: the base model loaded (minutes for a large one), then peft failed on the missing adapter_config.json.
    adapter = tmp_path / "sft"
    if what == "directory":
        (adapter / "checkpoint-10").mkdir(parents=True)  # the run dir of a run that never saved at the top
    else:
        adapter.write_text("x")
    rc, err = train(tmp_path, capsys, f"adapter_name_or_path: {adapter}\n")
    assert rc == 2
    assert re.search(r"key 'adapter_name_or_path': .*sft has no adapter_config.json", one_error(err))


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("lora_target_modules: q_proj, v_proj\n", ()),
        ("", ("--lora_target_modules", "q_proj,v_proj")),
        ("", ("--lora_target_modules=q_proj, v_proj",)),
    ],
)
def test_lora_target_modules_written_as_one_comma_list_is_named(
    load_recipe_text, tmp_path, recipe, overrides
):
    # Before: one module named 'q_proj, v_proj', which no layer has: for a Hub model peft said so only after the
    # model had loaded.
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=r"key 'lora_target_modules': 'q_proj, ?v_proj' .*\[q_proj, v_proj\]"
    ):
        load_recipe_text(tmp_path, recipe, *overrides)
    assert load_recipe_text(
        tmp_path, "lora_target_modules: [q_proj, v_proj]\n"
    ).model.lora_target_modules == [
        "q_proj",
        "v_proj",
    ]


@pytest.mark.parametrize("out", ["a_file", "a_file/merged"])
def test_merge_into_a_place_that_cannot_hold_it_is_named_before_the_base_loads(
    one_error, tmp_path, capsys, monkeypatch, out
):
    # OUT an existing file: a NotADirectoryError traceback; OUT under a file (or unwritable): the base loaded
    # and merged, then the save failed with a traceback.
    def refuse(*args, **kwargs):
        raise AssertionError("the base model was loaded before OUT was checked")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    run = write_adapter(tmp_path / "run", "smollm2-135m-instruct")
    (tmp_path / "a_file").write_text("x")
    rc = cli.main(["merge", str(run), str(tmp_path / out)])
    line = one_error(capsys.readouterr().err)
    assert rc == 2 and re.search(rf"{out} cannot be written to .*choose", line), line


def test_lora_target_modules_of_a_hub_model_are_checked_from_its_config(
    one_error, train, tmp_path, capsys, no_model, monkeypatch
):
    # Hub models were left to the loader: a target no layer has (q_proj on GPT-2, whose attention is c_attn)
    # failed in peft after the model had been downloaded and loaded. Now their config is read from the Hub cache
    # (faked here: this machine has no network).
    import hf_dpo.model.checks

    asked = []

    def layers(model):
        asked.append(model)
        return ("transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc")

    monkeypatch.setattr(hf_dpo.model.checks, "_linear_layer_names", layers)
    rc, err = train(
        tmp_path, capsys, "model_name_or_path: openai-community/gpt2\nlora_target_modules: [q_proj]\n"
    )
    assert asked == ["openai-community/gpt2"]
    assert rc == 2 and re.search(
        r"q_proj matches no linear layer of openai-community/gpt2.*c_attn", one_error(err)
    )


def test_a_model_config_json_that_is_no_mapping_is_named_before_the_model_loads(
    one_error, train, tmp_path, capsys, no_model, smollm_dir
):
    # A config.json holding a list (a file overwritten by another tool): transformers' TypeError ("argument after
    # ** must be a mapping") came out of the preflight's tokenizer load_recipe_text as a traceback.
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    for name in Path(smollm_dir).iterdir():
        if "token" in name.name:
            shutil.copy(name, model / name.name)
    (model / "config.json").write_text("[1, 2]")
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2 and re.search(r"key 'model_name_or_path': .*config.json", one_error(err))


def _model_dir(tmp_path: Path, name: str, vocab_size: int) -> Path:
    """A model directory as save_pretrained writes it (config, a small safetensors file), no tokenizer."""
    import torch
    from safetensors.torch import save_file

    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": vocab_size}))
    save_file({"lm_head.weight": torch.zeros(2, 2)}, directory / "model.safetensors")
    return directory


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: tmp / "missing", r"key 'ref_model_name_or_path': .*missing does not exist"),
        (
            lambda tmp: write_adapter(tmp / "sft", "base"),
            r"key 'ref_model_name_or_path': .*is a LoRA adapter.*merge",
        ),
        (
            lambda tmp: _model_dir(tmp, "other-family", 32000),
            r"vocabulary of 32000 tokens, the policy .* one of 49152",
        ),
    ],
    ids=["missing", "adapter", "other-vocabulary"],
)
def test_a_reference_model_that_cannot_score_the_policys_tokens_is_named_before_any_model_loads(
    one_error, train, tmp_path, capsys, no_model, tiny_model_dir, make, expected
):
    ref = make(tmp_path)
    rc, err = train(
        tmp_path, capsys, f"model_name_or_path: {tiny_model_dir}\nref_model_name_or_path: {ref}\n"
    )
    assert rc == 2
    assert re.search(expected, one_error(err)), err


def test_a_reference_model_beside_a_starting_adapter_is_refused(tmp_path, load_recipe_text):
    from hf_dpo.config import RecipeError

    with pytest.raises(RecipeError, match="key 'ref_model_name_or_path'.*adapter_name_or_path.*Remove one"):
        load_recipe_text(
            tmp_path, "output_dir: x\nref_model_name_or_path: org/sft\nadapter_name_or_path: runs/a\n"
        )
