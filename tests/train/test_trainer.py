"""hf_dpo.train.trainer: metrics, the adapters-off reference, resuming (parity with TRL: test_trl_parity.py)."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from hf_dpo.train.batching import PreferenceCollator
from hf_dpo.train.trainer import DPOTrainer
from tests.run_fixtures import dpo_args
from tests.train.test_trl_parity import METRICS as TRL_METRICS  # TRL's per-step metric names, also hf_dpo's

ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "It is five, I think."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "London, probably."},
    {"prompt": "What is 3 * 3?", "chosen": "9", "rejected": "Nine hundred."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot answer that."},
]


def lora(init=True, dropout=0.0):
    return LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=dropout,
        target_modules="all-linear",
        init_lora_weights=init,
        task_type="CAUSAL_LM",
    )


@pytest.fixture
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_reference_is_the_model_with_adapters_off(tmp_path, tiny):
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=copy.deepcopy(base),
        args=dpo_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(init=False),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, _ = trainer.reference_logps(trainer.model, batch)
    plain = copy.deepcopy(base)
    expected = trainer.concatenated_forward(plain, batch).chosen
    assert torch.allclose(ref_chosen, expected, atol=1e-5)
    policy = trainer.concatenated_forward(trainer.model, batch).chosen
    assert not torch.allclose(policy, expected, atol=1e-3)  # adapters on: a different policy
    assert trainer.reference_forward_passes == 1
    assert sum(p.numel() for p in trainer.model.parameters()) < 1.1 * sum(
        p.numel() for p in base.parameters()
    )


def test_training_logs_train_and_eval_metrics(tmp_path, tiny):
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, max_steps=3, learning_rate=1e-2, eval_strategy="steps", eval_steps=3),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS[:2]),
        processing_class=tokenizer,
        peft_config=lora(),
    )
    trainer.train()
    history = trainer.state.log_history
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    assert len(train_logs) == 3 and len(eval_logs) == 1
    for key in TRL_METRICS:
        assert key in train_logs[0]
        assert f"eval_{key}" in eval_logs[0]
    assert train_logs[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # step 1: policy == reference
    assert eval_logs[0]["eval_rewards/margins"] > 0  # 3 steps at a high lr already separate the pairs
    assert eval_logs[0]["eval_loss"] < 0.6931


def test_logged_reward_accuracy_counts_rounding_noise_as_a_tie(tmp_path, tiny, monkeypatch):
    """learning_rate 0 keeps the policy equal to its reference; a reference one float32 step below the policy's
    log-prob (what a second pass in another batch shape gives) leaves margins of ~1e-7: no pair is ranked."""
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, max_steps=2, learning_rate=0.0, logging_steps=1),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(),
    )
    exact = trainer.reference_logps

    def reference_one_step_below(model, batch):
        chosen, rejected = exact(model, batch)
        return torch.nextafter(chosen, torch.full_like(chosen, -torch.inf)), rejected

    monkeypatch.setattr(trainer, "reference_logps", reference_one_step_below)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert 0 < h["rewards/margins"] < 1e-5 and h["rewards/accuracies"] == 0.0


def test_precomputed_reference_equals_live_reference(tmp_path, tiny):
    base, tokenizer = tiny
    losses = {}
    for precompute in (False, True):
        trainer = DPOTrainer(
            model=copy.deepcopy(base),
            args=dpo_args(
                tmp_path, max_steps=2, learning_rate=1e-2, precompute_ref_log_probs=precompute, seed=3
            ),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            peft_config=lora(),
        )
        trainer.train()
        losses[precompute] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if precompute:
            assert "ref_chosen_logps" in trainer.train_dataset.column_names
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_reference_pass_on_a_4bit_base_dequantizes_once_and_gives_the_per_forward_values(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The one-off reference pass on a 4-bit base runs with the weights dequantized once (`decoding_weights`):
    the same log-probs as dequantizing at every forward, the 4-bit layers back in place afterwards; and nothing
    is swapped when the float weights would not fit."""
    import bitsandbytes as bnb

    from hf_dpo.config import ModelConfig
    from hf_dpo.model import reference
    from hf_dpo.model.loading import load_base_model, load_tokenizer

    cfg = ModelConfig(model_name_or_path=tiny_model_dir, quantization="4bit")
    trainer = DPOTrainer(
        model=load_base_model(cfg),
        args=dpo_args(tmp_path, precompute_ref_log_probs=False, per_device_eval_batch_size=2),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=load_tokenizer(cfg),
        peft_config=lora(init=False),
    )
    forward, seen = trainer.concatenated_forward, []

    def has_4bit_layers(model) -> bool:
        return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    def recording(model, *args, **kwargs):  # whether each forward of the pass ran through 4-bit layers
        seen.append(has_4bit_layers(model))
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "concatenated_forward", recording)
    once = trainer.compute_reference_logps(trainer.train_dataset)
    assert seen and not any(seen)  # every forward of the pass ran on dequantized layers
    assert has_4bit_layers(trainer.model)  # put back
    seen.clear()
    monkeypatch.setattr(reference, "free_memory_bytes", lambda device: 1000)  # the float weights do not fit
    per_forward = trainer.compute_reference_logps(trainer.train_dataset)
    assert seen and all(seen)
    assert once == per_forward


