"""hf_dpo.config: recipes parse into typed configs; typos are errors that name the nearest key."""

import dataclasses
from pathlib import Path

import pytest

from hf_dpo.config import (
    RECIPE_SECTIONS,
    DataConfig,
    ModelConfig,
    RecipeError,
    SamplingConfig,
    load_recipe,
)

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "demo.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.model.model_name_or_path
    assert recipe.data.dataset_name or recipe.sampling.prompts_file


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_opens_with_its_command(path):
    head = "\n".join(path.read_text().splitlines()[:5])
    assert "make " in head or "hf-dpo " in head, f"{path.name} must open with the command that runs it"


@pytest.mark.parametrize("section", [ModelConfig, DataConfig, SamplingConfig])
def test_every_field_has_help(section):
    for f in dataclasses.fields(section):
        assert f.metadata.get("help"), f"{section.__name__}.{f.name} has no help text"


def test_dpo_fields_have_help():
    from transformers import TrainingArguments

    from hf_dpo.config import DPOConfig

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    for f in dataclasses.fields(DPOConfig):
        if f.name not in base or f.name == "remove_unused_columns":
            assert f.metadata.get("help"), f"DPOConfig.{f.name} has no help text"


def test_no_key_is_owned_twice():
    seen = {}
    for section in RECIPE_SECTIONS:
        for f in dataclasses.fields(section):
            assert f.name not in seen, f"{f.name} is in {section.__name__} and {seen[f.name]}"
            seen[f.name] = section.__name__


def test_unknown_key_names_the_file_and_nearest_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\nlora_rnak: 8\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown key 'lora_rnak'. Did you mean 'lora_r'"):
        load_recipe(bad)


def test_unknown_override_is_an_error():
    with pytest.raises(RecipeError, match="command line: unknown key 'lerning_rate'.*'learning_rate'"):
        load_recipe(RECIPES[0], ["--lerning_rate", "1e-4"])


def test_overrides_are_typed_and_win_over_the_recipe(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("lora_r: 8\nlearning_rate: 5.0e-5\ndataset_name: data.jsonl\n")
    recipe = load_recipe(
        recipe_file,
        [
            "--lora_r",
            "4",
            "--learning_rate=1e-3",
            "--gradient_checkpointing",
            "--lora_target_modules",
            "[q_proj, v_proj]",
        ],
    )
    assert recipe.model.lora_r == 4
    assert recipe.training.learning_rate == pytest.approx(1e-3)
    assert recipe.training.gradient_checkpointing is True
    assert recipe.model.lora_target_modules == ["q_proj", "v_proj"]
    assert recipe.training.output_dir == "runs/r"
    assert recipe.values["lora_r"] == 4


def test_bad_values_are_named(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("loss_type: kto\n")
    with pytest.raises(RecipeError, match="r.yaml.*loss_type.*'kto'"):
        load_recipe(recipe_file)
    recipe_file.write_text("learning_rate: fast\n")
    with pytest.raises(RecipeError, match="learning_rate.*expected a number"):
        load_recipe(recipe_file)
    recipe_file.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(recipe_file)
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_saved_recipe_never_holds_the_token(tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text("dataset_name: d.jsonl\n")
    recipe = load_recipe(recipe_file, ["--hub_token", "hf_secret123"])
    assert recipe.training.hub_token == "hf_secret123"
    assert "hf_secret123" not in recipe.to_yaml()


def test_every_n_layers_is_checked(tmp_path, monkeypatch):
    recipe = tmp_path / "ckpt.yaml"
    recipe.write_text(
        "model_name_or_path: x\ngradient_checkpointing: true\n"
        "gradient_checkpointing_kwargs: {use_reentrant: false, every_n_layers: 2}\n"
    )
    loaded = load_recipe(str(recipe))
    assert loaded.training.activation_checkpointing_kwargs["every_n_layers"] == 2
    with pytest.raises(RecipeError, match="every_n_layers must be an integer >= 1"):
        load_recipe(str(recipe), ["--gradient_checkpointing_kwargs", '{"every_n_layers": 0}'])
    # a transformers without selective checkpointing: a clear error at load time, not a TypeError at step 1
    from transformers import PreTrainedModel

    monkeypatch.delattr(PreTrainedModel, "activation_checkpointing_enable")
    with pytest.raises(RecipeError, match="needs a transformers with selective checkpointing"):
        load_recipe(str(recipe))
