"""A model with random weights and the bundled SmolLM2-135M-Instruct tokenizer, for timing and memory checks where
the real weights are not at hand (same speed and memory; the numbers it learns mean nothing).

    python scripts/gpu/make_random_model.py OUT_DIR [CONFIG_DIR] [--config FILE.json] [--init-device cuda]

CONFIG_DIR: config and tokenizer to copy (default: the demo alias's cache, SmolLM2-135M-Instruct; on a machine
without it, the bundle's .gpu_bundle/smollm2-135m-instruct). --config: an architecture in a JSON file instead
(scripts/gpu/llama-1b.json, llama-3.1-8b.json; llama-tiny.json in the CPU rehearsal), with CONFIG_DIR's
tokenizer; it is saved in bfloat16. --init-device cuda draws the weights on the GPU (an 8B model in seconds, not
minutes). Prints the versions of the packages the checks use (one that does not import is named, not fatal)."""

import argparse
import importlib
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("config_dir", nargs="?", help="config + tokenizer (default: the demo alias's cache)")
    parser.add_argument(
        "--config", help="architecture JSON (LlamaConfig fields) instead of CONFIG_DIR's config"
    )
    parser.add_argument("--init-device", default="cpu", help="where the random weights are drawn (cpu, cuda)")
    args = parser.parse_args()
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # reported, not fatal: the step that needs it fails with its own message
            print(f"{name} NOT IMPORTABLE: {err}")
            continue
        print(f"{name} {module.__version__} {getattr(module, '__file__', '')}")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    print("cuda", torch.cuda.is_available(), torch.version.cuda, gpu)
    if args.config_dir:
        src = Path(args.config_dir)
    else:
        from hf_dpo.model.loading import resolve_model_path

        src = Path(resolve_model_path("smollm2-135m-instruct"))
    dst = Path(args.out_dir)
    if args.config:
        fields = {k: v for k, v in json.loads(Path(args.config).read_text()).items() if not k.startswith("_")}
        cfg, dtype = LlamaConfig(**fields), torch.bfloat16  # Hub checkpoints of this size are bf16
    else:
        cfg, dtype = AutoConfig.from_pretrained(src), torch.float32
    torch.manual_seed(0)
    with torch.device(args.init_device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.save_pretrained(dst, safe_serialization=True)
    for f in src.iterdir():
        if f.name != "config.json" and not f.name.endswith(".safetensors") and f.is_file():
            shutil.copy(f, dst / f.name)
    print("saved", dst, round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "M params")


if __name__ == "__main__":
    main()
