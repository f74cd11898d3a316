"""The model keys checked before any weight loads: a model that is no adapter and an adapter that is one, a
reference model of the policy's vocabulary, LoRA targets that name linear layers of the model (from its config alone), an attention kernel this machine has, and
the tokenizer (files only)."""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
from pathlib import Path

from hf_dpo.config import Recipe, RecipeError
from hf_dpo.errors import HfDpoError
from hf_dpo.model import loading  # looked up at call time: a patched loader (tests) is the one used
from hf_dpo.model_files import MODEL_DIR_FIX, adapter_dir_problem, is_local_dir, model_dir_problem

logger = logging.getLogger(__name__)


def check_model_and_adapter(cfg) -> None:
    """A local model_name_or_path is a model, not a LoRA adapter (an SFT run's output: adapter_config.json, no
    config.json; transformers would load its base with it, and the new LoRA would go on top under the same name),
    and holds what a model needs (`hf_dpo.model_files`); a local adapter_name_or_path is an adapter whose files
    are whole (peft would find out only after the base model has loaded)."""
    model = Path(cfg.model_name_or_path).expanduser()
    if _is_file(model / "adapter_config.json") and not _is_file(model / "config.json"):
        base = _adapter_base(model / "adapter_config.json") or "<its base model>"
        raise RecipeError(
            f"key 'model_name_or_path': {cfg.model_name_or_path} is a LoRA adapter (adapter_config.json), not a "
            f"model. To train on from it, set adapter_name_or_path: {cfg.model_name_or_path} and "
            f"model_name_or_path: {base}; it is then the reference too."
        )
    if is_local_dir(model) and (problem := model_dir_problem(model)):
        raise RecipeError(f"key 'model_name_or_path': {problem}. {MODEL_DIR_FIX}")
    if not cfg.adapter_name_or_path:
        return
    adapter = Path(cfg.adapter_name_or_path).expanduser()
    if os.path.exists(adapter) and not _is_file(adapter / "adapter_config.json"):  # False for no path at all
        raise RecipeError(
            f"key 'adapter_name_or_path': {cfg.adapter_name_or_path} has no adapter_config.json, so it is no LoRA "
            "adapter. Give the output_dir of a finished run (or one of its checkpoint-N directories), or a Hub id."
        )
    if is_local_dir(adapter) and (problem := adapter_dir_problem(adapter)):
        raise RecipeError(
            f"key 'adapter_name_or_path': {problem}. Give the output_dir of a finished run (or one of its "
            "checkpoint-N directories) whose files are whole, or a Hub id."
        )


def check_ref_model(cfg) -> None:
    """A local ref_model_name_or_path is a model (not a LoRA adapter, its files whole) with the policy's vocabulary
    (config.json's vocab_size, when both are local): the reference scores the policy's tokens."""
    if not cfg.ref_model_name_or_path:
        return
    ref = Path(cfg.ref_model_name_or_path).expanduser()
    if _is_file(ref / "adapter_config.json") and not _is_file(ref / "config.json"):
        raise RecipeError(
            f"key 'ref_model_name_or_path': {cfg.ref_model_name_or_path} is a LoRA adapter (adapter_config.json), "
            "not a model. Merge it into its base first (hf-dpo merge RUN_DIR OUT) and give OUT."
        )
    if not is_local_dir(ref):
        return  # a Hub id: the loader names what is wrong with it
    if problem := model_dir_problem(ref, tokenizer=False):
        raise RecipeError(f"key 'ref_model_name_or_path': {problem}. {MODEL_DIR_FIX}")
    policy = Path(loading.resolve_model_path(cfg.model_name_or_path)).expanduser()
    sizes = [_vocab_size(path / "config.json") for path in (policy, ref)]
    if is_local_dir(policy) and None not in sizes and sizes[0] != sizes[1]:
        raise RecipeError(
            f"key 'ref_model_name_or_path': {cfg.ref_model_name_or_path} has a vocabulary of {sizes[1]} tokens, "
            f"the policy {cfg.model_name_or_path} one of {sizes[0]}: the reference must score the policy's tokens. "
            "Give a reference of the same model family (e.g. the SFT checkpoint the policy started from)."
        )


