"""`use_peft` (alignment-handbook's key): true trains a LoRA adapter, false every weight of the model; the keys
that cannot go with a full fine-tune are named when the recipe is read, before anything loads."""

from __future__ import annotations

import logging

import pytest

from hf_dpo.config import RecipeError


def test_use_peft_defaults_to_lora_on_a_4bit_base_and_false_to_full_precision(tmp_path, load_recipe_text):
    """quantization left unset follows use_peft: 4bit for LoRA (the committed recipes' behaviour), none for a
    full fine-tune, whose weights must be trainable."""
    lora = load_recipe_text(tmp_path, "output_dir: x\n")
    assert (lora.model.use_peft, lora.model.quantization) == (True, "4bit")
    full = load_recipe_text(tmp_path, "output_dir: x\nuse_peft: false\n")
    assert (full.model.use_peft, full.model.quantization) == (False, "none")
    assert load_recipe_text(tmp_path, "output_dir: x\n", "--use_peft", "false").model.quantization == "none"
    explicit = load_recipe_text(tmp_path, "output_dir: x\nuse_peft: false\nquantization: none\n")
    assert explicit.model.quantization == "none"


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_a_full_finetune_of_a_quantized_base_names_both_keys_and_the_fix(tmp_path, load_recipe_text, bits):
    with pytest.raises(RecipeError) as err:
        load_recipe_text(tmp_path, f"output_dir: x\nuse_peft: false\nquantization: {bits}\n")
    message = str(err.value)
    assert message.startswith(
        f"Recipe {tmp_path / 'r.yaml'}: key 'quantization': {bits} with use_peft: false"
    )
    assert "cannot be trained" in message and "Set quantization: none" in message
    assert "use_peft: true" in message  # the other way out: QLoRA


def test_the_quantization_error_stops_hf_dpo_train_before_any_model_loads(
    tmp_path, capsys, train, no_model, one_error
):
    rc, err = train(tmp_path, capsys, "use_peft: false\n", "--quantization", "4bit")
    assert rc == 2
    line = one_error(err)
    assert (
        "command line: key 'quantization': 4bit with use_peft: false" in line and "quantization: none" in line
    )


def test_a_starting_adapter_cannot_go_with_a_full_finetune(tmp_path, load_recipe_text):
    """The adapter would be dropped silently (the full model trains without it): an error saying how to keep it."""
    with pytest.raises(RecipeError, match="key 'adapter_name_or_path'.*use_peft: false.*hf-dpo merge"):
        load_recipe_text(tmp_path, "output_dir: x\nuse_peft: false\nadapter_name_or_path: runs/sft\n")


def test_lora_keys_beside_use_peft_false_are_named_in_a_warning_not_refused(
    tmp_path, load_recipe_text, caplog
):
    """As TRL's ModelConfig, a full fine-tune ignores the lora_* keys: a recipe switched to use_peft: false runs
    unchanged, and the warning names each key it does not use (those from the command line too)."""
    with caplog.at_level(logging.WARNING, logger="hf_dpo.config.model"):
        recipe = load_recipe_text(
            tmp_path, "output_dir: x\nuse_peft: false\nlora_r: 8\nlora_alpha: 16\n", "--lora_dropout", "0.1"
        )
    assert recipe.model.use_peft is False
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        "lora_r, lora_alpha, lora_dropout not used: use_peft: false trains every weight"
    )
    assert "lora_target_modules" not in warning  # left at its default: not the user's


@pytest.mark.parametrize("text", ["output_dir: x\nlora_r: 8\n", "output_dir: x\nuse_peft: false\n"])
def test_no_warning_where_every_key_given_is_used(tmp_path, load_recipe_text, caplog, text):
    with caplog.at_level(logging.WARNING, logger="hf_dpo.config.model"):
        load_recipe_text(tmp_path, text)
    assert not [r for r in caplog.records if r.name == "hf_dpo.config.model"]


def test_hf_dpo_keys_lists_use_peft_with_its_meaning(capsys):
    from hf_dpo import cli

    assert cli.main(["keys", "use_peft"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("use_peft")]
    assert line.split()[1] == "true"
    assert "false: a full fine-tune, every weight trained in torch_dtype" in line
    assert cli.main(["keys", "quantization"]) == 0
    assert "Default: 4bit with use_peft: true, none with use_peft: false" in capsys.readouterr().out
