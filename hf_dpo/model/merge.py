"""`hf-dpo merge`: fold a run's LoRA adapter into a full-precision copy of its base model.

    hf-dpo merge runs/demo merged/demo-merged
    merge_run("runs/demo", "merged/demo-merged")

The base is loaded unquantized (float32 on CPU, the compute dtype on GPU, or `--dtype`), the adapter is
applied and `merge_and_unload` adds B·A·(alpha/r) into each adapted weight. The result is a plain
transformers model (no peft needed to use it) saved with the tokenizer.

An adapter trained on a 4-bit base learned its update against the *dequantized* NF4 weights; merged into the
original full-precision weights, the model differs slightly from the 4-bit-base + adapter model that was
evaluated (by the NF4 rounding of the base, not by the adapter). Merging into an unquantized base is exact:
tests/model/test_merge.py checks log-prob equality in float32.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from hf_dpo.config import ModelConfig, load_recipe
from hf_dpo.files import why_not_writable
from hf_dpo.model.loading import (
    ModelLoadError,
    load_tokenizer,
    pick_dtype,
    resolve_model_path,
)
from hf_dpo.model.reference import with_adapter
from hf_dpo.model_files import MODEL_DIR_FIX, adapter_dir_problem, is_local_dir, model_dir_problem

logger = logging.getLogger(__name__)


def merge_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "auto") -> Path:
    """Merge the adapter in `run_dir` (a finished `hf-dpo train` run, or any peft adapter directory whose
    adapter_config.json names its base) into a full-precision base; save model + tokenizer to `out_dir`."""
    from transformers import AutoModelForCausalLM

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if (run_dir / "config.json").is_file() and not (run_dir / "adapter_config.json").exists():
        raise ModelLoadError(
            f"{run_dir} holds a whole model (a full fine-tune, use_peft: false), no adapter: there is nothing to "
            f"merge. Load it as it is: AutoModelForCausalLM.from_pretrained('{run_dir}')."
        )
    if not (run_dir / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"{run_dir} has no adapter_config.json: give the run directory of `hf-dpo train`."
        )
    if problem := adapter_dir_problem(run_dir):
        raise ModelLoadError(
            f"{problem}: the adapter cannot be merged. Copy the run dir again from where it was trained, or "
            "train it again."
        )
    # before the base loads: a file there, or no right to write, failed only at the save, after the merge
    problem = why_not_writable(out_dir)
    if problem is not None:
        raise ModelLoadError(f"{out_dir} cannot be written to ({problem}); choose a new output directory.")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelLoadError(f"{out_dir} exists and is not empty; choose a new output directory.")
    cfg = _model_config(run_dir)
    base_path = resolve_model_path(cfg.model_name_or_path)
    # the run's own tokenizer is saved when it has one, the base's otherwise
    needs_tokenizer = not _has_tokenizer(run_dir)
    if is_local_dir(base_path) and (problem := model_dir_problem(base_path, tokenizer=needs_tokenizer)):
        raise ModelLoadError(f"base model of {run_dir}: {problem}. {MODEL_DIR_FIX}")
    torch_dtype = pick_dtype(dtype if dtype != "auto" else cfg.torch_dtype)
    logger.info("Loading %s in full precision (%s) to merge %s", cfg.model_name_or_path, torch_dtype, run_dir)
    try:
        base = AutoModelForCausalLM.from_pretrained(
            base_path, revision=cfg.model_revision, trust_remote_code=cfg.trust_remote_code, dtype=torch_dtype
        )
    except OSError as err:
        raise ModelLoadError(f"Could not load base model '{cfg.model_name_or_path}': {err}") from None
    model = with_adapter(base, run_dir)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer_cfg = (
        dataclasses.replace(cfg, model_name_or_path=str(run_dir)) if _has_tokenizer(run_dir) else cfg
    )
    load_tokenizer(tokenizer_cfg).save_pretrained(out_dir)
    logger.info("Merged model written to %s", out_dir)
    return out_dir


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()


def _model_config(run_dir: Path) -> ModelConfig:
    """The run's model settings: from its recipe.yaml, else from the adapter's base_model_name_or_path."""
    if (run_dir / "recipe.yaml").is_file():
        return load_recipe(run_dir / "recipe.yaml", ["--output_dir", str(run_dir)]).model
    import json

    base = json.loads((run_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise ModelLoadError(
            f"{run_dir}/adapter_config.json names no base_model_name_or_path, and there is no recipe.yaml."
        )
    return ModelConfig(model_name_or_path=base)
