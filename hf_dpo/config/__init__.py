"""Typed configuration for hf_dpo runs, and recipe loading.

A recipe is one flat YAML file (alignment-handbook style). Each key belongs to exactly one of five
dataclasses: `ModelConfig` (model.py), `DataConfig` (data.py), `DPOConfig` (dpo.py, a
`transformers.TrainingArguments`; its cross-key checks in dpo_checks.py), `SamplingConfig` (sampling.py: step 1)
and `ReportConfig` (report.py: the evaluation report, whose judge and held-out prompts step 1 uses too).
Every field carries help text, which doubles as `hf-dpo train --help`, and its range or choices beside it
(read by `hf_dpo.validate`). `recipe.py` reads a recipe through `HfArgumentParser`; `yaml_io.py` is its YAML.

    recipe = load_recipe("recipes/demo.yaml", ["--max_steps", "10"])
    recipe.model, recipe.data, recipe.training, recipe.sampling, recipe.report
"""

from hf_dpo.config.data import DataConfig
from hf_dpo.config.dpo_checks import F_DIVERGENCE_LOSSES, F_DIVERGENCES, LOSS_TYPES
from hf_dpo.config.errors import RecipeError
from hf_dpo.config.model import ModelConfig
from hf_dpo.config.report import ReportConfig
from hf_dpo.config.sampling import SamplingConfig
from hf_dpo.config.yaml_io import read_recipe_file

# Imported when first asked for: they import transformers (TrainingArguments, HfArgumentParser) and with it torch,
# which `hf-dpo keys`, `--help` and the recipe checks before a model loads do without (hf_dpo.config.keys).
_FROM_RECIPE = {
    "RECIPE_SECTIONS",
    "SECRET_KEYS",
    "Recipe",
    "all_field_names",
    "load_recipe",
    "recipe_help_parser",
    "recipe_parser",
}


def __getattr__(name: str):
    if name == "DPOConfig":
        from hf_dpo.config.dpo import DPOConfig

        return DPOConfig
    if name in _FROM_RECIPE:
        from hf_dpo.config import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'hf_dpo.config' has no attribute {name!r}")


__all__ = [
    "DPOConfig",
    "DataConfig",
    "F_DIVERGENCES",
    "F_DIVERGENCE_LOSSES",
    "LOSS_TYPES",
    "ModelConfig",
    "RECIPE_SECTIONS",
    "Recipe",
    "RecipeError",
    "ReportConfig",
    "SECRET_KEYS",
    "SamplingConfig",
    "all_field_names",
    "load_recipe",
    "read_recipe_file",
    "recipe_help_parser",
    "recipe_parser",
]
