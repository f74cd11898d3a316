"""Value checks of the recipe sections, run by each config dataclass's `__post_init__`.

Every field is checked by its declared type (an `int` key takes no 1.5, no `true`, no NaN; a `float` key
takes no NaN or infinity; a `str` key takes no list), then by its declared meaning (the `range` in its field's
metadata, beside its help: a rank is >= 1, a probability lies in [0, 1], a seed fits numpy; a count, size or
step also has an upper bound, `up_to`, that says what a value past it would mean: "max_steps 1e12 is over 10^8
(10^8 steps take over 3 years ...)"; no int past 64 bits, no float past 2^53 read as an int) and, for enum-like
strings, against its `one_of` (or a TrainingArguments key's `choices`), then against the keys it only makes sense with
(`BELOW`: a max_prompt_length under max_length; `check_varied_samples`: no greedy sampling_temperature 0 with
several samples per prompt). The first problem raises `RecipeError` naming the key, the value
(`hf_dpo.errors.quoted`: a huge or deeply nested one is shown cut, never expanded whole) and what it may be, so
a recipe fails when it is read, not minutes into a run.

    check_values(ModelConfig(lora_r=-1), RecipeError)   # RecipeError: key 'lora_r': must be >= 1, got -1.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, NamedTuple

from hf_dpo.errors import quoted

# hf_dpo's own field metadata, read here; argparse gets the rest of a field's metadata (help, choices).
METADATA_KEYS = frozenset({"range", "one_of"})


class Range(NamedTuple):
    """The values a number key may take, in its field's metadata beside its help (`"range": Range(1)`: >= 1).
    None: unbounded on that side. `hint`: why the range holds, where the bare bounds would not say it."""

    low: float | None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    hint: str = ""
    high_hint: str = (
        ""  # what a value past `high` would mean (a count, size or step's bound): said when one is
    )


def up_to(low: float, bound: tuple[int, str], **kw) -> Range:
    """A count, size or step's range: `low` to the `bound` (value, what a value past it would mean)."""
    return Range(low, bound[0], high_hint=bound[1], **kw)


# Upper bounds of counts, sizes and steps: past one, a value is a typo (1e30, a pasted number), never a plan, and
# a run would start toward it. Each says what such a value would mean.
STEPS = (10**8, "10^8 steps take over 3 years at one step a second")
EPOCHS = (10**6, "a million passes over the data")
TOKENS = (2**22, "4M tokens, longer than any model's context")
BATCH = (2**16, "65536 rows in one batch, more than any accelerator holds")
PROCESSES = (1024, "more processes than any machine runs")
PAIRS = (10**12, "more pairs than any data set holds")
RANK = (2**16, "a LoRA rank past the width of any layer")
GENERATIONS = (10**7, "10^7 generations take weeks")
SAMPLES_PER_PROMPT = (1024, "each one is a generation for every prompt")
ROUNDS = (1000, "each round samples every prompt and trains a run")
# The largest whole number a float holds exactly: 1e30 for an int key reads as 1000000000000000019884624838656.
EXACT_FLOAT_INT = 2**53
INT64_MAX = 2**63 - 1


# The ranges of TrainingArguments keys, whose fields transformers declares (hf_dpo's own keys carry theirs in
# their field's metadata).
TRAINING_ARGUMENTS_RANGES: dict[str, Range] = {
    "weight_decay": Range(0),
    "adam_beta1": Range(0, 1, high_inclusive=False),
    "adam_beta2": Range(0, 1, high_inclusive=False),
    "adam_epsilon": Range(0, low_inclusive=False),
    "max_grad_norm": Range(0),
    "num_train_epochs": up_to(0, EPOCHS, low_inclusive=False),
    "max_steps": up_to(-1, STEPS, hint=" (-1: train num_train_epochs instead)"),
    "warmup_steps": up_to(0, STEPS),
    "warmup_ratio": Range(0, 1),
    "per_device_train_batch_size": up_to(1, BATCH),
    "per_device_eval_batch_size": up_to(1, BATCH),
    "gradient_accumulation_steps": up_to(1, (2**20, "a million micro-batches for every optimizer step")),
    "eval_accumulation_steps": up_to(1, STEPS),
    "save_steps": up_to(0, STEPS, low_inclusive=False),
    "eval_steps": up_to(0, STEPS, low_inclusive=False),
    "eval_delay": up_to(0, STEPS),
    "save_total_limit": up_to(0, (10**6, "a million checkpoints kept")),
    "seed": Range(0, 2**32 - 1, hint=" (numpy seeds are 32-bit)"),
    "data_seed": Range(0, 2**32 - 1, hint=" (numpy seeds are 32-bit)"),
    "label_smoothing_factor": Range(0, 1, high_inclusive=False),
    "neftune_noise_alpha": Range(0, low_inclusive=False),
    "torch_empty_cache_steps": up_to(1, STEPS),
    "dataloader_num_workers": up_to(0, PROCESSES),
    "dataloader_prefetch_factor": up_to(1, (1024, "1024 batches waiting per worker")),
    "ddp_timeout": up_to(1, (10**7, "10^7 seconds are four months")),
    "ddp_bucket_cap_mb": up_to(1, (2**20, "a terabyte per gradient bucket")),
}