def test_training_on_a_4bit_base_dequantizes_once_and_takes_the_per_forward_steps(
    tmp_path, tiny_model_dir, monkeypatch, caplog
):
    """On CPU, `train()` dequantizes the 4-bit layers once for the whole run (the reference pass and every step):
    the same losses and adapter as dequantizing at every forward and again in every backward, where the float
    weights fit; the 4-bit layers are back after training; where they would not fit nothing is swapped (logged
    both ways). 4 steps at a learning rate that moves the adapter, so the gradients through the layers count."""
    import bitsandbytes as bnb

    from hf_dpo.config import ModelConfig
    from hf_dpo.model import reference
    from hf_dpo.model.loading import load_base_model, load_tokenizer

    cfg = ModelConfig(model_name_or_path=tiny_model_dir, quantization="4bit")

    def has_4bit_layers(model) -> bool:
        return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

    def train(fits: bool):
        if not fits:
            monkeypatch.setattr(reference, "free_memory_bytes", lambda device: 1000)
        trainer = DPOTrainer(
            model=load_base_model(cfg),
            args=dpo_args(tmp_path / str(fits), max_steps=4, learning_rate=5e-2, seed=1),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=load_tokenizer(cfg),
            peft_config=lora(),
        )
        forward, seen = trainer.concatenated_forward, []

        def recording(model, *args, **kwargs):  # each forward (pass and steps): through 4-bit layers?
            seen.append(has_4bit_layers(model))
            return forward(model, *args, **kwargs)

        monkeypatch.setattr(trainer, "concatenated_forward", recording)
        with caplog.at_level("INFO", logger="hf_dpo.train.trainer"):
            trainer.train()
        assert len(seen) > 4 and set(seen) == {not fits}
        assert has_4bit_layers(trainer.model)  # put back after training
        adapter = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return losses, adapter

    (dense_losses, dense_adapter), log = train(fits=True), caplog.text
    assert "Training: 4-bit weights dequantized once for training" in log
    caplog.clear()
    per_forward_losses, per_forward_adapter = train(fits=False)
    assert "Training: 4-bit weights dequantized at every forward" in caplog.text
    assert len(dense_losses) == 4 and dense_losses == pytest.approx(per_forward_losses, abs=1e-6)
    assert any(v.abs().max() > 1e-3 for v in dense_adapter.values())  # the steps moved the adapter
    for name, value in dense_adapter.items():
        torch.testing.assert_close(value, per_forward_adapter[name], atol=1e-6, rtol=1e-5)


