"""`DPOConfig`: `transformers.TrainingArguments` plus TRL's DPO keys and hf_dpo's (declared in
`hf_dpo.config.dpo_keys`, each with its help and range); the checks that span keys live in
`hf_dpo.config.dpo_checks`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from transformers import TrainingArguments

from hf_dpo.config.dpo_checks import (
    auto_bool,
    check_checkpointing_kwargs,
    check_dpo_keys,
    resolve_trl_defaults,
)
from hf_dpo.config.dpo_keys import DPOKeys


@dataclass
class DPOConfig(DPOKeys, TrainingArguments):
    """`transformers.TrainingArguments` plus the DPO objective and its data limits (names as in TRL): the keys of
    `DPOKeys`, which come first (TRL's learning_rate and logging_steps defaults win over transformers')."""

    def __post_init__(self):
        resolve_trl_defaults(self)
        if self.report_to is None or (isinstance(self.report_to, list) and None in self.report_to):
            # `report_to: null` (or --report_to null) means no integration, not one named None
            self.report_to = [r for r in self.report_to or [] if r is not None] or "none"
        check_dpo_keys(self)
        self.precompute_ref_log_probs = auto_bool(self.precompute_ref_log_probs, "precompute_ref_log_probs")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not self.use_cpu:
            import torch

            # Several processes (accelerate launch / torchrun) but no GPU: without use_cpu, TrainingArguments
            # reports world_size 2 yet trains each process alone (every rank on all data, every rank saving).
            # use_cpu makes it a gloo process group (accelerate's MULTI_CPU): real DDP on CPU.
            self.use_cpu = not torch.cuda.is_available()
        super().__post_init__()
        # Version compatibility, not a setting's default: activation_checkpointing_kwargs exists in newer
        # transformers (5.24; gradient_checkpointing_* mirror it), only gradient_checkpointing_kwargs in older
        # ones (5.17, within pyproject's transformers>=5.0)
        check_checkpointing_kwargs(
            getattr(self, "activation_checkpointing_kwargs", self.gradient_checkpointing_kwargs)
        )

    def __getstate__(self) -> dict:
        # Trainer saves training_args.bin as a pickle of these arguments: the Hub token never rides along.
        state = self.__dict__.copy()
        state["hub_token"] = None
        return state
