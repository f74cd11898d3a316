"""One bench line, in its own process (`python -m hf_dpo.bench --worker SPEC.json`), so its peak RSS is its own.

The clock runs from building the trainer to the end of `train()`: tokenization, LoRA wrapping, the reference
pre-pass (TRL's in its constructor, hf_dpo's before the first step) and hf_dpo's prefix-sharing self-check are
inside it; loading the base model (the same for both) is not. Per-step times are kept beside it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import statistics
import time
from pathlib import Path

from hf_dpo.bench.data_shapes import token_shares
from hf_dpo.bench.lines import SAME_ALLOCATOR
from hf_dpo.model.memory import peak_memory, return_freed_memory_to_os

TRL_KEYS = ("prompt_ids", "chosen_ids", "rejected_ids")
HF_DPO_KEYS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")


class StepClock:
    """Trainer callback (built lazily, transformers is a heavy import): when each optimizer step ends."""

    def __init__(self):
        self.steps: list[float] = []
        self.first_step_begin: float | None = None
        self.collated: list[int] = []  # tokens of each batch the collator built
        self.collated_parts: list[
            tuple[int, int]
        ] = []  # (prompt, completion) tokens of each batch, prompt once
        # hf_dpo's trainer, set once built: the reference forwards of its steps counted apart from its pre-pass's
        self.trainer = None
        self.reference_passes_before_steps = 0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock.collated.clear()  # batches collated before training (the reference pass) don't count
                clock.collated_parts.clear()
                if clock.trainer is not None:  # the pre-pass has run: its forwards are not the steps'
                    clock.reference_passes_before_steps = clock.trainer.reference_forward_passes
                clock._last = time.perf_counter()

            def on_step_begin(self, args, state, control, **kwargs):
                if clock.first_step_begin is None:
                    clock.first_step_begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                now = time.perf_counter()
                clock.steps.append(now - clock._last)
                clock._last = now

        return _Callback()


class CountingCollator:
    """Wraps a collator; records prompt+chosen + prompt+rejected tokens of each batch it builds in `sink` and, in
    `parts` if given, (prompt, completion) tokens of the batch (each prompt once)."""

    def __init__(self, inner, keys: tuple[str, str, str], sink: list, parts: list | None = None):
        self.inner, self.keys, self.sink, self.parts = inner, keys, sink, parts

    def __call__(self, examples):
        p, c, r = self.keys
        self.sink.append(sum(2 * len(ex[p]) + len(ex[c]) + len(ex[r]) for ex in examples))
        if self.parts is not None:
            completions = sum(len(ex[c]) + len(ex[r]) for ex in examples)
            self.parts.append((sum(len(ex[p]) for ex in examples), completions))
        return self.inner(examples)

    def __getattr__(self, name):
        return getattr(self.inner, name)


# The reference pre-pass of each implementation, timed by `timing_reference_pass`: (module, class, method).
REFERENCE_PASS = {
    "trl": ("trl", "DPOTrainer", "_precompute_ref_logps"),
    "hf_dpo": ("hf_dpo.train.trainer", "DPOTrainer", "compute_reference_logps"),
}


@contextlib.contextmanager
def timing_reference_pass(impl: str, seconds: list[float]):
    """Appends to `seconds` the wall time of every call of `impl`'s reference pre-pass while the block runs."""
    module, name, method = REFERENCE_PASS[impl]
    owner = getattr(importlib.import_module(module), name)
    original = getattr(owner, method)

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, method, timed)
    try:
        yield
    finally:
        setattr(owner, method, original)


def pass_flops(body: int, head: int, prompt_tokens: int, completion_tokens: int) -> float:
    """FLOPs of one forward pass over the tokens as a layout computes them: 2 per weight of every linear layer of
    the decoder (`body` weights) for each token, and 2 per LM-head weight (`head`) for each completion token, the
    positions whose log-probs DPO needs. A LoRA step on a frozen base is twice this (the backward to the
    activations; LoRA's own weights are small)."""
    return 2.0 * (body * (prompt_tokens + completion_tokens) + head * completion_tokens)


