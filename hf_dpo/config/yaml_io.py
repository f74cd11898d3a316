"""The recipe's YAML: the reader (no key twice, numbers as YAML 1.2 reads them, dates as text) and the dumper that
writes recipe.yaml so it reads back as it ran."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hf_dpo.config.errors import RecipeError
from hf_dpo.errors import quoted, shortened


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key given twice in one mapping: YAML would silently keep the last value."""


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` then `key: ...` overrides a merged key, by design
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: construct_mapping names it
                    continue
                if duplicate:
                    raise _DuplicateKey(problem=quoted(key), problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 implicit types no recipe key means: a bare 2024-06-01 read as a date (a run_name, an output_dir),
# 010 as octal 8, 1:30 as base-60 90, and 1e-6 (no dot) or 1.0e6 (no exponent sign) as text, which inside a
# mapping (lr_scheduler_kwargs) no parser converts. Dates stay text; numbers are read as YAML 1.2 reads them.
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YAML_12 = {
    _INT_TAG: re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    # a dot or an exponent: a plain integer stays an int (this resolver is tried before the int one)
    _FLOAT_TAG: re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
}
RecipeLoader.yaml_implicit_resolvers = {
    first: [
        (tag, _YAML_12.get(tag, regexp)) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class RecipeDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes text the recipe reader would take for a number (1e5), as well as what YAML 1.1
    readers would (a date): recipe.yaml reads back as it ran, here and elsewhere."""


RecipeDumper.yaml_implicit_resolvers = {
    first: resolvers + RecipeLoader.yaml_implicit_resolvers.get(first, [])
    for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}


# The most values a recipe value may hold once YAML aliases (`*name`) are expanded. A recipe value is a word, a
# number or a short list; a few lines of aliases nested in aliases expand to billions of items (a "billion laughs"),
# which any code that walks the value (a check, an error message, a JSON dump of the arguments) never finishes.
MAX_VALUE_ITEMS = 10_000


def expands_past(value: Any, limit: int = MAX_VALUE_ITEMS) -> bool:
    """Whether `value`, its shared parts counted each time they occur, holds more than `limit` items; stops
    counting there."""
    pending, count = [value], 0
    while pending:
        item = pending.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple)):
            pending += item
    return False


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(
            f"Recipe {path} is a directory; a recipe is a YAML file (recipes live in recipes/; see `ls recipes/`)."
        )
    if not path.is_file():
        raise RecipeError(f"Recipe {path} does not exist. Recipes live in recipes/; see `ls recipes/`.")
    try:
        values = yaml.load(path.read_bytes().decode("utf-8"), Loader=RecipeLoader) or {}
    except UnicodeDecodeError as err:
        raw = path.read_bytes()
        line = raw.count(b"\n", 0, err.start) + 1
        raise RecipeError(
            f"Recipe {path}, line {line}: not UTF-8 text (byte {err.start}). Save it as UTF-8."
        ) from None
    except OSError as err:
        raise RecipeError(f"Recipe {path} cannot be read ({err.strerror or err}).") from None
    except _DuplicateKey as err:
        raise RecipeError(
            f"Recipe {path}, line {err.problem_mark.line + 1}: key {err.problem} is given twice; YAML would keep "
            "only the last value. Delete one of them."
        ) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"Recipe {path} is not valid YAML: {err}") from None
    except RecursionError:
        raise RecipeError(
            f"Recipe {path} is nested too deeply to read; a recipe is flat key: value pairs."
        ) from None
    except ValueError as err:  # int() of a number past Python's 4300-digit limit, as YAML constructs it
        if "integer string conversion" in str(err):
            raise RecipeError(
                f"Recipe {path} holds a number of more than 4300 digits; no recipe key takes one. Fix that value."
            ) from None
        raise RecipeError(f"Recipe {path} cannot be read: {shortened(str(err), 200)}.") from None
    if not isinstance(values, dict):
        raise RecipeError(f"Recipe {path} must be a mapping of key: value, not {type(values).__name__}.")
    for key, value in values.items():
        if expands_past(value):
            raise RecipeError(
                f"Recipe {path}: key '{shortened(key, 60)}' holds more than {MAX_VALUE_ITEMS} values once its YAML "
                "aliases (*name) are expanded; a recipe value is a word, a number or a short list. Write it out "
                "without aliases nested in aliases."
            )
        if not isinstance(key, str):
            raise RecipeError(
                f"Recipe {path}: key {quoted(key)} is not a name (YAML read it as {type(key).__name__}"
                + (": on/off/yes/no/true/false are booleans in YAML" if isinstance(key, bool) else "")
                + "). Every key is a word such as learning_rate; `hf-dpo keys` lists them."
            )
    return values