def test_reference_pass_goes_shortest_first_in_large_batches_and_gives_each_pair_its_own_values(
    tmp_path, tiny, monkeypatch
):
    """The reference pass with every fast path on (prefix sharing, chunked head, precompute_ref_batch_size unset):
    pairs of very different lengths in a shuffled order come out in the dataset's order with the log-probs the
    plain layout gives each pair alone (float32 parity), from batches larger than the eval batch of 2, with the
    adapters switched off once for the whole pass; the first batch's layout check costs one plain forward of one
    pair (its shortest), its shared forward being the batch's own."""
    from hf_dpo.model.unwrap import base_model
    from hf_dpo.train import trainer as trainer_module

    base, tokenizer = tiny
    rows = [  # 4 lengths, shuffled
        {
            "prompt": "Count: " + "one two " * (i % 4 + 1),
            "chosen": "three " * (i % 4 + 1),
            "rejected": "four five six " * (i % 4 + 1),
        }
        for i in (5, 2, 7, 0, 9, 3, 11, 4, 1, 10, 6, 8)
    ]
    trainer = DPOTrainer(
        model=copy.deepcopy(base),
        args=dpo_args(
            tmp_path,
            precompute_ref_log_probs=False,
            prefix_sharing=True,
            logps_chunk_size=16,
            per_device_train_batch_size=2,
            per_device_eval_batch_size=2,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora(init=False),  # adapters that change the model: switching them off matters
    )
    toggles, context = [], trainer_module.reference_context

    def counted(model):
        toggles.append(1)
        return context(model)

    monkeypatch.setattr(trainer_module, "reference_context", counted)
    forwards = []  # (rows, tokens) of every forward of the model
    record = base_model(trainer.model).register_forward_pre_hook(
        lambda module, args, kwargs: forwards.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    chosen, rejected = trainer.compute_reference_logps(trainer.train_dataset)
    record.remove()
    assert len(toggles) == 1
    assert trainer.reference_forward_passes < len(rows) // 2  # fewer batches than the eval batch of 2 makes
    assert (
        len(forwards) == trainer.reference_forward_passes + 1
    )  # each batch once, and the check's plain forward
    # the first batch (one shared row per pair), then the check's plain forward: its shortest pair, 2 rows
    assert forwards[0][0] > 1 and forwards[1][0] == 2
    plain = copy.deepcopy(base)
    collator = PreferenceCollator(pad_token_id=tokenizer.pad_token_id)
    for i in range(len(rows)):
        alone = trainer.concatenated_forward(plain, collator([trainer.train_dataset[i]]))
        # the parity tolerance: 1e-5, relative once a value exceeds 1 (float32 sums of ~100 tokens)
        assert chosen[i] == pytest.approx(alone.chosen.item(), rel=1e-5, abs=1e-5), i
        assert rejected[i] == pytest.approx(alone.rejected.item(), rel=1e-5, abs=1e-5), i
    assert trainer._prefix_sharing  # the pass ran (and checked) the shared layout


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(tmp_path, tiny):
    base, tokenizer = tiny
    data = Dataset.from_list(ROWS * 3)

    def make(out, callbacks=None):
        return DPOTrainer(
            model=copy.deepcopy(base),
            args=dpo_args(
                tmp_path,
                output_dir=str(out),
                max_steps=6,
                save_strategy="steps",
                save_steps=3,
                learning_rate=5e-3,
                seed=7,
            ),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora(dropout=0.1),
            callbacks=callbacks,
        )

    straight = make(tmp_path / "straight")
    straight.train()
    straight.save_model()

    interrupted = make(tmp_path / "resumed", callbacks=[StopAt(3)])
    interrupted.train()
    assert interrupted.state.global_step == 3
    resumed = make(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    resumed.save_model()

    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the adapter actually trained


def test_token_never_lands_in_saved_training_args(tmp_path, tiny):
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, hub_token="hf_supersecret_token"),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(),
    )
    trainer.save_model()
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert b"hf_supersecret_token" not in path.read_bytes(), path
    assert trainer.args.hub_token == "hf_supersecret_token"


def test_pair_logps_shortcut_before_training_equals_the_full_pass(tmp_path, tiny):
    """Before the first step the policy is the reference: the cached reference values stand for both."""
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, precompute_ref_log_probs=True),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(),
    )
    full = trainer.pair_logps()
    passes = trainer.reference_forward_passes
    quick = trainer.pair_logps(policy_is_reference=True)
    assert trainer.reference_forward_passes == passes  # nothing recomputed
    for key in full:
        assert torch.allclose(full[key].float(), quick[key].float(), atol=1e-4), key