def training_arguments(spec: dict, cuda: bool) -> dict:
    """The arguments both trainers take alike."""
    return dict(
        output_dir=spec["output_dir"],
        per_device_train_batch_size=spec["batch_size"],
        per_device_eval_batch_size=spec["batch_size"],
        num_train_epochs=1,
        learning_rate=5e-6,
        beta=0.1,
        max_length=spec["max_length"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec["seed"],
        bf16=cuda,  # CPU: float32, the default there (the hf_dpo_bf16 line measures bf16 autocast)
        use_cpu=not cuda,
    )


def load_model(spec: dict):
    """(tokenizer, base model, LoRA config) as the recipe's model section would give them."""
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model, load_tokenizer, lora_config

    lora = spec["lora"]
    model_cfg = ModelConfig(
        model_name_or_path=spec["model"],
        quantization=spec["quantization"],
        lora_r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        lora_target_modules=lora["target_modules"],
    )
    return load_tokenizer(model_cfg), load_base_model(model_cfg), lora_config(model_cfg)


def build_trainer(spec: dict, model, tokenizer, peft_config, callbacks, cuda: bool):
    """(trainer, its tokenized column names) for the line's implementation."""
    from datasets import Dataset

    options = dict(spec["options"])
    common = training_arguments(spec, cuda)
    if spec["impl"] == "trl":
        from trl import DPOConfig, DPOTrainer

        if options.pop(SAME_ALLOCATOR, False) and not cuda:
            return_freed_memory_to_os()
        args, keys = DPOConfig(**{**common, **options}), TRL_KEYS
    else:
        from hf_dpo.config import DPOConfig
        from hf_dpo.train.trainer import DPOTrainer

        args = DPOConfig(**{**common, "ref_logps_cache_dir": spec["cache_dir"], **options})
        keys = HF_DPO_KEYS
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(spec["rows"]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    return trainer, keys


def compute_figures(trainer, clock: StepClock, keys, impl: str, ref_pass_s: float) -> dict:
    """Achieved FLOP/s of the training steps and of the reference pre-pass (`pass_flops`), counting the tokens as
    the line's layout computes them (hf_dpo's prefix-shared rows: each prompt once), and the pass's time per pair
    over a training step's."""
    from hf_dpo.bench.generation import linear_parameters
    from hf_dpo.model.unwrap import base_model

    head_layer = base_model(trainer.model).get_output_embeddings()
    head = head_layer.in_features * head_layer.out_features
    body = linear_parameters(trainer.model) - head
    shared = impl == "hf_dpo" and trainer._prefix_sharing
    prompt_times = 1 if shared else 2
    live_reference = (
        reference_forwards_in_steps(trainer, clock) > 0
        if impl == "hf_dpo"
        else not trainer.args.precompute_ref_log_probs
    )
    per_step = 2 + (1 if live_reference else 0)  # forward + backward, and the reference's forward
    train_flops = sum(per_step * pass_flops(body, head, prompt_times * p, c) for p, c in clock.collated_parts)
    train_s = sum(clock.steps)
    data = trainer.train_dataset
    prompts = sum(len(x) for x in data[keys[0]])
    completions = sum(len(x) for x in data[keys[1]]) + sum(len(x) for x in data[keys[2]])
    figures = {
        "train_gflops_per_s": train_flops / train_s / 1e9 if train_s else None,
        "ref_pass_s": ref_pass_s,
        "ref_gflops_per_s": None,
        "ref_pass_over_step_per_pair": None,
    }
    if ref_pass_s:
        figures["ref_gflops_per_s"] = (
            pass_flops(body, head, prompt_times * prompts, completions) / ref_pass_s / 1e9
        )
    return figures


def reference_forwards_in_steps(trainer, clock: StepClock) -> int:
    """hf_dpo's reference forwards during the training steps (its counter also counts the pre-pass's batches)."""
    return trainer.reference_forward_passes - clock.reference_passes_before_steps


def summarize(
    spec: dict, trainer, clock: StepClock, keys, end_to_end_s: float, setup_s: float, ref_pass_s: float
) -> dict:
    """The line's result: end-to-end and per-step speed, the reference pre-pass, achieved FLOP/s, peak memory,
    first-step loss, token shares."""
    import torch

    logs = [h for h in trainer.state.log_history if "loss" in h]
    warm = min(spec["warmup"], max(len(clock.steps) - 1, 0))
    times = clock.steps[warm:]
    tokens = clock.collated[warm : warm + len(times)]
    data = trainer.train_dataset
    prompt, chosen, rejected = (data[k] for k in keys)
    peak = peak_memory()
    result = {
        "name": spec["name"],
        "impl": spec["impl"],
        "regime": spec["regime"],
        "data_set": spec["data_set"],
        "quantization": spec["quantization"],
        "options": spec["options"],
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "pairs": len(spec["rows"]),
        "end_to_end_s": end_to_end_s,
        "setup_s": setup_s,
        "step_s": clock.steps,
        "pairs_per_s": len(spec["rows"]) / end_to_end_s,
        "step_pairs_per_s": statistics.median(spec["batch_size"] / t for t in times),
        "step_tokens_per_s": statistics.median(n / t for n, t in zip(tokens, times)) if tokens else None,
        "peak_rss_mb": peak["peak_rss_mb"],
        "peak_cuda_mb": peak.get("peak_cuda_allocated_mb"),
        "loss_first": logs[0]["loss"],
        "logps_chosen_first": logs[0].get("logps/chosen"),
        "threads": torch.get_num_threads(),
        "bf16": bool(trainer.args.bf16),
        **compute_figures(trainer, clock, keys, spec["impl"], ref_pass_s),
        **token_shares([len(p) for p in prompt], [(len(c), len(r)) for c, r in zip(chosen, rejected)]),
    }
    if result["ref_pass_s"]:  # seconds per pair of the pass over seconds per pair of a training step
        result["ref_pass_over_step_per_pair"] = (
            result["ref_pass_s"] / len(spec["rows"]) * result["step_pairs_per_s"]
        )
    if spec["impl"] == "hf_dpo":
        result["pad_share"] = trainer.pad_share
        result["reference_forward_passes_in_training"] = reference_forwards_in_steps(trainer, clock)
        result["prefix_sharing_used"] = trainer._prefix_sharing
        # mask4d or flex after the first-batch check (a failed flex check falls back): which kernel was timed
        result["prefix_sharing_attention"] = trainer._sharing_attention
    return result


def run_line(spec: dict) -> dict:
    import torch

    torch.manual_seed(spec["seed"])
    cuda = torch.cuda.is_available()
    tokenizer, model, peft_config = load_model(spec)
    clock = StepClock()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ref_pass: list[float] = []
    started = time.perf_counter()
    with timing_reference_pass(spec["impl"], ref_pass):
        trainer, keys = build_trainer(spec, model, tokenizer, peft_config, [clock.callback()], cuda)
        if spec["impl"] == "hf_dpo":
            clock.trainer = trainer
        trainer.data_collator = CountingCollator(
            trainer.data_collator, keys, clock.collated, clock.collated_parts
        )
        trainer.train()
    end_to_end_s = time.perf_counter() - started
    setup_s = (clock.first_step_begin or time.perf_counter()) - started
    return summarize(spec, trainer, clock, keys, end_to_end_s, setup_s, sum(ref_pass))


def worker_main(spec_path: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    print("BENCH_RESULT " + json.dumps(run_line(spec)), flush=True)
    return 0