# key -> the key it must stay below (both set), and why. max_prompt_length only acts on a pair longer than
# max_length, cutting its prompt to max_prompt_length tokens; at or over max_length that leaves no token for the
# answer, so every such pair would be dropped: a setting that can never do what it is for.
BELOW: dict[str, tuple[str, str]] = {
    "max_prompt_length": (
        "max_length",
        "a prompt cut to max_prompt_length must leave room for the answer within max_length",
    ),
}

# Strings that must name something: an empty one is never meant.
NON_EMPTY = (
    "model_name_or_path",
    "dataset_train_split",
    "prompt_column",
    "chosen_column",
    "rejected_column",
    "output_dir",
    "lora_target_modules",
)

# Optional strings that name a model, revision, file, directory, split or criterion: unset (null, or "") means
# none, but a blank one ("  ") would be taken for a name and fail where it is used, often after a model has
# loaded (a Hub id "  "). `judge` and `hub_revision` have checks of their own, which say more (pairs.judges,
# hub.settings).
NOT_BLANK = (
    "model_revision",
    "adapter_name_or_path",
    "ref_model_name_or_path",
    "dataset_name",
    "dataset_config",
    "prompts_file",
    "samples_file",
    "pairs_file",
    "min_chosen_criterion",
    "test_prompts_file",
    "hub_model_id",
    "resume_from_checkpoint",
    "ref_logps_cache_dir",
)

_KINDS = re.compile(r"\b(int|float|str|bool|list|dict|None|Optional|Any|NoneType)\b")


def kinds_of(ftype: Any) -> set[str]:
    """The outer kinds of a declared type: 'dict[str, Any] | str | None' -> {dict, str, None}."""
    text = ftype if isinstance(ftype, str) else str(getattr(ftype, "__name__", ftype))
    if not isinstance(ftype, str) and text in ("int", "float", "str", "bool", "list", "dict"):
        return {text}
    text = str(ftype)
    container = re.compile(r"\b(list|dict|tuple|set)\[[^\[\]]*\]")
    while container.search(text):
        text = container.sub(r"\1", text)
    if "Literal" in text:
        return {"Any"}  # Union[str, None, Literal[False]]: left to its owner
    kinds = set(_KINDS.findall(text))
    if kinds & {"Optional", "NoneType"}:
        kinds.add("None")
    return kinds


class ValueCheckError(ValueError):
    """Raised by the checks below when no error class is given (config passes its RecipeError)."""


