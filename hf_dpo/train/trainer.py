"""`DPOTrainer`: the DPO objective inside a `transformers.Trainer`.

One training step reads like the method (`compute_loss`):

    policy = concatenated_forward(model, batch)                       # adapters on, with grad
    reference = reference_logps(model, batch)                         # cached, or adapters off, no grad: π_ref
    loss = dpo_loss(policy.chosen, policy.rejected, *reference, beta=β).losses.mean()

The reference is never a second model: it is the same network with its LoRA adapters switched off
(or switched to the frozen starting adapter). With `precompute_ref_log_probs` the reference pass runs
once over the data before training, is cached on disk (`hf_dpo.train.ref_cache`) for later runs, and steps
read the cached values instead.

Four switches make the same computation cheaper, each checked against the plain path in tests:
`prefix_sharing` (one row [prompt, chosen, rejected] per pair with a dense 4D or a FlexAttention block mask,
`hf_dpo.train.batching`, `hf_dpo.train.attention`), `padding_free` (a batch's sequences packed in one row),
`logps_chunk_size` (log-probs of the labelled positions only, through the LM head a chunk at a time,
`hf_dpo.train.logps`) and `train_sampling_strategy: group_by_length` (batches of similar length).

Pushing to the Hub is not the trainer's business: `hf_dpo.run` takes the Hub settings (and the token) out of the
arguments before a trainer exists and pushes with `hf_dpo.hub.push` once the local files are written.

Why one file over 400 lines: `DPOTrainer` is one class, its `transformers.Trainer` overrides (loss, log-probs,
data loading, evaluation, logging) sharing its state; what needs none of that state is in `train.setup`,
`train.batching`, `train.logps`, `train.loss` and `train.ref_cache`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections import defaultdict

import torch
from torch.utils.data import DataLoader
from transformers import Trainer

from hf_dpo.config import DataConfig, DPOConfig
from hf_dpo.data import TOKENIZED_COLUMNS
from hf_dpo.model.loading import keep_4bit_layers_trainable
from hf_dpo.model.reference import decoding_weights, dequantized_fit, reference_context
from hf_dpo.model.unwrap import is_peft
from hf_dpo.train.attention import FLEX, MASK4D, enable_flex_for_block_masks
from hf_dpo.train.batching import (
    PreferenceCollator,
    is_packed,
    is_shared,
    length_grouped_sampler,
    pair_tokens,
    pass_batch_size,
    pass_batches,
    plain_batch,
    shortest_first,
)
from hf_dpo.train.logps import (
    LogpsOptions,
    PairLogps,
    chunking_problem,
    forward_dtype,
    head_and_decoder,
    pair_logps,
    working_layout,
)
from hf_dpo.train.loss import dpo_loss, logps_rounding
from hf_dpo.train.ref_cache import REF_COLUMNS, ReferenceColumns
from hf_dpo.train.reference import (
    ALL_AHEAD,
    SyncReferenceCallback,
    check_sync,
    keep_starting_adapter,
    precompute_setting,
    reference_model,
)
from hf_dpo.train.setup import (
    TrainerSetupError,
    as_dpo_config,
    check_datasets,
    check_precomputable,
    named_eval_datasets,
    padding_free_on,
    prefix_sharing_on,
    prepare_policy,
    return_freed_memory,
    router_aux_coef,
    tokenize,
    warn_unused_settings,
)

logger = logging.getLogger(__name__)

TRAINING = "training, its reference pass, steps and evaluations"  # dequantized_for_passes' purpose


def trl_token_count(batch: dict[str, torch.Tensor], accelerator) -> int:
    """Tokens of a training batch as TRL counts them for `num_tokens`, on every rank together: each pair's prompt
    twice (prompt+chosen and prompt+rejected rows), whatever layout hf_dpo built (a prefix-shared row holds it once)."""
    real = batch["attention_mask"].sum()
    if is_shared(batch):
        real = real + (batch["segment_ids"] == 0).sum()  # the prompt a plain layout computes a second time
    return int(accelerator.gather_for_metrics(real.reshape(1).to(accelerator.device)).sum())


class DPOTrainer(Trainer):
    """DPO for LoRA adapters. Accepts TRL's constructor arguments (`model`, `args`, `train_dataset`,
    `eval_dataset`, `processing_class`, `peft_config`, `quantization_config` for a model given by name); datasets
    may be raw (prompt/chosen/rejected rows in any shape `hf_dpo.data` reads) or already tokenized. Without
    `data_config` the rows are read as TRL reads them: a plain-string prompt is tokenized as it is, without the chat
    template (recipes pass theirs)."""

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
        quantization_config=None,
        **kwargs,
    ):
        args = as_dpo_config(args)
        # No data_config: TRL's reading of the rows, so a TRL script trains on the same tokens. TRL tokenizes a
        # plain-string prompt as it is (no chat template; conversational rows always get the template).
        data_config = data_config or DataConfig(apply_chat_template=False)
        check_datasets(train_dataset, eval_dataset, args)
        warn_unused_settings(args)
        model, processing_class = prepare_policy(
            model, processing_class, peft_config, args, quantization_config
        )
        keep_4bit_layers_trainable(model)
        return_freed_memory(args)
        self._router_aux_coef = router_aux_coef(model, args)
        self._packed = padding_free_on(args)
        # the prefix-shared layout's attention (mask4d / flex), or None: no prefix sharing
        self._sharing_attention = prefix_sharing_on(model, args, self._router_aux_coef, packed=self._packed)
        self._layout_checked = False
        # Full fine-tuning without a ref_model: the reference is the untrained policy, which precomputing every
        # dataset's reference log-probs before the first step serves without holding a second model.
        self._precompute = precompute_setting(model, ref_model, args, train_dataset)
        check_sync(model, ref_model, args)
        if is_peft(model) and peft_config is None and ref_model is None and train_dataset is not None:
            # training from the adapter as given (an evaluation-only trainer of a finished run, as `hf-dpo
            # evaluate` builds, names its reference itself: adapters off, or its 'reference' adapter)
            keep_starting_adapter(model)
        ref_model = reference_model(
            model, ref_model, args, precompute_everything=self._precompute == ALL_AHEAD
        )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator
            or PreferenceCollator(
                pad_token_id=processing_class.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                prefix_sharing=self._prefix_sharing,
                padding_free=self._packed,
            ),
            train_dataset=tokenize(train_dataset, processing_class, data_config, args),
            eval_dataset=tokenize(eval_dataset, processing_class, data_config, args),
            processing_class=processing_class,
            **kwargs,
        )
        self.ref_model = ref_model
        if ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
            if self._sharing_attention == FLEX:
                enable_flex_for_block_masks(self.ref_model)
        if args.sync_ref_model:
            self.add_callback(SyncReferenceCallback(self.ref_model, self.accelerator))
        if self.compute_metrics is not None:
            logger.info(
                "compute_metrics gets each pair's rewards as predictions (pairs x 2: chosen, rejected) and label 0 "
                "(chosen preferred); TRL passes the vocabulary logits of a second forward pass instead."
            )
        # compute_loss returns a per-batch mean; let Trainer scale it for gradient accumulation.
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.reference_forward_passes = 0  # batches for which the reference model actually ran
        self.token_counts = {"real": 0, "total": 0}  # training batches: real tokens, tokens incl. padding
        self._trl_num_tokens = 0  # TRL's num_tokens: prompt+chosen, prompt+rejected tokens trained on
        self._chunk_size = self._resolve_chunking(args.logps_chunk_size or 0)
        self._reference_columns = ReferenceColumns(
            args,
            processing_class,
            self.accelerator,
            setting=True if self._precompute == ALL_AHEAD else self._precompute,
        )
        self._data_config = data_config
        if (
            self._precompute == ALL_AHEAD
        ):  # the reference is the model as given: its log-probs now, as TRL does
            self._attach_reference_columns()

    @property
    def _reference_options(self) -> LogpsOptions:
        """The summed log-probs alone (LD-DPO weighted): what the reference pass and its cache compute."""
        return LogpsOptions(chunk_size=self._chunk_size, ld_alpha=self.args.ld_alpha)

    @property
    def _policy_options(self) -> LogpsOptions:
        """The policy pass of a step: also the chosen tokens (sft), WPO weights and the router's loss if asked."""
        return LogpsOptions(
            chunk_size=self._chunk_size,
            with_tokens="sft" in self.args.loss_type,
            ld_alpha=self.args.ld_alpha,
            with_wpo=self.args.use_weighting,
            router_aux=bool(self._router_aux_coef),
            with_stats=True,
        )

    # ------------------------------------------------------------------ the objective

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args: DPOConfig = self.args
        if model.training:
            self.token_counts["real"] += int(inputs["attention_mask"].sum())
            self.token_counts["total"] += inputs["input_ids"].numel()
            self._trl_num_tokens += trl_token_count(inputs, self.accelerator)
        policy = self.concatenated_forward(model, inputs, options=self._policy_options)
        ref_chosen, ref_rejected = self.reference_logps(model, inputs)
        out = dpo_loss(
            policy.chosen,
            policy.rejected,
            ref_chosen.to(policy.chosen.dtype),
            ref_rejected.to(policy.rejected.dtype),
            beta=args.beta,
            loss_type=args.loss_type,
            loss_weights=args.loss_weights,
            label_smoothing=args.label_smoothing,
            chosen_lengths=policy.chosen_lengths,
            rejected_lengths=policy.rejected_lengths,
            chosen_token_logps=policy.chosen_token_logps,
            f_divergence_type=args.f_divergence_type,
            f_alpha_divergence_coef=args.f_alpha_divergence_coef,
            discopop_tau=args.discopop_tau,
            pair_weights=policy.wpo_weights,
            rounding=self.logps_rounding,
        )
        loss = out.losses.mean()
        if policy.aux_loss is not None:  # a Mixture-of-Experts model's router load balancing
            loss = loss + self._router_aux_coef * policy.aux_loss
        self._store_metrics(out, policy)
        rewards = {"chosen_rewards": out.chosen_rewards, "rejected_rewards": out.rejected_rewards}
        return (loss, rewards) if return_outputs else loss

    def concatenated_forward(
        self,
        model,
        batch: dict[str, torch.Tensor],
        with_tokens: bool = False,
        options: LogpsOptions | None = None,
    ) -> PairLogps:
        """Policy log-probs of chosen and rejected in one forward pass, in the batch's layout (plain: rows
        [chosen_0..B-1, rejected_0..B-1]; prefix-shared: rows [prompt, chosen, rejected]; packed: one row)."""
        if options is None:
            options = self._reference_options
            options.with_tokens = with_tokens
        if (is_shared(batch) or is_packed(batch)) and not self._layout_checked and not model.training:
            checked = self._first_batch_checked(model, batch, options)
            if checked is not None:
                return checked
        if (is_shared(batch) or is_packed(batch)) and not self._layout_works(model, batch, options):
            batch = plain_batch(batch, self.processing_class.pad_token_id)
        # the attention the layout holds with, known only once the first batch was checked
        options = dataclasses.replace(options, attention=self._sharing_attention or MASK4D)
        return pair_logps(model, batch, options=options)

    def reference_logps(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B,) reference log-probs: from the batch's cache if present, else one no-grad pass of the reference
        (`hf_dpo.train.reference`: the ref_model, the policy with its adapters off, or the untrained policy)."""
        if all(key in batch for key in REF_COLUMNS):
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        with torch.no_grad(), self.reference_policy(model) as reference:
            ref = self.concatenated_forward(reference, batch, options=self._reference_options)
        self.reference_forward_passes += 1
        return ref.chosen.detach(), ref.rejected.detach()

    @contextlib.contextmanager
    def reference_policy(self, model):
        """The model that computes π_ref for as long as the block runs: the ref_model; `model` with its adapters
        off (or its frozen starting adapter on); or, full fine-tuning before its first step, `model` itself."""
        if self.ref_model is not None:
            yield self.ref_model
        elif is_peft(model):
            with reference_context(model):
                yield model
        else:
            self._check_policy_is_reference("a batch without precomputed reference log-probs")
            yield model

    def _check_policy_is_reference(self, what: str) -> None:
        """Full fine-tuning without a ref_model: the policy is the reference only before its first step."""
        if self.state.global_step > 0:
            raise TrainerSetupError(
                f"Cannot compute reference log-probs for {what} after training has started: this full fine-tuning "
                "holds no reference model (precompute_ref_log_probs computed the reference log-probs of the "
                "datasets given at construction, before the first step). Provide this dataset as `eval_dataset` at "
                "initialization, pass an explicit `ref_model`, or set `precompute_ref_log_probs=False` (a frozen "
                "copy of the model is then kept)."
            )

    @property
    def aux_loss_enabled(self) -> bool:
        """TRL's flag: the model is a Mixture-of-Experts whose router load-balancing loss joins the DPO loss."""
        return bool(self._router_aux_coef)

    def _store_metrics(self, out, policy: PairLogps) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = gather(out.chosen_rewards), gather(out.rejected_rewards)
        m = self._metrics[mode]
        m["rewards/chosen"].append(chosen.mean().item())
        m["rewards/rejected"].append(rejected.mean().item())
        m["rewards/accuracies"].append(
            gather(out.chosen_ranked_first.float()).mean().item()
        )  # ties count wrong
        m["rewards/margins"].append((chosen - rejected).mean().item())
        m["logps/chosen"].append(gather(policy.chosen.detach()).mean().item())
        m["logps/rejected"].append(gather(policy.rejected.detach()).mean().item())
        if policy.aux_loss is not None:
            m["aux_loss"].append(gather(policy.aux_loss.detach()).mean().item())
        if policy.token_stats is not None:  # TRL's logits/*, entropy and mean_token_accuracy, token-weighted
            stats, chosen = policy.token_stats, policy.token_stats["is_chosen"]
            for key, values, where in (
                ("logits/chosen", stats["mean_logits"], chosen),
                ("logits/rejected", stats["mean_logits"], ~chosen),
                ("entropy", stats["entropy"], torch.ones_like(chosen)),
                ("mean_token_accuracy", stats["top1"].float(), chosen),
            ):
                total = gather(values[where].sum().reshape(1)).sum()
                count = gather(where.sum().reshape(1)).sum()
                m[key].append((total / count).item() if count > 0 else 0.0)
        m["num_tokens"] = [float(self._trl_num_tokens)]

    def training_step(self, *args, **kwargs):
        if not self.args.activation_offloading:
            return super().training_step(*args, **kwargs)
        # Saved activations wait for the backward in (pinned) CPU memory instead of the accelerator's.
        with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
            return super().training_step(*args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The loss; and, for a `compute_metrics`, each pair's implicit rewards as predictions (B, 2: chosen,
        rejected) with label 0 (the chosen column is the preferred one): `(predictions.argmax(-1) == labels)` is
        the reward accuracy. TRL passes the (2B, T, vocab) logits instead, recomputed by a second forward pass."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, rewards = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        predictions = torch.stack([rewards["chosen_rewards"], rewards["rejected_rewards"]], dim=1)  # (B, 2)
        labels = torch.zeros(predictions.shape[0], dtype=torch.long, device=predictions.device)  # (B,)
        return loss.detach(), predictions.detach(), labels

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(vals) / len(vals) for key, vals in self._metrics[mode].items() if vals}
        if mode == "eval":
            metrics = {f"eval_{key}": val for key, val in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    # ------------------------------------------------------------------ fast paths: chunking, prefix sharing

    def _resolve_chunking(self, chunk_size: int) -> int:
        """`chunk_size`, or 0 (logged) where the chunked log-prob path can't run on this model."""
        if chunk_size <= 0:
            return 0
        if self.args.use_weighting:
            logger.info("Chunked log-probs off: WPO weights (use_weighting) need the full logits.")
            return 0
        deepspeed = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if self.is_fsdp_enabled or (deepspeed is not None and deepspeed.zero_stage == 3):
            problem = "the LM head is sharded (FSDP / ZeRO-3)"
        else:
            problem = chunking_problem(self.model)
            if problem is None and self.ref_model is not None:
                problem = chunking_problem(self.ref_model)
                problem = problem and f"the ref_model: {problem}"
        if problem:
            logger.info("Chunked log-probs off: %s; computing full logits instead.", problem)
            return 0
        logger.info(
            "Log-probs through the LM head in chunks of %d tokens (completion positions only).", chunk_size
        )
        return chunk_size

    @property
    def _prefix_sharing(self) -> bool:
        return self._sharing_attention is not None

    def _layout_works(
        self,
        model,
        batch: dict[str, torch.Tensor],
        options: LogpsOptions,
        batch_logps: PairLogps | None = None,
    ) -> bool:
        """The prefix-shared or packed layout is checked once, on its first batch (`working_layout`, given the
        batch's own log-probs in eval mode where they exist); on failure the collator builds plain batches from
        then on."""
        if not self._layout_checked:
            self._layout_checked = True
            asked, pad_id = (self._sharing_attention, self._packed), self.processing_class.pad_token_id
            held = working_layout(model, batch, pad_id, asked, options, self.args, batch_logps)
            self._sharing_attention, self._packed = held
            if isinstance(self.data_collator, PreferenceCollator):
                self.data_collator.prefix_sharing = self._prefix_sharing
                self.data_collator.padding_free = self._packed
        return self._prefix_sharing or self._packed

    def _first_batch_checked(
        self, model, batch: dict[str, torch.Tensor], options: LogpsOptions
    ) -> PairLogps | None:
        """The log-probs of the first prefix-shared or packed batch of an eval-mode pass (the reference pass,
        evaluation), computed once: the layout check reads its shortest pair from them and adds only the plain
        layout's forward of that pair. None where the batch must be computed again, in the layout
        that holds: its forward raised, or the check turned the layout or its attention down. A training batch is
        checked apart, in eval mode (dropout would make the layouts differ)."""
        asked = self._sharing_attention
        try:
            logps = pair_logps(model, batch, options=dataclasses.replace(options, attention=asked or MASK4D))
        except Exception:  # noqa: BLE001 - the check runs the layout again on one pair and logs why it fails
            logps = None
        works = self._layout_works(model, batch, options, logps)
        return logps if works and logps is not None and self._sharing_attention == asked else None

    # ------------------------------------------------------------------ passes over a whole dataset

    @torch.no_grad()
    def logps_over(self, dataset, with_policy: bool = True) -> dict[str, torch.Tensor]:
        """Per-pair log-probs over `dataset`, in its order (each rank its shard, gathered), each (N,) float32:
        ref_chosen_logps / ref_rejected_logps (the dataset's cached columns, or one pass of the reference) and,
        with `with_policy`, policy_chosen_logps / policy_rejected_logps and chosen_lengths / rejected_lengths.

        Forward-only, so cheaper per batch than a step, and made cheaper still: batches go shortest pair first
        (`shortest_first`: pairs of about one length share a batch, little padding; the layout check's batch is
        the cheapest) and the values go back into
        the dataset's order; the reference pass switches the adapters off once, not at every batch, in batches of
        `precompute_ref_batch_size` pairs or, unset, of up to PASS_BATCH_TOKENS tokens (`_reference_loader`); the
        4-bit weights are dequantized once for the pass where that is the same function and fits
        (`dequantized_for_passes`). Eval mode (no dropout); the random state is left as it was, so the training
        shuffle and dropout masks are those of a run without this pass."""
        if not with_policy:  # the reference pass itself: compute, never read a column
            dataset = dataset.remove_columns([c for c in REF_COLUMNS if c in dataset.column_names])
        lengths = pair_tokens(dataset, self._prefix_sharing)
        order = shortest_first(lengths)
        dataset = dataset.select(order)
        model, was_training = self.model, self.model.training
        model.eval()
        out = {}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices), self.dequantized_for_passes(model):
                if with_policy:
                    out.update(self._pass(self._plain_loader(dataset), self._policy_values))
                if all(c in dataset.column_names for c in REF_COLUMNS):
                    out.update({c: torch.tensor(dataset[c], dtype=torch.float32) for c in REF_COLUMNS})
                else:
                    loader = self._reference_loader(dataset, [lengths[i] for i in order])
                    with self.reference_policy(model) as reference:
                        out.update(self._pass(loader, lambda b: self._reference_values(reference, b)))
        finally:
            model.train(was_training)
        restore = torch.empty(len(order), dtype=torch.long)
        restore[order] = torch.arange(len(order))  # (N,) position in the pass of each pair of `dataset`
        return {key: values[restore] for key, values in out.items()}

    def _pass(self, loader, values) -> dict[str, torch.Tensor]:
        """`values(batch)` -> {name: (B,)} over every batch of `loader`, in order, gathered: {name: (N,)}."""
        out = defaultdict(list)
        for batch in loader:
            for key, value in values(self._prepare_inputs(batch)).items():
                if self.accelerator.num_processes > 1:  # each rank its shard
                    value = self.accelerator.gather_for_metrics(value)
                out[key].append(value.float().cpu())
        return {key: torch.cat(values) for key, values in out.items()}

    def _policy_values(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        policy = self.concatenated_forward(self.model, batch)
        return {
            "policy_chosen_logps": policy.chosen,
            "policy_rejected_logps": policy.rejected,
            "chosen_lengths": policy.chosen_lengths,
            "rejected_lengths": policy.rejected_lengths,
        }

    def _reference_values(self, reference, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ref = self.concatenated_forward(reference, batch, options=self._reference_options)
        self.reference_forward_passes += 1
        return {"ref_chosen_logps": ref.chosen, "ref_rejected_logps": ref.rejected}

    def _reference_loader(self, dataset, lengths: list[int]):
        """Batches of the reference pass over `dataset` (shortest first; `lengths`, its pairs' tokens in the batch
        layout, in that order): `precompute_ref_batch_size` pairs each; unset, `pass_batches` on one process
        (a token budget, little padding) and `pass_batch_size` pairs for the longest on several (whose shards
        take batches of one size). Logged."""
        if self.args.precompute_ref_batch_size:
            return self._plain_loader(dataset, self.args.precompute_ref_batch_size)
        lm_head, _ = head_and_decoder(self.model)
        vocab = None if self._chunk_size else lm_head.weight.shape[0]
        if self.accelerator.num_processes > 1:
            size = pass_batch_size(max(lengths, default=1), vocab, self.args.per_device_train_batch_size)
            logger.info("Reference pass: %d pairs a batch, shortest first.", size)
            return self._plain_loader(dataset, size)
        batches = pass_batches(lengths, vocab)
        logger.info(
            "Reference pass: %d pairs in %d batches of up to %d tokens, shortest first (precompute_ref_batch_size "
            "unset).",
            len(lengths),
            len(batches),
            max((len(b) * lengths[b[0]] for b in batches), default=0),
        )
        columns = [c for c in TOKENIZED_COLUMNS if c in dataset.column_names]
        return DataLoader(
            dataset.select_columns(columns), batch_sampler=batches, collate_fn=self.data_collator
        )

    def dequantized_for_passes(self, model, purpose: str = "the pass"):
        """`decoding_weights` (the 4-bit layers dequantized once, put back after) on one CPU process when the
        float weights take at most half the free memory (logged either way); otherwise nothing changes. Wrappers
        (DDP, FSDP's flat parameters) hold the layers they were given, so a distributed run keeps them. Inside
        `train()` the layers are dequantized already, and this does nothing."""
        if self.accelerator.num_processes > 1:
            return contextlib.nullcontext()
        fits, why = dequantized_fit(model, purpose)
        if why:
            logger.info("%s: %s.", "Training" if purpose == TRAINING else "Forward-only pass", why)
        return decoding_weights(model) if fits else contextlib.nullcontext()

    def compute_reference_logps(self, dataset) -> tuple[list[float], list[float]]:
        """One no-grad pass with the reference policy over `dataset`, in its order (each rank its shard)."""
        ref = self.logps_over(dataset, with_policy=False)
        return ref["ref_chosen_logps"].tolist(), ref["ref_rejected_logps"].tolist()

    def _plain_loader(self, dataset, batch_size: int | None = None) -> DataLoader:
        columns = [c for c in (*TOKENIZED_COLUMNS, *REF_COLUMNS) if c in dataset.column_names]
        loader = DataLoader(
            dataset.select_columns(columns),
            batch_size=batch_size or self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        return self.accelerator.prepare(loader)

    def _attach_reference_columns(self) -> None:
        """The reference log-probs of the train and every eval dataset, as columns (from the disk cache, or one
        pass now)."""
        self.train_dataset = self._with_reference(self.train_dataset, "train")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                name: self._with_reference(ds, name) for name, ds in self.eval_dataset.items()
            }
        else:
            self.eval_dataset = self._with_reference(self.eval_dataset, "eval")

    def _with_reference(self, dataset, split: str = "train"):
        reference = self.ref_model if self.ref_model is not None else self.model
        return self._reference_columns.attach(dataset, split, reference, self.compute_reference_logps)

    @functools.cached_property
    def logps_rounding(self) -> float:
        """The relative rounding of this model's sequence log-probs, by the dtype its forward runs in: a reward
        margin within it is a tie in reward accuracy (`hf_dpo.train.loss.ranks_chosen_first`)."""
        return logps_rounding(forward_dtype(self.model, self.args))

    def pair_logps(self, dataset=None, policy_is_reference: bool = False) -> dict[str, torch.Tensor]:
        """Per-pair policy and reference log-probs over `dataset` (default: the eval set), each (N,), and their
        relative rounding (`logps_rounding`, a 0-d tensor), which reward accuracy takes for a tie.

        policy_is_reference: the caller knows the policy still equals the reference (before the first step):
        the cached reference log-probs then serve for both and no policy pass runs.
        """
        if dataset is None:
            self.eval_dataset = dataset = self._with_reference(self.eval_dataset, "eval")
        else:
            dataset = self._with_reference(dataset, "eval")
        if policy_is_reference and all(c in dataset.column_names for c in REF_COLUMNS):
            ref_c = torch.tensor(dataset[REF_COLUMNS[0]], dtype=torch.float32)
            ref_r = torch.tensor(dataset[REF_COLUMNS[1]], dtype=torch.float32)
            return {
                "policy_chosen_logps": ref_c,
                "policy_rejected_logps": ref_r,
                "ref_chosen_logps": ref_c,
                "ref_rejected_logps": ref_r,
                # every completion token is a label, so its count is the completion's length
                "chosen_lengths": torch.tensor([len(x) for x in dataset["chosen_input_ids"]]),
                "rejected_lengths": torch.tensor([len(x) for x in dataset["rejected_input_ids"]]),
                "logps_rounding": torch.tensor(self.logps_rounding, dtype=torch.float64),
            }
        return {
            **self.logps_over(dataset),
            "logps_rounding": torch.tensor(self.logps_rounding, dtype=torch.float64),
        }

    # ------------------------------------------------------------------ data loading, batch order, training

    def get_train_dataloader(self) -> DataLoader:
        if self._reference_columns.setting is True:
            self.train_dataset = self._with_reference(self.train_dataset, "train")
        return super().get_train_dataloader()

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """`Trainer.evaluate`; a dataset (or dict of them) passed here is tokenized like the trainer's own, as TRL
        does, and gets its reference columns in `get_eval_dataloader`."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            if self.args.precompute_ref_log_probs is True:
                for name, dataset in named_eval_datasets(eval_dataset):
                    check_precomputable(dataset, name)
            if self._precompute == ALL_AHEAD:
                self._check_policy_is_reference("a dataset passed to `evaluate()`")
            eval_dataset = self._tokenized(eval_dataset)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def _tokenized(self, dataset):
        """A dataset passed after construction (evaluate, predict), tokenized like the trainer's own."""
        return tokenize(dataset, self.processing_class, self._data_config, self.args)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        """`Trainer.predict` as `evaluate`: a raw dataset is tokenized like the trainer's own and gets its reference
        columns (`get_test_dataloader`). No predictions (None); the metrics carry the loss and the DPO metrics
        (`test_rewards/*`, ...), which `Trainer.predict` does not log."""
        output = super().predict(self._tokenized(test_dataset), ignore_keys, metric_key_prefix)
        for key, values in self._metrics["eval"].items():
            if values:
                output.metrics[f"{metric_key_prefix}_{key}"] = sum(values) / len(values)
        self._metrics["eval"].clear()  # else they would join the next evaluation's log
        return output

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return super().get_test_dataloader(self._with_reference(test_dataset, "eval"))

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        if isinstance(eval_dataset, str):
            self.eval_dataset[eval_dataset] = self._with_reference(self.eval_dataset[eval_dataset], "eval")
        elif eval_dataset is not None:
            eval_dataset = self._with_reference(eval_dataset, "eval")
        elif not isinstance(self.eval_dataset, dict):
            self.eval_dataset = self._with_reference(self.eval_dataset, "eval")
        return super().get_eval_dataloader(eval_dataset)

    def _get_train_sampler(self, train_dataset=None):
        """`train_sampling_strategy: group_by_length` groups pairs of similar length (seeded); anything else is
        transformers' own sampler."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or not hasattr(dataset, "column_names"):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return length_grouped_sampler(
            dataset, self.args.per_device_train_batch_size, seed, self._prefix_sharing
        )

    @property
    def pad_share(self) -> float | None:
        """Share of padding among the tokens of the training batches seen so far (None before any)."""
        total = self.token_counts["total"]
        return None if total == 0 else 1 - self.token_counts["real"] / total

    def train(self, *args, **kwargs):
        # bitsandbytes' CPU path dequantizes each 4-bit weight at every forward and again in the backward (about
        # a tenth of a step on the bench); dequantized once, the steps compute the same function (the same
        # losses, tested) from float weights held beside the 4-bit ones for the run, where they fit.
        with self.dequantized_for_passes(self.model, TRAINING):
            self.train_dataset = self._with_reference(self.train_dataset, "train")  # before the first step
            result = super().train(*args, **kwargs)
        if self.pad_share is not None:
            logger.info(
                "Training batches: %d tokens, %.1f%% of them padding",
                self.token_counts["total"],
                100 * self.pad_share,
            )
        return result
