"""hf_dpo.train.reference: full fine-tuning (the reference precomputed from the untrained model, or a frozen copy),
an explicit ref_model (LoRA and full), TR-DPO's sync_ref_model, and the errors TRL raises for these setups."""

import copy

import datasets
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from hf_dpo.train.reference import mix_into_reference, policy_weights
from hf_dpo.train.trainer import DPOTrainer
from tests.run_fixtures import dpo_args

ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "It is five, I think."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "London, probably."},
    {"prompt": "What is 3 * 3?", "chosen": "9", "rejected": "Nine hundred."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot answer that."},
]


@pytest.fixture
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def lora():
    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def perturbed(model, seed=1, scale=0.05):
    """A copy of `model` whose every weight moved a little: a reference that is not the policy's start."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return other


def full_trainer(tmp_path, model, tokenizer, rows=ROWS, **kw):
    return DPOTrainer(
        model=model,
        args=dpo_args(tmp_path, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def first_batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


# ---------------------------------------------------------------- full fine-tuning


@pytest.mark.parametrize("precompute", [True, "auto"])
def test_full_finetuning_trains_every_weight_and_holds_no_second_model(tmp_path, tiny, precompute):
    """No peft_config: every weight trains (TRL's default); the reference log-probs are those of the untrained
    model, computed once before the first step, and no copy of the model is kept."""
    base, tokenizer = tiny
    untrained = copy.deepcopy(base)
    trainer = full_trainer(
        tmp_path, base, tokenizer, precompute_ref_log_probs=precompute, learning_rate=1e-3, max_steps=8
    )
    assert trainer.ref_model is None
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert all(p.requires_grad for p in trainer.model.parameters())
    trainer.train()
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0] - 0.05, losses  # the DPO loss falls: chosen gains on rejected
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    assert margins[-1] > 0
    # the cached reference columns are the untrained model's log-probs
    expected = trainer.concatenated_forward(untrained.eval(), first_batch(trainer))
    cached = torch.tensor(trainer.train_dataset["ref_chosen_logps"])
    assert torch.allclose(cached, expected.chosen.detach(), atol=1e-4)


def test_full_finetuning_without_precompute_keeps_a_frozen_copy(tmp_path, tiny):
    base, tokenizer = tiny
    start = {n: p.detach().clone() for n, p in base.named_parameters()}
    trainer = full_trainer(
        tmp_path, base, tokenizer, precompute_ref_log_probs=False, learning_rate=1e-3, max_steps=2
    )
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    trainer.train()
    assert trainer.reference_forward_passes == 2  # one per step, from the copy
    for name, param in trainer.ref_model.named_parameters():
        assert torch.equal(param, start[name]), name  # the reference never trains
    assert not torch.equal(trainer.model.get_parameter(name), start[name])


def test_evaluating_a_new_dataset_after_training_is_refused_without_a_reference(tmp_path, tiny):
    """TRL's error: the precomputed full fine-tuning has no reference once the policy moved; a dataset given at
    construction was precomputed before the first step and still evaluates."""
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=base,
        args=dpo_args(tmp_path, precompute_ref_log_probs=True, max_steps=1),
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS[:2]),
        processing_class=tokenizer,
    )
    assert trainer.evaluate(Dataset.from_list(ROWS[2:]))["eval_loss"] is not None  # before training: fine
    trainer.train()
    assert trainer.evaluate()["eval_loss"] is not None
    with pytest.raises(ValueError, match="Cannot compute reference log-probs for a dataset passed to"):
        trainer.evaluate(Dataset.from_list(ROWS[2:]))


def test_a_quantized_model_is_not_fully_fine_tuned(tmp_path, tiny, monkeypatch):
    base, tokenizer = tiny
    monkeypatch.setattr(type(base), "is_loaded_in_4bit", True, raising=False)
    with pytest.raises(ValueError, match="4-bit or 8-bit.*peft_config"):
        full_trainer(tmp_path, base, tokenizer)


# ---------------------------------------------------------------- an explicit ref_model


@pytest.mark.parametrize("with_lora", [False, True])
def test_an_explicit_ref_model_is_the_reference(tmp_path, tiny, with_lora):
    base, tokenizer = tiny
    sft = perturbed(base)
    trainer = DPOTrainer(
        model=base,
        ref_model=sft,
        args=dpo_args(tmp_path, precompute_ref_log_probs=False),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora() if with_lora else None,
    )
    batch = first_batch(trainer)
    ref_chosen, ref_rejected = trainer.reference_logps(trainer.model, batch)
    expected = trainer.concatenated_forward(sft, batch)
    assert torch.allclose(ref_chosen, expected.chosen, atol=1e-5)
    assert torch.allclose(ref_rejected, expected.rejected, atol=1e-5)
    policy = trainer.concatenated_forward(trainer.model, batch)
    assert not torch.allclose(policy.chosen, expected.chosen, atol=1e-3)  # not the policy's own start


def test_ref_model_log_probs_are_precomputed_from_the_ref_model(tmp_path, tiny):
    base, tokenizer = tiny
    sft = perturbed(base)
    trainer = DPOTrainer(
        model=base,
        ref_model=sft,
        args=dpo_args(tmp_path, precompute_ref_log_probs=True, ref_logps_cache_dir="none", max_steps=1),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(),
    )
    trainer.train()
    expected = trainer.concatenated_forward(sft, first_batch(trainer))
    assert torch.allclose(torch.tensor(trainer.train_dataset["ref_chosen_logps"]), expected.chosen, atol=1e-4)


def test_model_and_ref_model_must_differ(tmp_path, tiny):
    base, tokenizer = tiny
    with pytest.raises(ValueError, match="cannot be the same object"):
        DPOTrainer(model=base, ref_model=base, args=dpo_args(tmp_path), train_dataset=Dataset.from_list(ROWS))


# ---------------------------------------------------------------- TR-DPO (sync_ref_model)


class Snapshots(TrainerCallback):
    """At each step's end (before the sync callback, which runs after user callbacks): policy and reference."""

    def __init__(self):
        self.policy, self.reference = {}, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        trainer = self.trainer
        self.policy[state.global_step] = {n: p.detach().clone() for n, p in policy_weights(trainer.model)}
        self.reference[state.global_step] = {
            n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()
        }


@pytest.mark.parametrize("with_lora", [False, True])
def test_sync_ref_model_mixes_by_alpha_every_sync_steps(tmp_path, tiny, with_lora):
    """ref_model_sync_steps=2, α=0.25: the reference is untouched by step 1, and after step 2 it is
    0.25·policy(step 2) + 0.75·reference (TRL's meaning). LoRA mixes its merged weights into a given ref_model."""
    base, tokenizer = tiny
    snapshots = Snapshots()
    trainer = DPOTrainer(
        model=base,
        ref_model=perturbed(base) if with_lora else None,
        args=dpo_args(
            tmp_path,
            sync_ref_model=True,
            ref_model_sync_steps=2,
            ref_model_mixup_alpha=0.25,
            precompute_ref_log_probs="auto",  # off with sync_ref_model: the reference moves
            learning_rate=1e-2,
            max_steps=3,
        ),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora() if with_lora else None,
        callbacks=[snapshots],
    )
    snapshots.trainer = trainer
    start = {n: p.detach().clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    assert trainer.reference_forward_passes == 3  # computed at each step: never from a stale cache
    for name, value in start.items():
        assert torch.equal(snapshots.reference[1][name], value), name  # step 1: no sync
        mixed = 0.25 * snapshots.policy[2][name] + 0.75 * snapshots.reference[2][name]
        assert torch.allclose(snapshots.reference[3][name], mixed, atol=1e-6), name  # synced after step 2
        assert torch.equal(trainer.ref_model.get_parameter(name), snapshots.reference[3][name])
    assert any(not torch.equal(snapshots.reference[3][n], start[n]) for n in start)


def test_lora_merged_weights_are_base_plus_adapter(tiny):
    from peft import get_peft_model

    base, _ = tiny
    model = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    weights = dict(policy_weights(model))
    merged = copy.deepcopy(model).merge_and_unload()
    assert weights.keys() == dict(merged.named_parameters()).keys()
    for name, param in merged.named_parameters():
        assert torch.allclose(weights[name], param, atol=1e-6), name
    reference = copy.deepcopy(base)
    mix_into_reference(model, reference, alpha=1.0)  # the reference becomes the merged policy
    for name, param in merged.named_parameters():
        assert torch.allclose(reference.get_parameter(name), param, atol=1e-6), name


def test_sync_ref_model_errors_as_trl(tmp_path, tiny):
    base, tokenizer = tiny
    data = Dataset.from_list(ROWS)
    with pytest.raises(NotImplementedError, match="sync_ref_model=True.*no `ref_model`"):
        DPOTrainer(
            model=copy.deepcopy(base),
            args=dpo_args(tmp_path, sync_ref_model=True),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora(),
        )
    with pytest.raises(ValueError, match="sync_ref_model=True` together with `precompute_ref_log_probs=True"):
        full_trainer(
            tmp_path, copy.deepcopy(base), tokenizer, sync_ref_model=True, precompute_ref_log_probs=True
        )


# ---------------------------------------------------------------- TRL's surface


def test_train_dataset_is_required(tmp_path, tiny):
    base, tokenizer = tiny
    with pytest.raises(ValueError, match="`train_dataset` is required"):
        DPOTrainer(model=base, args=dpo_args(tmp_path), processing_class=tokenizer)


@pytest.mark.parametrize("where", ["train", "eval", "eval_dict"])
def test_precompute_true_refuses_a_streaming_dataset(tmp_path, where, no_model):
    """TRL's error, before any model loads (the model is given by name: loading it would fail the test)."""
    streaming = Dataset.from_list(ROWS).to_iterable_dataset()
    train = streaming if where == "train" else Dataset.from_list(ROWS)
    evaluation = {"eval": streaming} if where == "eval_dict" else streaming if where == "eval" else None
    with pytest.raises(ValueError, match="precompute_ref_log_probs.*not supported with IterableDataset"):
        DPOTrainer(
            model="some/model",
            args=dpo_args(tmp_path, precompute_ref_log_probs=True, max_steps=1),
            train_dataset=train,
            eval_dataset=evaluation,
        )


def test_streaming_data_trains_with_auto_precompute(tmp_path, tiny):
    base, tokenizer = tiny
    trainer = full_trainer(tmp_path, base, tokenizer, max_steps=1)
    streamed = DPOTrainer(
        model=copy.deepcopy(base),
        args=dpo_args(tmp_path, max_steps=1),
        train_dataset=Dataset.from_list(ROWS).to_iterable_dataset(),
        processing_class=tokenizer,
    )
    assert streamed.ref_model is not None  # streaming training data: a frozen copy, not a precompute
    assert streamed.train_dataset["prompt_ids"] == trainer.train_dataset["prompt_ids"]
    streamed.train()


def test_tokenized_columns_carry_trl_names_too(tmp_path, tiny):
    base, tokenizer = tiny
    trainer = full_trainer(tmp_path, base, tokenizer)
    row = trainer.train_dataset[0]
    for ours, trl in (("prompt_input_ids", "prompt_ids"), ("chosen_input_ids", "chosen_ids")):
        assert row[ours] == row[trl] and row[trl]
    assert row["prompt_ids"] == tokenizer(ROWS[0]["prompt"])["input_ids"]  # TRL: a plain prompt as it is
    # a dataset tokenized the TRL way (TRL's column names) is taken as it is
    pretokenized = Dataset.from_dict(
        {name: trainer.train_dataset[name] for name in ("prompt_ids", "chosen_ids", "rejected_ids")}
    )
    again = DPOTrainer(
        model=copy.deepcopy(base),
        args=dpo_args(tmp_path),
        train_dataset=pretokenized,
        processing_class=tokenizer,
    )
    assert again.train_dataset["chosen_input_ids"] == trainer.train_dataset["chosen_input_ids"]


def test_model_tags_and_aux_loss_flag(tmp_path, tiny):
    base, tokenizer = tiny
    for peft_config in (None, lora()):
        trainer = DPOTrainer(
            model=copy.deepcopy(base),
            args=dpo_args(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        assert {"trl", "dpo", "hf-dpo"} <= set(trainer.model.model_tags)
        assert trainer.aux_loss_enabled is False  # a dense model: no router loss


def test_row_chat_template_kwargs_reach_the_template(tmp_path, tiny):
    """TRL's per-row `chat_template_kwargs` column is passed to the chat template of that row."""
    base, tokenizer = tiny
    tokenizer.chat_template = (
        "{% for m in messages %}{{ (m.role | upper if shout else m.role) + ': ' + m.content + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT: ' if shout else 'assistant: ' }}{% endif %}"
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "chat_template_kwargs": {"shout": i % 2 == 1},
        }
        for i, r in enumerate(ROWS[:2])
    ]
    trainer = full_trainer(tmp_path, base, tokenizer, rows=rows)
    prompts = [tokenizer.decode(ids) for ids in trainer.train_dataset["prompt_ids"]]
    assert prompts[0].startswith("user: ") and prompts[1].startswith("USER: "), prompts
    assert isinstance(trainer.train_dataset, datasets.Dataset)


def test_a_peft_model_with_a_trained_adapter_is_its_own_reference(tmp_path, tiny):
    """TRL's meaning for a PeftModel passed with a pretrained adapter: the reference is that adapter as it starts
    (a frozen copy), not the base; a fresh adapter (lora_B zero) needs no copy: adapters off are the same."""
    from peft import get_peft_model

    base, tokenizer = tiny
    random_adapter = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), random_adapter)
    trainer = DPOTrainer(
        model=model,
        args=dpo_args(tmp_path, precompute_ref_log_probs=False, learning_rate=1e-2, max_steps=2),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    assert "reference" in trainer.model.peft_config
    batch = first_batch(trainer)
    start = trainer.concatenated_forward(trainer.model, batch)
    trainer.train()
    ref_chosen, _ = trainer.reference_logps(trainer.model, batch)
    assert torch.allclose(ref_chosen, start.chosen, atol=1e-5)  # the adapter as it started
    assert not torch.allclose(ref_chosen, trainer.concatenated_forward(base, batch).chosen, atol=1e-3)

    fresh = get_peft_model(copy.deepcopy(base), lora())
    trainer = DPOTrainer(
        model=fresh,
        args=dpo_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    assert "reference" not in trainer.model.peft_config