def _error(key: str, message: str, error: type[Exception] = ValueCheckError) -> Exception:
    return error(f"key '{key}': {message}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{quoted(value)} (a boolean: YAML reads yes/no/on/off as true/false)"
    return f"{quoted(value)} ({type(value).__name__})"


def check_type(key: str, value: Any, ftype: Any, default: Any, error=ValueCheckError) -> Any:
    """`value` if it fits the declared type (an integral float for an int key becomes an int, a number for a
    string-only key becomes its text); RecipeError otherwise."""
    kinds = kinds_of(ftype)
    scalar = kinds & {"int", "float", "str", "bool", "list", "dict"}
    if not scalar or "Any" in kinds:
        return value  # a type this check does not know (an object, a union with an enum): its owner checks it
    if value is not None and not isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return (
            value  # an object given from Python (an AcceleratorConfig, an Enum member): its owner checks it
        )
    if value is None:
        if "None" in kinds or default is None:
            return value
        raise _error(key, f"needs a value (it is not optional; default: {default!r}).", error)
    if isinstance(value, bool):
        if "bool" in kinds:
            return value
        raise _error(key, f"expected {_expected(scalar)}, got {_describe(value)}.", error)
    if isinstance(value, int):
        if kinds & {"int", "float"} and abs(value) > INT64_MAX:
            raise _error(key, f"{quoted(value)} is past the 64-bit integers (at most {INT64_MAX}).", error)
        if kinds & {"int", "float"}:
            return value
        if "str" in kinds and not kinds & {"dict", "list"}:
            return str(value)
        raise _error(key, f"expected {_expected(scalar)}, got {_describe(value)}.", error)
    if isinstance(value, float):
        if "float" in kinds:
            if not math.isfinite(value):
                raise _error(key, f"must be a finite number, got {quoted(value)}.", error)
            return value
        if "int" in kinds:
            if (
                value.is_integer() and abs(value) > EXACT_FLOAT_INT
            ):  # 1e30 would become 1000000000000000019884...
                raise _error(
                    key,
                    f"{value!r} is a float past 2^53, where floats no longer hold every whole number (it would be "
                    f"read as {quoted(int(value), 40)}). Give a whole number, written out.",
                    error,
                )
            if value.is_integer():
                return int(value)
            raise _error(key, f"expected a whole number, got {quoted(value)}.", error)
        if "str" in kinds and not kinds & {"dict", "list"}:
            return str(value)
        raise _error(key, f"expected {_expected(scalar)}, got {_describe(value)}.", error)
    if isinstance(value, str):
        if "str" in kinds:
            return value
        raise _error(key, f"expected {_expected(scalar)}, got {_describe(value)}.", error)
    if isinstance(value, (list, tuple)):
        if "list" not in kinds:
            raise _error(key, f"expected {_expected(scalar)}, got a list {quoted(value)}.", error)
        if "list[str]" in str(ftype).replace(" ", ""):
            bad = [v for v in value if not isinstance(v, str) or not v.strip()]
            if bad:
                raise _error(key, f"expected a list of non-empty strings, got {quoted(list(value))}.", error)
        if "list[float]" in str(ftype).replace(" ", ""):
            return [_list_number(key, item, list(value), error) for item in value]
        return list(value)
    if isinstance(value, dict):
        if "dict" in kinds:
            return value
        raise _error(key, f"expected {_expected(scalar)}, got a mapping {quoted(value)}.", error)
    raise _error(key, f"expected {_expected(scalar)}, got {_describe(value)}.", error)


def _list_number(key: str, item: Any, value: list, error) -> float:
    """One item of a list-of-numbers key as a float. YAML 1.1 reads 1e-1 (no dot) as a string, and argparse
    converts only a string default: such an item would reach the loss as text, failing after the model loaded."""
    number = item
    if isinstance(item, str):
        try:
            number = float(item.strip())
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise _error(
            key, f"expected a list of numbers, got {quoted(value)}: {_describe(item)} is not a number.", error
        )
    if not math.isfinite(number):
        raise _error(key, f"must be a list of finite numbers, got {quoted(value)}.", error)
    return float(number)


def _expected(kinds: set[str]) -> str:
    names = {
        "int": "a whole number",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "list": "a list",
        "dict": "a mapping",
    }
    order = ("bool", "int", "float", "str", "list", "dict")
    parts = [names[k] for k in order if k in kinds]
    if "int" in kinds and "float" in kinds:
        parts.remove("a whole number")
    return " or ".join(parts)


def range_of(f: dataclasses.Field) -> Range | None:
    """The range of a field: its metadata's, or for a TrainingArguments key the table above."""
    return (f.metadata or {}).get("range") or TRAINING_ARGUMENTS_RANGES.get(f.name)


def check_range(key: str, value: Any, allowed: Range | None, error=ValueCheckError) -> None:
    if allowed is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, low_in, high_in, hint, high_hint = allowed
    ok = (low is None or (value >= low if low_in else value > low)) and (
        high is None or (value <= high if high_in else value < high)
    )
    if ok:
        return
    if high_hint and value >= high:  # a count, size or step past its bound: say what it would mean
        raise _error(
            key, f"{quoted(value)} is over {high} ({high_hint}): a typo? Give at most {high}.", error
        )
    if low is not None and high is not None:
        span = f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
    elif low is not None:
        span = f"{'>=' if low_in else '>'} {low}"
    else:
        span = f"{'<=' if high_in else '<'} {high}"
    raise _error(key, f"must be {span}{hint}, got {quoted(value)}.", error)


def check_choice(key: str, value: Any, choices, error=ValueCheckError) -> None:
    if value in choices:
        return
    named = ", ".join("null" if c is None else str(c) for c in choices)
    raise _error(key, f"{quoted(value)} is not one of {named}.", error)


def check_below(obj: Any, error=ValueCheckError) -> None:
    """Each `BELOW` key set on `obj` stays under its partner key (when that is set too); max_prompt_length
    needs a max_length, without which no pair is truncated and it would do nothing, silently."""
    if isinstance(getattr(obj, "max_prompt_length", None), int) and getattr(obj, "max_length", 0) is None:
        raise _error(
            "max_prompt_length",
            f"{obj.max_prompt_length} has no effect with max_length: null (no pair is truncated, so no prompt is "
            "cut). Set max_length (e.g. 1024) to cut long pairs, or remove max_prompt_length.",
            error,
        )
    for key, (limit_key, why) in BELOW.items():
        value, limit = getattr(obj, key, None), getattr(obj, limit_key, None)
        if not isinstance(value, int) or not isinstance(limit, int) or value < limit:
            continue
        fix = f"lower {key} (e.g. {limit // 2}) or raise {limit_key}" if limit >= 2 else f"raise {limit_key}"
        raise _error(
            key, f"must be below {limit_key} ({limit}), got {value}: {why}. {fix[0].upper()}{fix[1:]}.", error
        )


def check_varied_samples(obj: Any, error=ValueCheckError) -> None:
    """Sampling several answers per prompt greedily (sampling_temperature 0) gives the same answer each time:
    labelling would find no two distinct answers, so no pair, after all the sampling. An error now instead."""
    temperature = getattr(obj, "sampling_temperature", None)
    samples = getattr(obj, "num_samples_per_prompt", None)
    if temperature != 0 or not isinstance(samples, int) or samples < 2:
        return
    raise _error(
        "sampling_temperature",
        f"0 is greedy decoding: the num_samples_per_prompt ({samples}) answers of a prompt would all be the same "
        "text, so no preference pair could come out. Set sampling_temperature to 0.7-1.0 to sample varied answers "
        "(sampling_seed keeps them reproducible).",
        error,
    )


def _inherited(obj: Any) -> set[str]:
    """The fields `obj` has from transformers' TrainingArguments: none for hf_dpo's own sections, which are checked
    before transformers is imported."""
    for cls in type(obj).__mro__:
        if cls.__name__ == "TrainingArguments" and cls.__module__.startswith("transformers"):
            return {f.name for f in dataclasses.fields(cls)}
    return set()


def check_values(obj: Any, error: type[Exception] = ValueCheckError, fields: list[str] | None = None) -> None:
    """Check (and normalise in place) every init field of a config dataclass, or only `fields`."""
    inherited = _inherited(obj)
    for f in dataclasses.fields(obj):
        if not f.init or (fields is not None and f.name not in fields):
            continue
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # a list key: null is no value, not "optional"
            default = f.default_factory()
        if hasattr(value, "value") and not isinstance(value, (str, int, float)):  # an Enum set from Python
            continue
        allowed = range_of(f)
        if value is None and allowed is None and f.name in inherited:
            continue  # a TrainingArguments key left unset: transformers fills it in
        value = check_type(f.name, value, f.type, default, error)
        setattr(obj, f.name, value)
        check_range(f.name, value, allowed, error)
        metadata = f.metadata or {}
        choices = metadata.get("one_of") or metadata.get("choices")
        if choices and value is not None:
            check_choice(f.name, value, tuple(choices), error)
        if (
            f.name in NON_EMPTY
            and isinstance(value, (str, list))
            and not (value.strip() if isinstance(value, str) else value)
        ):
            raise _error(f.name, "must not be empty.", error)
        if f.name in NOT_BLANK and isinstance(value, str) and value and not value.strip():
            raise _error(
                f.name,
                f"{quoted(value)} is blank: give a value, or leave the key out (null) for none.",
                error,
            )
    if fields is None:
        check_below(obj, error)
        check_varied_samples(obj, error)
