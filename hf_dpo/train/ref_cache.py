"""Reference log-probs computed once per (base model, tokenization, dataset), kept on disk, reused by later runs.

The reference policy of DPO-with-LoRA is fixed: the base with adapters off, or a frozen starting adapter. So its
log-probs of each pair are a pure function of

    base model     path, config (incl. quantization), a weights fingerprint, compute dtype and device type
    reference      none (adapters off) or a hash of the starting adapter's weights
    tokenization   max_length, max_prompt_length, the chat template
    weighting      LD-DPO's ld_alpha, when set
    dataset        a hash of the tokenized prompt/chosen/rejected id columns, in order

and the cache file is named by a hash of all of them: change any and the old file is simply not found.

    <ref_logps_cache_dir, or $HF_DPO_REF_CACHE, or $HF_DPO_CACHE/ref_logps>/<key>.safetensors   (ref_chosen_logps, ref_rejected_logps: (N,))

`ReferenceColumns.attach(dataset, split, model, compute)` is what the trainer calls: the dataset with
ref_chosen_logps / ref_rejected_logps columns, read from that file or computed once (`compute`) and written there.
`check_ref_cache`, called before the model loads: an unwritable cache directory turns the cache off, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from hf_dpo.config import DPOConfig, RecipeError
from hf_dpo.config.places import check_writable_dir
from hf_dpo.files import atomic_path
from hf_dpo.model.loading import cache_dir
from hf_dpo.model.reference import REFERENCE_ADAPTER
from hf_dpo.model.unwrap import base_model, peft_model

logger = logging.getLogger(__name__)

TOKENIZED_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Config entries that do not change what the model computes.
VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "use_cache", "_commit_hash", "architectures"}


def cache_root(configured: str | None) -> Path | None:
    """The cache directory, or None when disk caching is off (`ref_logps_cache_dir: none`)."""
    if configured is not None and str(configured).strip().lower() in ("", "none", "off", "false"):
        return None
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("HF_DPO_REF_CACHE"):
        return Path(os.environ["HF_DPO_REF_CACHE"]).expanduser()
    return cache_dir() / "ref_logps"


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def dataset_fingerprint(dataset) -> str:
    """sha256 of the tokenized id columns (values and row lengths, in dataset order)."""
    import pyarrow as pa

    table = dataset.with_format("arrow")[:]
    digest = hashlib.sha256()
    digest.update(str(len(table)).encode())
    for name in TOKENIZED_COLUMNS:
        column = table[name].combine_chunks()
        digest.update(name.encode())
        if pa.types.is_null(column.type):  # an empty dataset
            continue
        digest.update(column.value_lengths().cast(pa.int64()).to_numpy(zero_copy_only=False).tobytes())
        digest.update(column.flatten().cast(pa.int64()).to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def _files_fingerprint(path: str) -> list | None:
    """(name, size, mtime) of a local model directory's weight files; None for a Hub id."""
    if not path or not os.path.isdir(path):
        return None
    out = []
    for entry in sorted(Path(path).iterdir()):
        if entry.is_file() and entry.suffix in WEIGHT_SUFFIXES:
            stat = entry.stat()
            out.append([entry.name, stat.st_size, stat.st_mtime_ns])
    return out


def _tensor_sample(tensor: torch.Tensor, n: int = 16) -> bytes:
    flat = tensor.detach().reshape(-1)
    if flat.numel() == 0:  # sharded away (FSDP/ZeRO-3) or on the meta device
        return b""
    picked = torch.cat([flat[:n], flat[-n:]]) if flat.numel() > 2 * n else flat
    return picked.cpu().contiguous().view(torch.uint8).numpy().tobytes()


def model_fingerprint(model, reference_adapter: str | None) -> dict:
    """What identifies the reference policy of a (peft-wrapped) model."""
    base = base_model(model)
    config = {k: v for k, v in base.config.to_dict().items() if k not in VOLATILE_CONFIG_KEYS}
    name = getattr(base.config, "_name_or_path", "")
    weights = hashlib.sha256()
    reference = hashlib.sha256() if reference_adapter else None
    for param_name, param in base.named_parameters():
        if "lora_" in param_name:
            if reference is not None and f".{reference_adapter}." in param_name:
                reference.update(param_name.encode())
                reference.update(param.detach().float().cpu().numpy().tobytes())
            continue
        weights.update(param_name.encode())
        weights.update(_tensor_sample(param))
    try:
        device = next(base.parameters()).device.type
    except StopIteration:
        device = "cpu"
    return {
        "name_or_path": name,
        "commit": getattr(base.config, "_commit_hash", None),
        "config": _sha(json.dumps(config, sort_keys=True, default=str)),
        "weight_files": _files_fingerprint(name),
        "weight_sample": weights.hexdigest(),
        "dtype": str(getattr(base, "dtype", "")),
        "device": device,
        "reference": reference.hexdigest() if reference is not None else "base (adapters off)",
    }


def cache_key(parts: dict) -> str:
    return _sha(json.dumps(parts, sort_keys=True, default=str))[:40]


