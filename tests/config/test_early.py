"""hf_dpo/config/early.py: the values of hf_dpo's own sections checked before transformers is imported, with the
message `load_recipe` gives for the same value, and nothing refused that `load_recipe` accepts."""

from __future__ import annotations

import pytest

from hf_dpo.config import RecipeError, load_recipe
from hf_dpo.config.early import check_recipe_early

BASE = "model_name_or_path: smollm2-135m-instruct\ndataset_name: recipes/data/demo\n"

BAD = {
    "a range in the recipe": ("beta: -1\n", []),
    "a range on the command line": ("", ["--lora_r", "0"]),
    "a number that is text": ("", ["--beta", "abc"]),
    "a whole number that is not": ("lora_r: 1.5\n", []),
    "a quoted number that is not": ('learning_rate: "fast"\n', []),
    "an unknown loss": ("loss_type: nope\n", []),
    "keys that clash, one from the command line": (
        "max_length: 100\nmax_prompt_length: 60\n",
        ["--max_length", "50"],
    ),
    "a choice": ("", ["--prefix_sharing_attention", "dense"]),
    "greedy sampling of several answers": ("sampling_temperature: 0\nnum_samples_per_prompt: 4\n", []),
    "a list key given as one name with commas": ("lora_target_modules: q_proj,v_proj\n", []),
    "a report count": ("", ["--eval_num_generations", "-3"]),
    "a whole number with a fraction, on the command line": ("", ["--eval_num_generations", "1.5"]),
    "a blank name": ("", ["--model_name_or_path", "  "]),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_value_is_named_as_load_recipe_names_it(case, tmp_path):
    text, overrides = BAD[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(BASE + text)
    with pytest.raises(RecipeError) as slow:
        load_recipe(recipe, overrides)
    with pytest.raises(RecipeError) as early:
        check_recipe_early(recipe, overrides)
    assert str(early.value) == str(slow.value)


GOOD = {
    "a bad recipe value overridden by a list of names": (
        "lora_target_modules: q_proj,v_proj\n",
        ["--lora_target_modules", "q_proj", "v_proj"],
    ),
    "a boolean switched off by --no_": ("prefix_sharing: maybe\n", ["--no_prefix_sharing"]),
    "YAML 1.1 no for a TrainingArguments string key": ("save_strategy: no\n", []),
    "a list as YAML text": ("", ["--loss_type=[sigmoid, sft]", "--loss_weights", "[1, 0.5]"]),
    "a quoted number and a flag": ('beta: "0.2"\nlora_r: "8"\n', ["--bf16", "false", "--use_weighting"]),
    "null on the command line": ("", ["--max_prompt_length", "null", "--rpo_alpha=~"]),
    "a whole number written as an exponent, as the recipe file takes it": (
        "",
        ["--eval_num_generations", "1e3"],
    ),
}


@pytest.mark.parametrize("case", GOOD)
def test_nothing_load_recipe_accepts_is_refused(case, tmp_path):
    text, overrides = GOOD[case]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(BASE + text)
    load_recipe(recipe, overrides)
    sections = check_recipe_early(recipe, overrides)
    assert sections.data.dataset_name == "recipes/data/demo"
