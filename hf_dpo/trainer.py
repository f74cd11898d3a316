"""`DPOTrainer`: the DPO objective inside a `transformers.Trainer`.

One training step reads like the method:

    policy = concatenated_forward(model, batch)                       # adapters on, with grad
    with torch.no_grad(), reference_context(model):
        reference = concatenated_forward(model, batch)                # adapters off: π_ref
    loss = dpo_loss(policy.chosen, policy.rejected, reference.chosen, reference.rejected, beta=β)

The reference is never a second model: it is the same network with its LoRA adapters switched off
(or switched to the frozen starting adapter). With `precompute_ref_log_probs` the reference pass runs
once over the data before training, and steps read the cached values instead.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from hf_dpo.config import DataConfig, DPOConfig
from hf_dpo.data import TOKENIZED_COLUMNS, PreferenceCollator, tokenize_dataset
from hf_dpo.loss import dpo_loss, sft_loss, token_logps
from hf_dpo.modeling import reference_context

logger = logging.getLogger(__name__)

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class PairLogps:
    chosen: torch.Tensor  # (B,) summed log-probs of the chosen completions
    rejected: torch.Tensor  # (B,)
    chosen_lengths: torch.Tensor  # (B,) completion token counts
    rejected_lengths: torch.Tensor  # (B,)
    chosen_token_logps: torch.Tensor | None = None  # (B, T-1), for the SFT term
    chosen_mask: torch.Tensor | None = None  # (B, T-1)


def _is_peft(model) -> bool:
    while hasattr(model, "module") and not hasattr(model, "peft_config"):
        model = model.module
    return hasattr(model, "peft_config")


class DPOTrainer(Trainer):
    """DPO for LoRA adapters. Accepts TRL's constructor arguments (`model`, `args`, `train_dataset`,
    `eval_dataset`, `processing_class`, `peft_config`); datasets may be raw (prompt/chosen/rejected rows in
    any shape `hf_dpo.data` reads) or already tokenized."""

    def __init__(
        self,
        model=None,
        ref_model=None,
        args: DPOConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        data_config: DataConfig | None = None,
        **kwargs,
    ):
        args = args or DPOConfig(output_dir="runs/dpo")
        if ref_model is not None:
            raise ValueError(
                "hf_dpo computes the reference by switching the LoRA adapters off, so it never loads a second "
                "model: pass peft_config (or a PeftModel) and no ref_model."
            )
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model)
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if peft_config is not None and not _is_peft(model):
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        if not _is_peft(model):
            raise ValueError(
                "DPOTrainer needs a LoRA adapter: the reference policy is the model with its adapters off. "
                "Pass peft_config=LoraConfig(...) or a PeftModel."
            )
        train_dataset = self._tokenize(train_dataset, processing_class, data_config, args)
        eval_dataset = self._tokenize(eval_dataset, processing_class, data_config, args)
        data_collator = data_collator or PreferenceCollator(pad_token_id=processing_class.pad_token_id)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # compute_loss returns a per-batch mean; let Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.reference_forward_passes = 0  # batches for which the reference model actually ran

    @staticmethod
    def _tokenize(dataset, tokenizer, data_config, args):
        if dataset is None:
            return None
        if isinstance(dataset, dict):
            return {name: tokenize_dataset(ds, tokenizer, data_config, args) for name, ds in dataset.items()}
        return tokenize_dataset(dataset, tokenizer, data_config, args)

    # ------------------------------------------------------------------ forward passes

    def concatenated_forward(self, model, batch: dict[str, torch.Tensor], with_tokens: bool = False) -> PairLogps:
        """Chosen and rejected sequences in one forward pass: batch rows [chosen_0..B-1, rejected_0..B-1]."""
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        per_token, mask = token_logps(outputs.logits, batch["labels"])  # (2B, T-1) each
        logps = per_token.sum(-1)  # (2B,)
        lengths = mask.sum(-1)  # (2B,)
        half = logps.shape[0] // 2
        return PairLogps(
            chosen=logps[:half],
            rejected=logps[half:],
            chosen_lengths=lengths[:half],
            rejected_lengths=lengths[half:],
            chosen_token_logps=per_token[:half] if with_tokens else None,
            chosen_mask=mask[:half] if with_tokens else None,
        )

    def reference_logps(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B,) reference log-probs: from the batch's cache if present, else one no-grad pass."""
        if all(key in batch for key in REF_COLUMNS):
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with torch.no_grad(), reference_context(model):
            ref = self.concatenated_forward(model, batch)
        self.reference_forward_passes += 1
        return ref.chosen.detach(), ref.rejected.detach()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args: DPOConfig = self.args
        policy = self.concatenated_forward(model, inputs, with_tokens=bool(args.rpo_alpha))
        ref_chosen, ref_rejected = self.reference_logps(model, inputs)
        out = dpo_loss(
            policy.chosen,
            policy.rejected,
            ref_chosen.to(policy.chosen.dtype),
            ref_rejected.to(policy.rejected.dtype),
            beta=args.beta,
            loss_type=args.loss_type,
            label_smoothing=args.label_smoothing,
            chosen_lengths=policy.chosen_lengths,
            rejected_lengths=policy.rejected_lengths,
        )
        loss = out.losses.mean()
        if args.rpo_alpha:
            loss = loss + args.rpo_alpha * sft_loss(policy.chosen_token_logps, policy.chosen_mask)
        self._store_metrics(out, policy)
        return (loss, {"chosen_rewards": out.chosen_rewards}) if return_outputs else loss

    def _store_metrics(self, out, policy: PairLogps) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = gather(out.chosen_rewards), gather(out.rejected_rewards)
        m = self._metrics[mode]
        m["rewards/chosen"].append(chosen.mean().item())
        m["rewards/rejected"].append(rejected.mean().item())
        m["rewards/accuracies"].append((chosen > rejected).float().mean().item())
        m["rewards/margins"].append((chosen - rejected).mean().item())
        m["logps/chosen"].append(gather(policy.chosen.detach()).mean().item())
        m["logps/rejected"].append(gather(policy.rejected.detach()).mean().item())

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(vals) / len(vals) for key, vals in self._metrics[mode].items() if vals}
        if mode == "eval":
            metrics = {f"eval_{key}": val for key, val in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    # ------------------------------------------------------------------ reference log-prob cache

    @torch.no_grad()
    def compute_reference_logps(self, dataset) -> tuple[list[float], list[float]]:
        """One no-grad pass with the reference policy over `dataset`, in its order."""
        loader = self._plain_loader(dataset)
        chosen, rejected = [], []
        model = self.model
        was_training = model.training
        model.eval()
        try:
            for batch in loader:
                batch = self._prepare_inputs(batch)
                ref_c, ref_r = self.reference_logps(model, {k: v for k, v in batch.items() if k not in REF_COLUMNS})
                chosen.extend(self.accelerator.gather_for_metrics(ref_c).float().cpu().tolist())
                rejected.extend(self.accelerator.gather_for_metrics(ref_r).float().cpu().tolist())
        finally:
            model.train(was_training)
        return chosen, rejected

    def _plain_loader(self, dataset) -> DataLoader:
        columns = [c for c in TOKENIZED_COLUMNS if c in dataset.column_names]
        loader = DataLoader(
            dataset.select_columns(columns),
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        return self.accelerator.prepare(loader)

    def _with_reference(self, dataset):
        if dataset is None or not self.args.precompute_ref_log_probs or REF_COLUMNS[0] in dataset.column_names:
            return dataset
        chosen, rejected = self.compute_reference_logps(dataset)
        return dataset.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected)

    def get_train_dataloader(self) -> DataLoader:
        self.train_dataset = self._with_reference(self.train_dataset)
        return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        if isinstance(eval_dataset, str):
            self.eval_dataset[eval_dataset] = self._with_reference(self.eval_dataset[eval_dataset])
        elif eval_dataset is not None:
            eval_dataset = self._with_reference(eval_dataset)
        elif not isinstance(self.eval_dataset, dict):
            self.eval_dataset = self._with_reference(self.eval_dataset)
        return super().get_eval_dataloader(eval_dataset)

    # ------------------------------------------------------------------ evaluation helpers

    @torch.no_grad()
    def pair_logps(self, dataset=None) -> dict[str, torch.Tensor]:
        """Per-pair policy and reference log-probs over `dataset` (default: the eval set), each (N,)."""
        dataset = dataset if dataset is not None else self.eval_dataset
        loader = self._plain_loader(dataset)
        model = self.model
        was_training = model.training
        model.eval()
        out = defaultdict(list)
        try:
            for batch in loader:
                batch = self._prepare_inputs(batch)
                policy = self.concatenated_forward(model, batch)
                ref_c, ref_r = self.reference_logps(model, batch)
                for key, value in (
                    ("policy_chosen_logps", policy.chosen),
                    ("policy_rejected_logps", policy.rejected),
                    ("ref_chosen_logps", ref_c),
                    ("ref_rejected_logps", ref_r),
                    ("chosen_lengths", policy.chosen_lengths),
                    ("rejected_lengths", policy.rejected_lengths),
                ):
                    out[key].append(self.accelerator.gather_for_metrics(value).float().cpu())
        finally:
            model.train(was_training)
        return {key: torch.cat(values) for key, values in out.items()}

    # ------------------------------------------------------------------ saving and the Hub

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        # training_args.bin is a pickle of the arguments: never let the Hub token ride along.
        token, self.args.hub_token = self.args.hub_token, None
        try:
            super()._save(output_dir, state_dict=state_dict)
        finally:
            self.args.hub_token = token

    def init_hf_repo(self, token=None, private=None) -> None:
        """Pushing is hf_dpo's (hf_dpo.hub): the repo is created at push time, after local files are safe."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Checkpoint pushes go through hf_dpo.hub's background callback, not Trainer's."""
