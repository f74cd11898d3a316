"""The checks of `DPOConfig` that span keys or normalise a value: the loss table, keys that cannot apply to a
LoRA-on-a-frozen-base trainer, keyword-argument keys given as text, true/false/auto."""

from __future__ import annotations

import logging
import re
from typing import Any

from hf_dpo.config.errors import RecipeError, suggest
from hf_dpo.errors import quoted, shortened
from hf_dpo.validate import check_values

# TRL 1.16's loss types, in its order; each is a function of hf_dpo.train.loss.LOSSES.
LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# Losses of the chosen-rejected reward difference: the only ones an f-divergence other than reverse KL applies to.
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def check_dpo_keys(args) -> None:
    """Every check of the DPO keys (`DPOKeys`, or a `DPOConfig` with transformers' keys too): each value's type,
    range and choices (`hf_dpo.validate`), the objective, the keys that cannot apply, keyword arguments as text.
    A `DPOKeys` alone is checked so before transformers is imported (`hf_dpo.config.early`)."""
    if isinstance(args.loss_type, str):  # TRL's list form; a plain string is one loss
        args.loss_type = [args.loss_type]
    check_values(
        args, RecipeError
    )  # types, finiteness, ranges and choices of every key, TrainingArguments' too
    check_objective(args)
    check_not_applicable(args)
    check_kwargs_text(args)


def check_objective(args) -> None:
    """loss_type / loss_weights / rpo_alpha / label_smoothing / f-divergence / WPO, checked and normalised as TRL
    1.16 does (errors where TRL errs), plus rpo_alpha as the alias of an added `sft` term."""
    unknown = [name for name in args.loss_type if name not in LOSS_TYPES]
    if unknown or not args.loss_type:
        near = suggest(unknown[0], list(LOSS_TYPES)) if unknown else ""
        raise RecipeError(
            f"loss_type {unknown or args.loss_type} is not a list of {', '.join(LOSS_TYPES)}.{near}"
        )
    if args.loss_weights is not None and len(args.loss_weights) != len(args.loss_type):
        raise RecipeError(
            f"loss_weights has {len(args.loss_weights)} weights for {len(args.loss_type)} loss types "
            f"{args.loss_type}: give one weight per loss type."
        )
    if args.rpo_alpha and "sft" not in args.loss_type:  # RPO = the preference loss + rpo_alpha x SFT
        weights = list(args.loss_weights or [1.0] * len(args.loss_type))
        args.loss_type, args.loss_weights = [*args.loss_type, "sft"], [*weights, float(args.rpo_alpha)]
    smoothing = args.label_smoothing
    if "robust" in args.loss_type and smoothing >= 0.5:
        raise RecipeError(
            f"label_smoothing must be < 0.5 for the robust loss (it divides by 1 - 2ε; got {smoothing})."
        )
    if "exo_pair" in args.loss_type and smoothing == 0.0:
        raise RecipeError("The exo_pair loss needs label_smoothing > 0 (log ε); the EXO paper uses 1e-3.")
    if args.f_divergence_type not in F_DIVERGENCES:
        raise RecipeError(
            f"f_divergence_type '{args.f_divergence_type}' is not one of {', '.join(F_DIVERGENCES)}."
        )
    if args.f_divergence_type != "reverse_kl" and not set(args.loss_type) <= set(F_DIVERGENCE_LOSSES):
        raise RecipeError(
            f"f_divergence_type '{args.f_divergence_type}' applies only to {', '.join(F_DIVERGENCE_LOSSES)} "
            f"(losses of the chosen-rejected reward difference); {args.loss_type} has none. Use reverse_kl."
        )
    if args.use_weighting and {"aot", "aot_unpaired"} & set(args.loss_type):
        raise RecipeError(
            "use_weighting (WPO) does not apply to aot / aot_unpaired: they sort the pairs of a batch."
        )


def check_not_applicable(args) -> None:
    """TRL keys that cannot apply here: an error saying why and what to use."""
    if args.truncation_mode != "keep_start":
        raise RecipeError(
            f"truncation_mode '{args.truncation_mode}': only keep_start is supported (keep_end is deprecated in "
            "TRL and would give chosen and rejected different prompts). To keep the end of long prompts, set "
            "max_prompt_length."
        )
    if isinstance(args.pad_to_multiple_of, str):  # recipes and the command line give text
        text = args.pad_to_multiple_of.strip().lower()
        try:
            args.pad_to_multiple_of = None if text in ("auto", "none", "null", "") else int(text)
        except ValueError:
            raise RecipeError(
                f"key 'pad_to_multiple_of': {quoted(args.pad_to_multiple_of)} is not a whole number. Give one such as "
                "8, or auto for no padding beyond the longest row."
            ) from None
    if args.pad_to_multiple_of is not None and args.pad_to_multiple_of < 1:
        # below 1 the collator would pad rows to fewer tokens than the longest: a shape error at the first step
        raise RecipeError(
            f"key 'pad_to_multiple_of': must be >= 1, got {args.pad_to_multiple_of}. Give one such as 8, or auto "
            "for no padding beyond the longest row."
        )


