#!/usr/bin/env python3
"""CUDA path of 4-bit loading through hf_dpo: NF4 weights on the GPU, bf16 compute, LoRA trainable, a DPO loss
backward, and the reference (adapters off) differs from the trained policy only through the adapter.

    python scripts/gpu/check_4bit_cuda.py MODEL_DIR

Without CUDA (the CPU rehearsal, REHEARSAL=1 bash scripts/gpu/run_checks.sh) the same checks run on the CPU's
4-bit path in float32, so the script's wiring is exercised before a GPU is at hand. Prints CHECK4BIT OK."""

import sys

import bitsandbytes as bnb
import torch

from hf_dpo.config import ModelConfig
from hf_dpo.model.loading import load_policy
from hf_dpo.model.reference import reference_context

path = sys.argv[1]
device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
cfg = ModelConfig(
    model_name_or_path=path, quantization="4bit", lora_r=16, lora_alpha=32, lora_target_modules=["all-linear"]
)
model, _ = load_policy(cfg)
lin4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
w = lin4[0].weight
print(
    "device",
    device,
    "| Linear4bit modules:",
    len(lin4),
    "| weight",
    w.dtype,
    w.device,
    "| quant_type",
    w.quant_state.quant_type,
    "| compute dtype",
    lin4[0].compute_dtype,
)
layers, vocab = model.config.num_hidden_layers, model.config.vocab_size
assert len(lin4) == layers * 7 and w.device.type == device and w.dtype == torch.uint8, (len(lin4), w.device)
trainable = [n for n, p in model.named_parameters() if p.requires_grad]
assert trainable and all("lora_" in n for n in trainable), trainable[:5]
allocated = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else float("nan")
print(
    "trainable tensors",
    len(trainable),
    "all LoRA; footprint MiB",
    round(model.get_memory_footprint() / 2**20, 1),
    "| allocated after load MiB",
    round(allocated, 1),
)
ids = torch.randint(0, vocab, (4, 96), device=device)
with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
    out = model(input_ids=ids, labels=ids)
out.loss.backward()
g = [p.grad for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
print("loss", out.loss.item(), "| LoRA grads", len(g), "nonzero", sum(int(x.abs().sum() > 0) for x in g))
assert len(g) == len(trainable)
with torch.no_grad():
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.add_(0.01)
    pol = model(input_ids=ids).logits.float()
    with reference_context(model):
        ref = model(input_ids=ids).logits.float()
print(
    "policy vs reference max |dlogit|",
    float((pol - ref).abs().max()),
    "(>0: adapters were off for the reference)",
)
assert float((pol - ref).abs().max()) > 0
if device == "cuda":
    print("peak allocated MiB", round(torch.cuda.max_memory_allocated() / 2**20, 1))
print("CHECK4BIT OK")