def load(path: Path, num_pairs: int) -> tuple[list[float], list[float]] | None:
    """Cached (chosen, rejected) reference log-probs, or None if absent or unreadable."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        chosen, rejected = tensors["ref_chosen_logps"], tensors["ref_rejected_logps"]
    except Exception as err:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
        logger.warning("Ignoring unreadable reference log-prob cache %s (%s)", path, err)
        return None
    if chosen.numel() != num_pairs or rejected.numel() != num_pairs:
        logger.warning(
            "Ignoring reference log-prob cache %s: %d pairs, expected %d", path, chosen.numel(), num_pairs
        )
        return None
    return chosen.tolist(), rejected.tolist()


def save(path: Path, chosen: list[float], rejected: list[float], parts: dict) -> bool:
    """Write atomically (temp file + rename), so a reader never sees half a file.

    The cache is an optimisation: a directory that cannot be written (read-only, full disk, no permission) is
    a warning, and training goes on with the values in memory. Returns whether the file was written."""
    try:
        _save(path, chosen, rejected, parts)
        return True
    except Exception as err:  # noqa: BLE001 - never fatal: the values are already computed
        logger.warning(
            "Could not write the reference log-prob cache %s (%s: %s); going on without it (the next run "
            "recomputes them). Set ref_logps_cache_dir to a writable directory, or to none.",
            path,
            type(err).__name__,
            err,
        )
        return False


def _save(path: Path, chosen: list[float], rejected: list[float], parts: dict) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            {
                "ref_chosen_logps": torch.tensor(chosen, dtype=torch.float32),
                "ref_rejected_logps": torch.tensor(rejected, dtype=torch.float32),
            },
            str(tmp),
            metadata={"key_parts": json.dumps(parts, sort_keys=True, default=str)},
        )


REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def precompute_pays(args, num_pairs: int, split: str) -> bool:
    """`precompute_ref_log_probs: auto`: evaluation always; training when it visits every pair at least once
    (the one-off pass then costs no more than the per-step reference passes it replaces)."""
    if split != "train":
        return True
    if args.max_steps and args.max_steps > 0:
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        visited = args.max_steps * per_step
    else:
        visited = args.num_train_epochs * num_pairs
    return visited >= num_pairs


class ReferenceColumns:
    """Adds the reference log-prob columns to a dataset, from the disk cache or from one no-grad pass.

    `accelerator` makes the ranks agree (every rank reads the cache, or every rank computes) and lets only the
    local main process write."""

    def __init__(self, args: DPOConfig, tokenizer, accelerator, setting: bool | str | None = None):
        """`setting`: when to precompute (True, False, auto), where the trainer decides other than
        `args.precompute_ref_log_probs` (full fine-tuning's reference exists only before the first step)."""
        self.args, self.tokenizer, self.accelerator = args, tokenizer, accelerator
        self.setting = args.precompute_ref_log_probs if setting is None else setting
        self._model_fingerprint: dict | None = None  # hashing the weights once per trainer is enough

    def key_parts(self, dataset, model) -> dict:
        """Everything the reference log-probs of `dataset` depend on (module docstring)."""
        if self._model_fingerprint is None:
            inner = peft_model(model)
            reference = REFERENCE_ADAPTER if REFERENCE_ADAPTER in getattr(inner, "peft_config", {}) else None
            self._model_fingerprint = model_fingerprint(inner, reference)
        template = getattr(self.tokenizer, "chat_template", None) or ""
        parts = {
            "model": self._model_fingerprint,
            "autocast": {"bf16": bool(self.args.bf16), "fp16": bool(self.args.fp16)},
            "tokenization": {
                "max_length": self.args.max_length,
                "max_prompt_length": self.args.max_prompt_length,
                "chat_template": _sha(str(template)),
            },
            "dataset": dataset_fingerprint(dataset),
            "num_pairs": len(dataset),
        }
        if self.args.ld_alpha is not None:  # LD-DPO changes the summed log-probs themselves
            parts["ld_alpha"] = self.args.ld_alpha
        return parts

    def _all_ranks(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        flags = self.accelerator.gather(torch.tensor([int(flag)], device=self.accelerator.device))
        return bool(flags.min().item())

    def attach(self, dataset, split: str, model, compute: Callable) -> object:
        """`dataset` plus ref_chosen_logps / ref_rejected_logps, read from the cache or `compute(dataset)` ->
        (chosen, rejected) lists, written there. Unchanged when precomputing is off (the reference then runs at
        every step) or when `auto` finds the pass not worth it."""
        setting = self.setting
        if dataset is None or setting is False or REF_COLUMNS[0] in dataset.column_names:
            return dataset
        root = cache_root(self.args.ref_logps_cache_dir)
        path = parts = None
        if root is not None:
            parts = self.key_parts(dataset, model)
            path = root / f"{cache_key(parts)}.safetensors"
        cached = load(path, len(dataset)) if path is not None else None
        if not self._all_ranks(cached is not None):  # every rank computes, or none does
            cached = None
        if cached is not None:
            logger.info("Reference log-probs of %d %s pairs read from %s", len(dataset), split, path)
            chosen, rejected = cached
        elif setting == "auto" and not precompute_pays(self.args, len(dataset), split):
            logger.info(
                "Reference log-probs computed at each step: this run visits fewer pairs than the %s set holds "
                "(precompute_ref_log_probs: true forces a one-off pass).",
                split,
            )
            return dataset
        else:
            chosen, rejected = compute(dataset)
            if path is not None and self.accelerator.is_local_main_process:
                save(path, chosen, rejected, parts)
            where = f", cached in {path}" if path else ""
            logger.info("Reference log-probs of %d %s pairs computed once%s", len(dataset), split, where)
        return dataset.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected)


def check_ref_cache(args) -> None:
    """The on-disk reference cache is an optimisation: an unwritable directory turns it off, with a warning."""
    if args.precompute_ref_log_probs is False:
        return
    root = cache_root(args.ref_logps_cache_dir)
    if root is None:
        return
    try:
        check_writable_dir(root, "ref_logps_cache_dir")
    except RecipeError as err:
        logger.warning("%s The reference log-probs are kept in memory only for this run.", err)
        args.ref_logps_cache_dir = "none"
