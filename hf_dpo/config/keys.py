"""Every recipe key, known without importing torch or transformers: what `hf-dpo keys` lists, and what a command
checks a recipe's keys against before it imports the training stack (a misspelled key is named at once, not
after the many seconds that importing torch, transformers, peft and bitsandbytes takes).

hf_dpo's sections are plain dataclasses (`ModelConfig`, `DataConfig`, `DPOKeys`: the DPO objective,
`SamplingConfig`, `ReportConfig`); the rest of `DPOConfig`, transformers' `TrainingArguments`, is read from its source file: its
fields with their literal defaults and help, as `dataclasses.fields` gives them (tests/config/test_config.py checks that
the two agree); where that file cannot be read, from the imported class.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hf_dpo.config.data import DataConfig
from hf_dpo.config.dpo_keys import DPOKeys
from hf_dpo.config.errors import RecipeError, suggest
from hf_dpo.config.model import ModelConfig
from hf_dpo.config.report import ReportConfig
from hf_dpo.config.sampling import SamplingConfig
from hf_dpo.config.yaml_io import read_recipe_file


@dataclass(frozen=True)
class RecipeKey:
    """One recipe key as `hf-dpo keys` lists it: its name, its default as a recipe writes it, its help."""

    name: str
    default: str
    help: str


def _shown(value) -> str:
    value = getattr(value, "value", value)  # an enum shows its value, as a recipe writes it
    return value if isinstance(value, str) else json.dumps(value)


def _dataclass_keys(section) -> list[RecipeKey]:
    keys = []
    for f in dataclasses.fields(section):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = _shown(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _shown(f.default_factory())
        else:
            default = "(required)"
        keys.append(RecipeKey(f.name, default, " ".join(str(f.metadata.get("help", "")).split())))
    return keys


def _literal(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return dataclasses.MISSING


def _source_field(item: ast.AnnAssign) -> RecipeKey | None:
    """A dataclass field declared as `name: type = field(default=..., metadata={"help": ...})` (or `= value`);
    None for a ClassVar or a field(init=False)."""
    if "ClassVar" in ast.unparse(item.annotation):
        return None
    default, text = dataclasses.MISSING, ""
    call = item.value
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "field":
        for kw in call.keywords:
            if kw.arg == "init" and _literal(kw.value) is False:
                return None
            if kw.arg == "default":
                default = _literal(kw.value)
                if default is dataclasses.MISSING:  # computed at import (optim: by torch version)
                    default = "(by transformers)"
            elif kw.arg == "default_factory" and isinstance(kw.value, ast.Lambda):
                default = _literal(kw.value.body)
            elif (
                kw.arg == "default_factory"
                and isinstance(kw.value, ast.Name)
                and kw.value.id in ("list", "dict")
            ):
                default = [] if kw.value.id == "list" else {}
            elif kw.arg == "metadata" and isinstance(kw.value, ast.Dict):
                for key, value in zip(kw.value.keys, kw.value.values):
                    if key is not None and _literal(key) == "help" and isinstance(_literal(value), str):
                        text = _literal(value)
    elif call is not None:
        default = _literal(call)
    shown = "(required)" if default is dataclasses.MISSING else _shown(default)
    return RecipeKey(item.target.id, shown, " ".join(text.split()))


def trainer_argument_keys() -> list[RecipeKey] | None:
    """transformers' TrainingArguments fields, read from transformers/training_args.py without importing it; None
    where that file is not there or not as expected."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "training_args.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "TrainingArguments":
            fields = [
                _source_field(item)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            ]
            return [f for f in fields if f is not None] or None
    return None


def recipe_key_sections() -> list[tuple[str, list[RecipeKey]]]:
    """Every recipe key under its section, in a recipe's order (model, data, the DPO objective, transformers'
    TrainingArguments, sampling, report), each name once: under the first section that declares it, which owns
    it (`all_field_names`)."""
    trainer = trainer_argument_keys()
    if trainer is None:  # its source is not where it was: the slow way
        from transformers import TrainingArguments

        trainer = _dataclass_keys(TrainingArguments)
    dpo = _dataclass_keys(DPOKeys)
    overridden = {key.name for key in dpo}  # TRL's learning_rate and logging_steps defaults, in DPOKeys
    sections = [
        ("model: " + _first_line(ModelConfig), _dataclass_keys(ModelConfig)),
        ("data: " + _first_line(DataConfig), _dataclass_keys(DataConfig)),
        ("training: " + _first_line(DPOKeys), dpo),
        ("training: transformers' TrainingArguments", [k for k in trainer if k.name not in overridden]),
        ("sampling: " + _first_line(SamplingConfig), _dataclass_keys(SamplingConfig)),
        ("report: " + _first_line(ReportConfig), _dataclass_keys(ReportConfig)),
    ]
    seen: set[str] = set()
    owned = []
    for title, keys in sections:
        # DPOConfig's fields are TrainingArguments' and then DPOKeys': a name in both is owned by the training
        # section as a whole, so it is listed where it comes first in the recipe's section order.
        owned.append((title, [k for k in keys if k.name not in seen]))
        seen |= {k.name for k in keys}
    return owned


def _first_line(section) -> str:
    return " ".join((section.__doc__ or "").split("\n\n")[0].split()).rstrip(".")


def recipe_key_names() -> list[str]:
    """Every key a recipe may set, sorted."""
    return sorted(k.name for _, keys in recipe_key_sections() for k in keys)


def check_keys(keys, valid: list[str], where: str) -> None:
    """RecipeError naming the first of `keys` that is not in `valid`, with the nearest valid ones."""
    for key in keys:
        if key not in valid:
            # `hf-dpo bench --recipe R` takes it as an option; the commands that read recipe keys take it first
            hint = (
                " The recipe is the first argument: hf-dpo train RECIPE [--key value ...]."
                if key == "recipe"
                else ""
            )
            raise RecipeError(
                f"{where}: unknown key '{key}'.{suggest(key, valid)}{hint} `hf-dpo keys` lists every key."
            )


def check_recipe_keys(path: str | os.PathLike | None, overrides: list[str]) -> None:
    """The recipe file read (YAML, one mapping, each key once) and its keys and the `--key` overrides' checked,
    without importing transformers: the checks `load_recipe` makes first, made before a command imports the
    training stack."""
    valid = recipe_key_names()
    if path is not None:
        check_keys(read_recipe_file(path), valid, f"Recipe {path}")
    for token in overrides:
        key = token[2:].partition("=")[0].replace("-", "_")
        if not token.startswith("--") or not key:
            continue  # a value, or something the parser names itself
        # as the parser reads it: `--no_<key>` for a boolean, and a prefix of one key or more (argparse's
        # abbreviations, which it resolves or refuses itself)
        if key.startswith("no_") and key[3:] in valid or any(name.startswith(key) for name in valid):
            continue
        check_keys([key], valid, "command line")
