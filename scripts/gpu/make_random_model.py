"""A model with SmolLM2-135M-Instruct's config and tokenizer and random weights, for timing and memory checks
where the real weights are not at hand (same speed and memory; the numbers it learns mean nothing).

    python scripts/gpu/make_random_model.py OUT_DIR [CONFIG_DIR]   # CONFIG_DIR: default the demo alias's cache
Prints the versions of the packages the checks use."""

import importlib
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

PACKAGES = [
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "bitsandbytes",
    "huggingface_hub",
]
for name in PACKAGES:
    module = importlib.import_module(name)
    print(f"{name} {module.__version__} {getattr(module, '__file__', '')}")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
print("cuda", torch.cuda.is_available(), torch.version.cuda, gpu)
if len(sys.argv) > 2:
    src = Path(sys.argv[2])
else:
    from hf_dpo.model.loading import resolve_model_path

    src = Path(resolve_model_path("smollm2-135m-instruct"))
dst = Path(sys.argv[1])
torch.manual_seed(0)
cfg = AutoConfig.from_pretrained(src)
model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
model.save_pretrained(dst, safe_serialization=True)
for f in src.iterdir():
    if f.name not in ("config.json", "model.safetensors") and f.is_file():
        shutil.copy(f, dst / f.name)
print("saved", dst, sum(p.numel() for p in model.parameters()) / 1e6, "M params")
