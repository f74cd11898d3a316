"""Step 2 of DPO: minimise the DPO loss on a LoRA adapter.

`trainer` (the `transformers.Trainer` subclass), `loss` (the pure loss table), `logps` (per-pair log-probs,
chunked through the LM head), `batching` (padding and prefix-shared layouts), `ref_cache` (reference
log-probs computed once, cached on disk). This package imports neither `hf_dpo.report` nor `hf_dpo.hub`.
"""
