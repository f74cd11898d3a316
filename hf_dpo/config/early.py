"""The recipe checks a command makes before it imports the training stack (torch, transformers, peft: seconds):
its YAML and keys (`hf_dpo.config.keys`), then the values of hf_dpo's own sections, `ModelConfig`, `DataConfig`,
`DPOKeys`, `SamplingConfig` and `ReportConfig`, which are plain dataclasses with their checks in `__post_init__`.

    sections = check_recipe_early("recipes/demo.yaml", ["--beta", "-1"])
    # RecipeError: command line: key 'beta': must be > 0, got -1.0.

`load_recipe` stays the one reader of a recipe: it types every value through `HfArgumentParser`, and
transformers' `TrainingArguments` checks its own keys there. This check raises only what `load_recipe` would
raise for the same value, with the same message; a value it does not type as that parser would (an override
spread over several tokens, `--no_key`, YAML inside an override, a boolean's text the parser refuses) leaves its
section to `load_recipe`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from hf_dpo.config.data import DataConfig
from hf_dpo.config.dpo_checks import check_dpo_keys
from hf_dpo.config.dpo_keys import DPOKeys
from hf_dpo.config.errors import RecipeError
from hf_dpo.config.keys import check_recipe_keys
from hf_dpo.config.model import ModelConfig
from hf_dpo.config.report import ReportConfig
from hf_dpo.config.sampling import SamplingConfig
from hf_dpo.config.yaml_io import read_recipe_file
from hf_dpo.errors import MAX_QUOTED, shortened
from hf_dpo.validate import kinds_of

# transformers' `string_to_bool`, as `HfArgumentParser` reads a boolean key's text
TRUE_TEXT, FALSE_TEXT = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


@dataclass
class RecipeSections:
    """hf_dpo's own sections of a recipe, checked; no TrainingArguments keys (`load_recipe` gives those). A section
    is None where one of its values is left for `load_recipe` to type."""

    model: ModelConfig | None
    data: DataConfig | None
    dpo: DPOKeys | None
    sampling: SamplingConfig | None
    report: ReportConfig | None
    path: str | None = None


class _Untyped(Exception):
    """A value this check cannot type as `HfArgumentParser` would: left for `load_recipe`."""


UNREAD = object()  # an override this check does not read: its key's section is left for `load_recipe`


def where(path, message: str, given: list[str]) -> str:
    """Where a bad value came from: the command line when the key the message names was given there (or there
    is no recipe file), else the recipe file, naming the command-line keys that met it (a check between two
    keys can fail on the recipe's value because of an override)."""
    named = re.match(r"key '(\w+)'", message)
    if path is None or (named and named.group(1) in given):
        return "command line"
    if given:
        return f"Recipe {path} (with {', '.join('--' + key for key in given)} from the command line)"
    return f"Recipe {path}"


def _override_values(overrides: list[str], fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """{key: text} of the `--key value` / `--key=value` overrides of `fields` given as one token each (a boolean
    key also as a bare `--key`); a key given otherwise (a list over several tokens, `--no_key`) maps to UNREAD:
    `load_recipe`'s parser reads it."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(overrides):
        token = overrides[i]
        i += 1
        if not token.startswith("--"):
            continue
        key, eq, text = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            if key in fields:
                values[key] = text
            continue
        taken = []
        while i < len(overrides) and not overrides[i].startswith("--"):
            taken.append(overrides[i])
            i += 1
        if key.startswith("no_") and key[3:] in fields:
            values[key[3:]] = UNREAD
        if key not in fields:
            continue
        if len(taken) == 1:
            values[key] = taken[0]
        elif not taken and "bool" in kinds_of(fields[key].type):
            values[key] = True  # `--bf16`: a flag
        else:
            values[key] = UNREAD  # several values, or none: argparse's to read
    return values


def _typed(key: str, value: Any, ftype: Any) -> Any:
    """A text value typed as `HfArgumentParser` types it for a key of type `ftype` (YAML gives the recipe's values
    typed already; a quoted number and every override are text); _Untyped where that would take its parser."""
    if value is UNREAD:
        raise _Untyped
    kinds = kinds_of(ftype)
    if isinstance(value, str) and value.strip() in ("null", "~"):
        return None
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        raise _Untyped  # the parser reads such text as YAML (a list or mapping), for a string key too
    if isinstance(value, str) and "list" in kinds and "str" not in kinds:
        return [value]  # `key: name` for a list key, or `--key name`: the parser's one-item list
    if isinstance(value, bool) and "bool" not in kinds:
        # YAML 1.1 reads no/yes/off as booleans, which the parser gives a string key as the word (`_as_default`)
        if "str" in kinds:
            return "yes" if value else "no"
        raise _Untyped
    if not isinstance(value, str) or "str" in kinds or "Any" in kinds:
        return value
    text = value.strip()
    if "bool" in kinds:
        if text.lower() in TRUE_TEXT + FALSE_TEXT:
            return text.lower() in TRUE_TEXT
        raise _Untyped
    number = int if "int" in kinds else float if "float" in kinds else None
    if number is None:
        raise _Untyped
    try:
        return whole_number_text(text) if number is int else float(text)
    except ValueError:  # argparse's "invalid int value: '1.5'", as load_recipe words it
        whole = "a whole number" if number is int else "a number"
        raise RecipeError(
            f"key '{key}': expected {whole}, got {shortened(repr(value), MAX_QUOTED)}."
        ) from None


def whole_number_text(text: str) -> int | float:
    """An int key's text as argparse reads it: `1000`, or written as a float (`1e3`, `1.0e+3`), which the
    recipe file takes for the same key, so `--key 1e3` and `key: 1e3` read alike. A float is returned as it is:
    `hf_dpo.validate.check_type` makes an integral one an int and refuses one with a fraction or past 2^53, the
    same way for both."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise ValueError(text) from None  # argparse: "invalid int value", read as "expected a whole number"
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _section_kwargs(section, values: dict[str, Any]) -> dict[str, Any]:
    """The section's values, typed; _Untyped when one of them cannot be (a check between keys would then meet a
    default the recipe did not set: the section is left to load_recipe)."""
    return {
        f.name: _typed(f.name, values[f.name], f.type)
        for f in dataclasses.fields(section)
        if f.init and f.name in values
    }


def _dpo_keys(**kwargs) -> DPOKeys:
    keys = DPOKeys(**kwargs)
    check_dpo_keys(keys)
    return keys


def check_recipe_early(path: str | os.PathLike | None, overrides: list[str]) -> RecipeSections:
    """The recipe's YAML and keys, then the values of hf_dpo's own sections, checked without importing
    transformers or torch. Raises RecipeError as `load_recipe` does."""
    check_recipe_keys(path, overrides)
    values = read_recipe_file(path) if path is not None else {}
    builders = {
        "model": ModelConfig,
        "data": DataConfig,
        "dpo": _dpo_keys,
        "sampling": SamplingConfig,
        "report": ReportConfig,
    }
    fields = {
        f.name: f
        for section in (ModelConfig, DataConfig, DPOKeys, SamplingConfig, ReportConfig)
        for f in dataclasses.fields(section)
    }
    values.update(_override_values(overrides, fields))
    given = list(
        dict.fromkeys(t[2:].partition("=")[0].replace("-", "_") for t in overrides if t.startswith("--"))
    )
    sections = {}
    for name, build in builders.items():
        section = DPOKeys if build is _dpo_keys else build
        try:
            sections[name] = build(**_section_kwargs(section, values))
        except _Untyped:
            sections[name] = None
        except RecipeError as err:
            raise RecipeError(f"{where(path, str(err), given)}: {err}") from None
    return RecipeSections(**sections, path=str(path) if path else None)