def test_trl_switches_without_a_loss_of_their_own(tmp_path, tiny, caplog):
    """activation_offloading trains (activations saved in CPU memory), pad_to_multiple_of pads the rows,
    padding_free packs each batch into one row (logged), pad_token sets the tokenizer's."""
    import logging

    base, tokenizer = tiny
    args = dpo_args(
        tmp_path,
        max_steps=1,
        activation_offloading=True,
        pad_to_multiple_of=16,
        padding_free=True,
        pad_token=tokenizer.eos_token,
        precompute_ref_batch_size=3,
        precompute_ref_log_probs=True,
    )
    with caplog.at_level(logging.INFO):
        trainer = DPOTrainer(
            model=base,
            args=args,
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            peft_config=lora(),
        )
    assert "padding_free" in caplog.text
    assert trainer.processing_class.pad_token == tokenizer.eos_token
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "sequence_ids" in batch  # packed: no padding to round up
    examples = [trainer.train_dataset[i] for i in range(2)]
    padded = dataclasses.replace(trainer.data_collator, padding_free=False, prefix_sharing=False)(examples)
    assert padded["input_ids"].shape[1] % 16 == 0
    assert trainer.train().global_step == 1


def test_a_model_name_loads_with_model_init_kwargs(tmp_path, tiny_model_dir):
    trainer = DPOTrainer(
        model=tiny_model_dir,
        args=dpo_args(tmp_path, model_init_kwargs={"dtype": "bfloat16"}),
        train_dataset=Dataset.from_list(ROWS),
        peft_config=lora(),
    )
    assert trainer.model.get_base_model().dtype == torch.bfloat16
    assert trainer.processing_class.pad_token is not None


def test_compute_metrics_gets_each_pairs_rewards(tmp_path, tiny):
    """compute_metrics (a TRL script's) is called on evaluation with the pairs' implicit rewards (N, 2: chosen,
    rejected) and label 0: its reward accuracy equals the logged rewards/accuracies."""
    base, tokenizer = tiny
    seen = {}

    def accuracy(eval_pred):
        seen["shape"], seen["labels"] = eval_pred.predictions.shape, eval_pred.label_ids.tolist()
        return {"pair_accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}

    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, per_device_eval_batch_size=4),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(init=False),  # a random adapter: rewards are not all zero
        compute_metrics=accuracy,
    )
    metrics = trainer.evaluate()
    assert seen == {"shape": (4, 2), "labels": [0, 0, 0, 0]}
    assert metrics["eval_pair_accuracy"] == pytest.approx(metrics["eval_rewards/accuracies"])
    assert 0 < metrics["eval_pair_accuracy"] < 1  # the random adapter prefers some chosen, not all


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_untrained_adapter_ranks_no_pair_in_float32_or_bfloat16(tmp_path, smollm_dir, dtype):
    """An untrained LoRA (B = 0) is its reference. The reference, precomputed in batches of 16, and the policy, in
    batches of 3, pad each pair differently: in float32 their log-probs agree to far below a nat, in bfloat16 they
    round apart by up to ~0.6 nats a pair on these 24 demo pairs, under the bfloat16 tolerance
    (`hf_dpo.train.loss.logps_rounding`) and far over float32's. The tolerance of the forward's dtype makes every
    pair a tie, reward accuracy 0, in both dtypes."""
    from hf_dpo.report.estimates import preference_metrics, rounding_of
    from hf_dpo.train.loss import LOGPS_ROUNDING, logps_rounding

    rows = [json.loads(line) for line in Path("recipes/data/demo/train.jsonl").read_text().splitlines()[:24]]
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(smollm_dir, torch_dtype=dtype),
        args=dpo_args(
            tmp_path,
            precompute_ref_log_probs=True,
            precompute_ref_batch_size=16,
            per_device_eval_batch_size=3,
            max_length=128,
        ),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(smollm_dir),
        peft_config=lora(),
    )
    logps = trainer.pair_logps()
    assert trainer.logps_rounding == logps_rounding(dtype) == rounding_of(logps)
    pc, pr, rc, rr = (
        logps[k]
        for k in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
    )

    def accuracy(rounding):
        return preference_metrics(pc, pr, rc, rr, beta=0.1, rounding=rounding)["reward_accuracy"].value

    margins = (pc - rc) - (pr - rr)  # (24,) policy == reference up to rounding
    assert accuracy(rounding_of(logps)) == 0.0
    if dtype == torch.float32:
        assert margins.abs().max() < 1e-3 and accuracy(LOGPS_ROUNDING) == 0.0
    else:  # the noise is there, nats above float32's tolerance, and the bfloat16 one still ties every pair
        assert 0 < margins.abs().max() < 2.0
