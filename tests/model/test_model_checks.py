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


def arithmetic_pairs(n: int = 4) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": f"{i}?"} for i in range(n)]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(tmp_path: Path, capsys, recipe: str = "", *overrides: str) -> tuple[int, str]:
    """`hf-dpo train RECIPE OVERRIDES` in-process on tmp_path/data (a train and a test split unless the test
    wrote its own): (exit code, stderr)."""
    data = tmp_path / "data"
    if not data.exists():
        write_jsonl(data / "train.jsonl", arithmetic_pairs(6))
        write_jsonl(data / "test.jsonl", arithmetic_pairs(2))
    path = tmp_path / "r.yaml"
    path.write_text(f"dataset_name: {data}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\n{recipe}")
    rc = cli.main(["train", str(path), *overrides])
    return rc, capsys.readouterr().err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def load(tmp_path: Path, text: str, *overrides: str):
    from hf_dpo.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, list(overrides))


def test_an_attention_kernel_transformers_does_not_know_is_named_before_the_model_loads(
    tmp_path, capsys, no_model
):
    # Before: a ValueError traceback from transformers once the model's weights were fetched.
    rc, err = train(tmp_path, capsys, "attn_implementation: flash_attn_2\n")
    assert rc == 2
    line = one_error(err)
    assert re.search(r"key 'attn_implementation': 'flash_attn_2' is not one of .*sdpa", line), line
    assert "Did you mean 'flash_attention_2'" in line


def test_flash_attention_without_its_package_is_named_before_the_model_loads(
    tmp_path, capsys, no_model, monkeypatch
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


def test_a_lora_adapter_given_as_the_model_is_named_with_the_keys_to_use(tmp_path, capsys, no_model):
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
    tmp_path, capsys, no_model, what
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
def test_lora_target_modules_written_as_one_comma_list_is_named(tmp_path, recipe, overrides):
    # Before: one module named 'q_proj, v_proj', which no layer has: for a Hub model peft said so only after the
    # model had loaded.
    from hf_dpo.config import RecipeError

    with pytest.raises(
        RecipeError, match=r"key 'lora_target_modules': 'q_proj, ?v_proj' .*\[q_proj, v_proj\]"
    ):
        load(tmp_path, recipe, *overrides)
    assert load(tmp_path, "lora_target_modules: [q_proj, v_proj]\n").model.lora_target_modules == [
        "q_proj",
        "v_proj",
    ]


@pytest.mark.parametrize("out", ["a_file", "a_file/merged"])
def test_merge_into_a_place_that_cannot_hold_it_is_named_before_the_base_loads(
    tmp_path, capsys, monkeypatch, out
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
    tmp_path, capsys, no_model, monkeypatch
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
    tmp_path, capsys, no_model, smollm_dir
):
    # A config.json holding a list (a file overwritten by another tool): transformers' TypeError ("argument after
    # ** must be a mapping") came out of the preflight's tokenizer load as a traceback.
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    for name in Path(smollm_dir).iterdir():
        if "token" in name.name:
            shutil.copy(name, model / name.name)
    (model / "config.json").write_text("[1, 2]")
    rc, err = train(tmp_path, capsys, f"model_name_or_path: {model}\n")
    assert rc == 2 and re.search(r"key 'model_name_or_path': .*config.json", one_error(err))
