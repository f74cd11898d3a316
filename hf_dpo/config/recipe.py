"""The recipe: one flat YAML file (alignment-handbook style) read into the five sections through
`HfArgumentParser` (YAML values as defaults, then `--key value`).

    recipe = load_recipe("recipes/demo.yaml", ["--max_steps", "10"])
    recipe.model, recipe.data, recipe.training, recipe.sampling, recipe.report

Unknown keys are an error naming the nearest valid key, in the recipe and on the command line alike.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_dpo.argv import numbers_read_as_values
from hf_dpo.config.data import DataConfig
from hf_dpo.config.dpo import DPOConfig
from hf_dpo.config.dpo_checks import auto_bool
from hf_dpo.config.early import where, whole_number_text
from hf_dpo.config.errors import RecipeError
from hf_dpo.config.keys import check_keys
from hf_dpo.config.model import ModelConfig, warn_unused_lora_keys
from hf_dpo.config.report import ReportConfig
from hf_dpo.config.sampling import SamplingConfig
from hf_dpo.config.yaml_io import MAX_VALUE_ITEMS, RecipeDumper, RecipeLoader, expands_past, read_recipe_file
from hf_dpo.errors import MAX_QUOTED, quoted, shortened
from hf_dpo.validate import METADATA_KEYS

RECIPE_SECTIONS = (ModelConfig, DataConfig, DPOConfig, SamplingConfig, ReportConfig)


@dataclass
class Recipe:
    """A parsed recipe: one instance of each config section, plus where it came from."""

    model: ModelConfig
    data: DataConfig
    training: DPOConfig
    sampling: SamplingConfig
    report: ReportConfig
    path: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the keys the recipe and overrides set, resolved

    def to_yaml(self) -> str:
        """The recipe as run (recipe keys plus overrides); secrets such as hub_token are never written."""
        clean = {k: v for k, v in self.values.items() if k not in SECRET_KEYS}
        return yaml.dump(clean, Dumper=RecipeDumper, sort_keys=False)


SECRET_KEYS = {"hub_token"}


def all_field_names() -> dict[str, type]:
    """Every key a recipe may set, mapped to the section that owns it."""
    names: dict[str, type] = {}
    for section in RECIPE_SECTIONS:
        for f in dataclasses.fields(section):
            if f.init:
                names.setdefault(f.name, section)
    return names


def _text_value(convert):
    """An argparse `type` that reads `[a, b]` / `{k: v}` as YAML and `null` / `~` as None, the rest with `convert`
    (the type `HfArgumentParser` derived from the field)."""

    def parse(text: str):
        stripped = text.strip()
        if stripped[:1] in ("[", "{"):
            try:
                value = yaml.load(stripped, Loader=RecipeLoader)  # as the recipe file reads it
            except yaml.YAMLError as err:
                raise argparse.ArgumentTypeError(f"not a valid YAML list or mapping: {err}") from None
            except RecursionError:
                raise argparse.ArgumentTypeError("a list or mapping nested too deeply") from None
            if expands_past(value):
                raise argparse.ArgumentTypeError(
                    f"more than {MAX_VALUE_ITEMS} values once its YAML aliases (*name) are expanded"
                )
            return value
        if stripped in ("null", "~"):
            return None
        if convert is int:
            return whole_number_text(text)
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid <type> value"
    return parse


def _auto_bool_text(text: str) -> bool | str:
    """precompute_ref_log_probs as argparse reads it; the error says what it may be (argparse would print the
    function's name: "invalid <lambda> value")."""
    try:
        return auto_bool(text, "precompute_ref_log_probs")
    except RecipeError:
        raise argparse.ArgumentTypeError(f"expected true, false or auto, got {quoted(text)}") from None


class _RecipeArgumentParser(HfArgumentParser):
    """`HfArgumentParser`, which hands a field's metadata to argparse's add_argument, without the metadata only
    `hf_dpo.validate` reads (a key's range, its choices: checked there, with the message that names the key)."""

    @staticmethod
    def _parse_dataclass_field(parser, field):
        if METADATA_KEYS & field.metadata.keys():
            field = copy.copy(field)
            field.metadata = {k: v for k, v in field.metadata.items() if k not in METADATA_KEYS}
        HfArgumentParser._parse_dataclass_field(parser, field)


def recipe_parser(prog: str = "hf-dpo train") -> HfArgumentParser:
    """`HfArgumentParser` over the five sections: one `--key value` option per field, typed from the dataclass.

    A key that two sections share (`trust_remote_code`, in `ModelConfig` and in TRL's `DPOConfig`) is one option;
    its value goes to both."""
    fields = [f for section in RECIPE_SECTIONS for f in dataclasses.fields(section)]
    declared = [f.type for f in fields]
    parser = _RecipeArgumentParser(
        RECIPE_SECTIONS, prog=prog, allow_abbrev=False, exit_on_error=False, conflict_handler="resolve"
    )
    # HfArgumentParser narrows `int | None` to `int` on the dataclass field itself: put the declared types back.
    for f, type_ in zip(fields, declared):
        f.type = type_
    for action in parser._actions:
        if action.dest == "precompute_ref_log_probs":
            action.type = _auto_bool_text
        if action.dest in (
            "bf16",
            "gradient_checkpointing",
        ):  # `bool | None` (TRL's default where unset): a flag too
            action.nargs, action.const = "?", True
        if action.type is not None:
            action.type = _text_value(action.type)
        if action.help:  # a literal "15% in" would read as a %-format in --help
            action.help = re.sub(r"%(?!\()", "%%", action.help)
    return numbers_read_as_values(parser)


def _as_default(action: argparse.Action, value: Any) -> Any:
    """A YAML value as the default of its option. argparse converts string defaults with the option's type;
    YAML 1.1 reads `no`/`yes`/`off` as booleans, which string keys (`eval_strategy: no`) mean as words."""
    if isinstance(value, bool) and action.const is not True:
        return "yes" if value else "no"
    if action.nargs == "+" and isinstance(value, str):
        return [value]
    return value


def _given_keys(parser: argparse.ArgumentParser, overrides: list[str]) -> list[str]:
    """The field names the command-line tokens set, in order."""
    keys = []
    for token in overrides:
        action = parser._option_string_actions.get(token.partition("=")[0])
        if token.startswith("--") and action is not None and action.dest not in keys:
            keys.append(action.dest)
    return keys


def _parse(parser: HfArgumentParser, values: dict[str, Any], overrides: list[str], path) -> dict[str, Any]:
    """YAML values as defaults, then the command line: every field's value, typed."""
    actions: dict[str, argparse.Action] = {}
    for action in parser._actions:  # the typed option, not its `--no_<key>` complement
        actions.setdefault(action.dest, action)
    parser.set_defaults(**{key: _as_default(actions[key], value) for key, value in values.items()})
    given = _given_keys(parser, overrides)
    try:
        namespace, rest = parser.parse_known_args(overrides)
    except argparse.ArgumentError as err:
        key = err.argument_name.split("/")[0].lstrip("-").replace("-", "_") if err.argument_name else "?"
        where = "command line" if key in given or key == "?" else f"Recipe {path}"
        message = err.message
        if "invalid float value" in message or "invalid int value" in message:
            whole = "a whole number" if "invalid int value" in message else "a number"
            message = f"expected {whole}, got " + shortened(
                message.partition(" value: ")[2].strip(), MAX_QUOTED
            )
        message = shortened(message, 400)  # argparse quotes the value whole
        raise RecipeError(f"{where}: key '{key}': {message}.") from None
    for token in rest:
        if not token.startswith("--"):
            raise RecipeError(f"command line: expected --key value, got '{token}'.")
        check_keys([token[2:].partition("=")[0].replace("-", "_")], sorted(actions), "command line")
    parsed = vars(namespace)
    for key, action in actions.items():  # `--key [a, b]` on a list key: one YAML list, not a list of lists
        value = parsed.get(key)
        if action.nargs == "+" and isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
            parsed[key] = value[0]
    return parsed


def _refused_choice_key(message: str, kwargs: dict[str, Any]) -> str | None:
    """The key of a value transformers refused as no member of one of its choices ("X is not a valid
    SchedulerType"): the one key set to X, or None."""
    refused = re.match(r"(.+?) is not a valid \w+, please select one of", message)
    if not refused:
        return None
    keys = [key for key, value in kwargs.items() if isinstance(value, str) and value == refused.group(1)]
    return keys[0] if len(keys) == 1 else None


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Parse a recipe file plus `--key value` overrides into typed configs, through `HfArgumentParser`.

    Raises RecipeError naming the file and key for unknown keys, wrong types or invalid values.
    """
    valid = sorted(all_field_names())
    values = read_recipe_file(path) if path is not None else {}
    check_keys(values, valid, f"Recipe {path}")
    if "output_dir" not in values:
        values["output_dir"] = f"runs/{Path(path).stem if path else 'run'}"
    overrides = list(overrides or [])
    parser = recipe_parser()
    parsed = _parse(parser, values, overrides, path)
    given = _given_keys(parser, overrides)
    values.update({key: parsed[key] for key in given})
    built = {}
    for section in RECIPE_SECTIONS:
        kwargs = {f.name: parsed[f.name] for f in dataclasses.fields(section) if f.init and f.name in parsed}
        try:
            built[section] = section(**kwargs)
        except RecipeError as err:
            raise RecipeError(f"{where(path, str(err), given)}: {err}") from None
        except (TypeError, ValueError, OverflowError, OSError, ImportError, KeyError, AssertionError) as err:
            # transformers' own TrainingArguments checks (a deepspeed file that is missing, bf16 on a CPU, ...)
            key = _refused_choice_key(str(err), kwargs)
            if key:  # "cosinee is not a valid SchedulerType, please select one of [...]": the key is known
                message = f"key '{key}': {err}"
                raise RecipeError(f"{where(path, message, given)}: {message}") from None
            if "doesn't support bf16" in str(err):
                # transformers' advice (use_cpu) would train in bf16 autocast on the CPU, many times slower there
                message = (
                    "key 'bf16': this machine has no GPU with bf16. Set bf16: false: hf_dpo picks the precision "
                    "from torch_dtype (auto: float32 on CPU, bf16 on a GPU that has it, else fp16)."
                )
                raise RecipeError(f"{where(path, message, given)}: {message}") from None
            raise RecipeError(
                f"{where(path, str(err), given)}: invalid value in section {section.__name__}: "
                f"{type(err).__name__}: {shortened(str(err), 400)}"
            ) from None
    warn_unused_lora_keys(built[ModelConfig], values)
    return Recipe(
        model=built[ModelConfig],
        data=built[DataConfig],
        training=built[DPOConfig],
        sampling=built[SamplingConfig],
        report=built[ReportConfig],
        path=str(path) if path else None,
        values=values,
    )


def recipe_help_parser(prog: str = "hf-dpo train") -> argparse.ArgumentParser:
    """An argparse parser whose --help lists every recipe key with its help text."""
    parser = recipe_parser(prog)
    parser.add_argument("recipe", nargs="?", help="Path to a YAML recipe in recipes/.")
    return parser
