"""The policy: loading (4-bit/8-bit base + LoRA, the reference adapter), merging, memory accounting."""