KWARGS_KEYS = (
    "lr_scheduler_kwargs",
    "gradient_checkpointing_kwargs",
    "activation_checkpointing_kwargs",
    "model_init_kwargs",
)


def check_kwargs_text(args) -> None:
    """A keyword-arguments key given as text (the command line, a quoted YAML value) is JSON of a mapping.
    transformers keeps other text as it is and spreads it as keyword arguments when it builds the scheduler or
    the model, after the model has loaded: a TypeError there."""
    import json

    for key in KWARGS_KEYS:
        # Version compatibility, not a setting's default: activation_checkpointing_kwargs is a field from
        # transformers 5.24 only (pyproject allows >=5.0).
        text = getattr(args, key, None)
        if not isinstance(text, str):
            continue
        try:
            value = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            value = text
        if value is not None and not isinstance(value, dict):
            # min_lr=0, a=1: the mapping it was meant to be, as the example to write
            # the example is built from the start of the text: the regex is quadratic on a long run of letters
            pairs = re.findall(r"(\w+)\s*=\s*([^,]+)", text[:200]) or [("name", "value")]
            yaml_form = "{" + ", ".join(f"{k}: {v.strip()}" for k, v in pairs) + "}"
            json_form = json.dumps({k: _json_scalar(v.strip()) for k, v in pairs})
            raise RecipeError(
                f"key '{key}': {quoted(text)} is not a mapping. Write it as one: {shortened(yaml_form)} in the recipe "
                f"(YAML), or --{key} '{shortened(json_form)}' on the command line (JSON)."
            )
        setattr(args, key, value)


def _json_scalar(text: str) -> Any:
    """'0' -> 0, '1e-6' -> 1e-06, 'true' -> True; any other text stays text."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def check_checkpointing_kwargs(kwargs: dict | None) -> None:
    """`every_n_layers` (selective checkpointing) is a transformers 5.x feature; an older one would pass it on to
    torch.utils.checkpoint and fail at the first step."""
    if not kwargs or "every_n_layers" not in kwargs:
        return
    import inspect

    from transformers import PreTrainedModel

    every = kwargs["every_n_layers"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise RecipeError(
            f"gradient_checkpointing_kwargs.every_n_layers must be an integer >= 1 (got {quoted(every)})."
        )
    # gradient_checkpointing_enable: its name in older transformers (5.17; in 5.24 an alias taking **kwargs)
    enable = getattr(
        PreTrainedModel, "activation_checkpointing_enable", PreTrainedModel.gradient_checkpointing_enable
    )
    if "every_n_layers" not in inspect.signature(enable).parameters:
        import transformers

        raise RecipeError(
            "gradient_checkpointing_kwargs.every_n_layers needs a transformers with selective checkpointing "
            f"(this one is {transformers.__version__}): upgrade transformers, or drop every_n_layers to "
            "checkpoint every layer."
        )


def auto_bool(value: Any, key: str) -> bool | str:
    """true/false/auto, from YAML or the command line, as True/False/"auto"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "true", "false", "1", "0", "yes", "no"):
        return "auto" if text == "auto" else text in ("true", "1", "yes")
    raise RecipeError(f"{key} must be true, false or auto (got '{value}').")


_LOGGED_DEFAULT_DIFFERENCES: set[str] = set()


def resolve_trl_defaults(args) -> None:
    """bf16 and gradient_checkpointing left unset (None) become TRL's defaults (true) where the hardware allows,
    false elsewhere; every default that then differs from TRL's is logged once per process."""
    import torch

    gpu = torch.cuda.is_available() and not args.use_cpu
    differences = []
    if args.bf16 is None:
        args.bf16 = bool(not args.fp16 and gpu and torch.cuda.is_bf16_supported())
        if not (args.bf16 or args.fp16):
            reason = (
                "no GPU with bf16: on CPU, bf16 autocast made DPO steps slower in this project's measurements"
            )
            differences.append(f"bf16=False (TRL: True; {reason})")
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = gpu
        if not gpu:
            differences.append("gradient_checkpointing=False (TRL: True; on CPU memory is rarely the limit)")
    if args.precompute_ref_log_probs == "auto":
        differences.append(
            "precompute_ref_log_probs=auto (TRL: False; reference log-probs computed once and cached on disk "
            "where that costs no more, so full fine-tuning holds no reference copy)"
        )
    new = [d for d in differences if d not in _LOGGED_DEFAULT_DIFFERENCES]
    if new:
        _LOGGED_DEFAULT_DIFFERENCES.update(new)
        logging.getLogger(__name__).info(
            "Defaults that differ from TRL's DPOConfig here: %s.", "; ".join(new)
        )