def _vocab_size(config_file: Path) -> int | None:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) else None


def _is_file(path: Path) -> bool:
    """Path.is_file, False where a Hub id cannot even be looked up as a path (too long a name, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _adapter_base(config_file: Path) -> str | None:
    """The base model an adapter was trained on, as its adapter_config.json names it (None if unreadable)."""
    try:
        base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):  # a cut or foreign file: the message names no base then
        return None
    return base if isinstance(base, str) and base else None


@functools.lru_cache(maxsize=16)
def _linear_layer_names(model_dir: str) -> tuple[str, ...] | None:
    """Dotted names of the linear layers of a local model, from its config alone (built on the meta device: no
    weights read). None when that cannot be done; the loader then reports what is wrong."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        # a Hub id: its cached config only, never the network (offline, the Hub's retries took ~30 s)
        config = AutoConfig.from_pretrained(model_dir, local_files_only=not Path(model_dir).is_dir())
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return tuple(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    except Exception:  # noqa: BLE001 - a best-effort early check; loading the model names real problems
        logger.debug("Could not list the layers of %s before loading it", model_dir, exc_info=True)
        return None


def check_lora_targets(model: str, targets: tuple[str, ...]) -> None:
    """Every `lora_target_modules` name matches a linear layer of the model, checked from its config (a local
    or built-in model's, or a Hub model's when the Hub cache holds it) before any weight is read. A config that
    is not at hand or cannot be built (custom code) leaves the check to the loader."""
    if not targets or "all-linear" in targets:
        return
    if model.lower() in loading.MODEL_ALIASES:
        path = loading.resolve_model_path(model)
    elif Path(model).expanduser().is_dir():
        path = str(Path(model).expanduser())
    else:
        path = model  # a Hub id: peft would find a wrong name only after the download and the load
    names = _linear_layer_names(path)
    if not names:
        return
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise RecipeError(
            f"key 'lora_target_modules': {', '.join(missing)} matches no linear layer of {model} "
            f"(its layers: {', '.join(leaves)}; or all-linear)."
        )


def check_attn_implementation(name: str | None) -> None:
    """An attention kernel transformers knows, and, for flash attention, its package (or the kernels library it
    falls back to) installed. transformers checks both only once the model's weights are fetched, and raises a
    ValueError / ImportError. A Hub kernel ('org/repo') is left to transformers."""
    if not name:
        return
    import transformers.utils
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
    if name in known or "/" in name:
        version = re.fullmatch(r"flash_attention_(\d)", name)
        available = (
            getattr(transformers.utils, f"is_flash_attn_{version.group(1)}_available", None)
            if version
            else None
        )
        if available is not None and not available() and not transformers.utils.is_kernels_available():
            raise RecipeError(
                f"key 'attn_implementation': {name} needs the flash-attn package on a CUDA GPU, which this "
                "machine lacks (pip install flash-attn, or pip install kernels for the Hub build). Set "
                "attn_implementation: sdpa (or leave it unset for transformers' default)."
            )
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    raise RecipeError(
        f"key 'attn_implementation': '{name}' is not one of {', '.join(known)} (or a Hub kernel 'org/repo')."
        + (f" Did you mean '{close[0]}'?" if close else "")
    )


def load_checked_tokenizer(recipe: Recipe):
    """The run's tokenizer (files only, no weights); one that cannot be loaded is a RecipeError naming the key."""
    try:
        return loading.load_tokenizer(recipe.model)
    except (HfDpoError, OSError, ValueError) as err:
        reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
        raise RecipeError(
            f"key 'model_name_or_path': {reason} Give a built-in alias (smollm2-135m-instruct), a local model "
            "directory, or a Hub id (reachable, or already in the Hub cache)."
        ) from None
    except (
        TypeError,
        AttributeError,
    ) as err:  # transformers on a config.json that is valid JSON but no mapping
        raise RecipeError(
            f"key 'model_name_or_path': the tokenizer or config.json of {recipe.model.model_name_or_path} cannot be "
            f"read ({type(err).__name__}: {err}). Copy or download the model again."
        ) from None
