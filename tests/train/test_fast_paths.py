"""hf_dpo's fast paths change no result: prefix sharing, chunked log-probs, cached reference log-probs,
length-grouped batches. Each is compared with the plain path on the tiny Llama, in float32."""

import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from hf_dpo.train import batching
from hf_dpo.train.batching import (
    LengthGroupedPairSampler,
    PreferenceCollator,
    label_targets,
    pad_share,
    shared_attention_mask,
)
from hf_dpo.train.trainer import DPOTrainer
from tests.fast_path_fixtures import PLAIN, ROWS, args, assert_same, lora, loss_and_grads, make_trainer

# ---------------------------------------------------------------- prefix sharing


def test_shared_layout_mask_positions_and_targets():
    """[prompt P=2, chosen C=2, rejected R=3]: positions restart at P; rejected never sees chosen; the first
    rejected token is predicted from the last prompt position (1), not from the last chosen one (3)."""
    collator = PreferenceCollator(pad_token_id=0, prefix_sharing=True)
    batch = collator(
        [
            {"prompt_input_ids": [5, 6], "chosen_input_ids": [7, 8], "rejected_input_ids": [9, 10, 11]},
            {"prompt_input_ids": [5], "chosen_input_ids": [7], "rejected_input_ids": [9]},
            {"prompt_input_ids": [], "chosen_input_ids": [7], "rejected_input_ids": [9, 10]},
        ]
    )
    assert batch["input_ids"][0].tolist() == [5, 6, 7, 8, 9, 10, 11]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 2, 3, 4]
    assert batch["segment_ids"][1].tolist() == [0, 1, 2, -1, -1, -1, -1]
    allowed = shared_attention_mask(batch["segment_ids"], torch.float32)[0, 0] == 0  # (T, T)
    yes, no = True, False
    assert allowed[4].tolist() == [yes, yes, no, no, yes, no, no]  # first rejected: prompt + itself
    assert allowed[3].tolist() == [yes, yes, yes, yes, no, no, no]  # last chosen: causal
    targets = label_targets(batch)
    columns = (targets.rows, targets.sources, targets.labels, targets.sequences)
    found = list(zip(*(t.tolist() for t in columns)))  # (row, source, label, sequence)
    assert found[:5] == [(0, 1, 7, 0), (0, 2, 8, 0), (0, 1, 9, 3), (0, 4, 10, 3), (0, 5, 11, 3)]
    assert found[5:7] == [(1, 0, 7, 1), (1, 0, 9, 4)]
    # Empty prompt: nothing predicts the first chosen or the first rejected token (the plain path drops them too).
    assert found[7:] == [(2, 1, 10, 5)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_sharing_equals_the_plain_path(tmp_path, tiny_model_dir, tokenizer, attn):
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, attn=attn, **PLAIN))
    shared_trainer = make_trainer(
        tmp_path, tiny_model_dir, tokenizer, attn=attn, prefix_sharing=True, logps_chunk_size=0
    )
    shared = loss_and_grads(shared_trainer)
    assert shared_trainer._prefix_sharing  # it really ran shared
    assert_same(shared, plain)


def test_prefix_sharing_falls_back_when_the_mask_is_ignored(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog
):
    """A model that ignores the 4D mask (simulated: a mask that hides nothing) gives different log-probs on the
    first batch; the trainer notices, says so, and computes the plain layout from then on."""
    monkeypatch.setattr(
        "hf_dpo.train.logps.shared_attention_mask",
        lambda seg, dtype: torch.zeros(seg.shape[0], 1, seg.shape[1], seg.shape[1], dtype=dtype),
    )
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=True, logps_chunk_size=0)
    with caplog.at_level(logging.WARNING, logger="hf_dpo.train.trainer"):
        fallback = loss_and_grads(trainer)
    assert not trainer._prefix_sharing and not trainer.data_collator.prefix_sharing
    assert "Prefix sharing off" in caplog.text and "log-probs differ from the plain layout" in caplog.text
    assert_same(fallback, plain)


@pytest.mark.parametrize("mask", ["ignored", "rejected"])
def test_a_reference_pass_falls_back_when_its_first_batch_fails_the_layout_check(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog, mask
):
    """The reference pass checks the layout on its first batch's own log-probs: a model that ignores the 4D mask
    (or a forward that rejects it) turns prefix sharing off there, and that batch and the rest come out as the
    plain layout gives them."""
    expected = make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN)
    expected = expected.compute_reference_logps(expected.train_dataset)
    wrong = torch.zeros if mask == "ignored" else (lambda *shape, dtype: torch.zeros(1, 2, 3, dtype=dtype))
    monkeypatch.setattr(
        "hf_dpo.train.logps.shared_attention_mask",
        lambda seg, dtype: wrong(seg.shape[0], 1, seg.shape[1], seg.shape[1], dtype=dtype),
    )
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=True, logps_chunk_size=0)
    with caplog.at_level(logging.WARNING, logger="hf_dpo.train.trainer"):
        chosen, rejected = trainer.compute_reference_logps(trainer.train_dataset)
    assert not trainer._prefix_sharing and not trainer.data_collator.prefix_sharing
    assert "Prefix sharing off" in caplog.text
    assert chosen == pytest.approx(expected[0], abs=1e-5) and rejected == pytest.approx(expected[1], abs=1e-5)


def test_the_one_pair_layout_check_catches_a_rejected_branch_that_does_not_restart_its_positions(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog
):
    """The check runs on one pair of the first batch, its shortest: a layout whose rejected branch goes on counting
    positions after the chosen answer (the mask right, the rotary positions wrong) fails it there, and the pass
    comes out as the plain layout gives it. The random tiny model attends almost uniformly, blind to positions, so
    its queries and keys are scaled up until attention depends on them."""

    def position_sensitive(trainer):
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if name.endswith(("q_proj.base_layer.weight", "k_proj.base_layer.weight")):
                    param.mul_(30)
        return trainer

    expected = position_sensitive(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    expected = expected.compute_reference_logps(expected.train_dataset)
    collate = batching.PreferenceCollator.__call__

    def positions_run_on(self, examples):
        batch = collate(self, examples)
        if "segment_ids" in batch:  # shared rows: 0..T-1, as if chosen and rejected were one answer
            batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
        return batch

    monkeypatch.setattr(batching.PreferenceCollator, "__call__", positions_run_on)
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=True, logps_chunk_size=0)
    with caplog.at_level(logging.WARNING, logger="hf_dpo.train.trainer"):
        chosen, rejected = position_sensitive(trainer).compute_reference_logps(trainer.train_dataset)
    assert not trainer._prefix_sharing
    assert "Prefix sharing off (rejected log-probs differ from the plain layout" in caplog.text
    assert chosen == pytest.approx(expected[0], abs=1e-5) and rejected == pytest.approx(expected[1], abs=1e-5)


def test_prefix_sharing_falls_back_when_the_forward_rejects_the_mask(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog
):
    monkeypatch.setattr(
        "hf_dpo.train.logps.shared_attention_mask", lambda seg, dtype: torch.zeros(1, 2, 3, dtype=dtype)
    )
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=True, logps_chunk_size=0)
    with caplog.at_level(logging.WARNING, logger="hf_dpo.train.trainer"):
        loss_and_grads(trainer)
    assert not trainer._prefix_sharing and "forward pass with a 4D mask failed" in caplog.text


def test_prefix_sharing_is_off_for_flash_attention(tmp_path, tiny_model_dir, tokenizer, caplog):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config._attn_implementation = "flash_attention_2"  # only inspected, never run here
    with caplog.at_level(logging.WARNING, logger="hf_dpo.train.trainer"):
        trainer = DPOTrainer(
            model=model,
            args=args(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            peft_config=lora(),
        )
    assert not trainer._prefix_sharing and not trainer.data_collator.prefix_sharing
    assert "flash_attention_2" in caplog.text


# ---------------------------------------------------------------- chunked log-probs


@pytest.mark.parametrize("sharing", [False, True])
def test_chunked_logps_equal_full_logits(tmp_path, tiny_model_dir, tokenizer, sharing):
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    chunked = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=sharing, logps_chunk_size=7)
    assert chunked._chunk_size == 7
    assert_same(loss_and_grads(chunked), plain)


def test_the_chunked_path_projects_no_position_through_the_models_own_head(
    tmp_path, tiny_model_dir, tokenizer
):
    """The chunked path takes the decoder's hidden states and runs the LM head itself, on completion positions: the
    model's forward projects none (one position a row would read the whole vocabulary-sized weight for nothing)."""
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, prefix_sharing=True, logps_chunk_size=7)
    head = trainer.model.get_output_embeddings()
    positions = []  # tokens each call of the model's head got
    hook = head.register_forward_pre_hook(lambda module, args: positions.append(args[0].shape[:-1].numel()))
    loss_and_grads(trainer)
    hook.remove()
    # the layout check's two forwards, the step's policy and reference passes, the no-grad pass of loss_and_grads
    assert positions == [0] * 5


def test_rpo_term_is_the_same_on_every_path(tmp_path, tiny_model_dir, tokenizer):
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, rpo_alpha=0.5, **PLAIN))
    fast = make_trainer(tmp_path, tiny_model_dir, tokenizer, rpo_alpha=0.5, logps_chunk_size=5)
    assert_same(loss_and_grads(fast), plain)


def test_4bit_base_all_paths_equal(tmp_path, tiny_model_dir, tokenizer):
    """QLoRA: the same NF4 base (bitsandbytes on CPU) gives the same loss and gradients on every path."""
    pytest.importorskip("bitsandbytes")
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model

    def trainer(**kw):
        torch.manual_seed(0)
        model = load_base_model(ModelConfig(model_name_or_path=tiny_model_dir, quantization="4bit"))
        return DPOTrainer(
            model=model,
            args=args(tmp_path, **kw),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
            peft_config=lora(),
        )

    plain = loss_and_grads(trainer(**PLAIN))
    fast = trainer(prefix_sharing=True, logps_chunk_size=16)
    assert_same(loss_and_grads(fast), plain)
    assert fast._prefix_sharing and fast._chunk_size == 16
    # bitsandbytes repacks 4-bit weights for CPU inference on the first eval-mode forward, and the repacked kernel
    # has no backward; after an evaluation (which the sharing check above also is), gradients must not change.
    fast.pair_logps(fast.train_dataset)
    assert_same(loss_and_grads(fast), plain)


FULL_FINETUNING_PATHS = {
    "prefix_sharing": dict(prefix_sharing=True, logps_chunk_size=0),
    "chunked": dict(prefix_sharing=False, logps_chunk_size=7),
    "sharing+chunked": dict(prefix_sharing=True, logps_chunk_size=7),
    "padding_free": dict(padding_free=True, prefix_sharing=False, logps_chunk_size=0),
}


@pytest.mark.parametrize("path", list(FULL_FINETUNING_PATHS))
def test_full_finetuning_fast_paths_equal_the_plain_path(tmp_path, tiny_model_dir, tokenizer, path):
    """No adapter: every weight's gradient, and the reference from the frozen copy, agree with the plain path."""
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, full=True, **PLAIN))
    fast_trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, full=True, **FULL_FINETUNING_PATHS[path])
    fast = loss_and_grads(fast_trainer)
    assert fast_trainer.ref_model is not None and fast_trainer.reference_forward_passes == 1
    assert (fast_trainer._prefix_sharing, fast_trainer._chunk_size > 0, fast_trainer._packed) == (
        "sharing" in path,
        "chunked" in path,
        path == "padding_free",
    )
    assert len(fast[2]) == len(list(fast_trainer.model.parameters()))  # every weight has a gradient
    assert_same(fast, plain)


def test_full_finetuning_reference_cache_equals_the_frozen_copy(tmp_path, tiny_model_dir, tokenizer):
    """Full fine-tuning with precompute: the untrained model's log-probs, computed once before the first step (no
    copy held) and read from disk by the next run, are those the frozen copy gives at each step."""
    options = dict(
        max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2, full=True, precompute_ref_batch_size=4
    )
    options["ref_logps_cache_dir"] = str(tmp_path / "cache")
    live, live_losses = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=False, **options)
    first, first_losses = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=True, **options)
    second, second_losses = run(
        tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs="auto", **options
    )
    assert live.ref_model is not None and first.ref_model is None and second.ref_model is None
    assert (
        live.reference_forward_passes,
        first.reference_forward_passes,
        second.reference_forward_passes,
    ) == (
        2,
        1,
        0,
    )
    assert first_losses == pytest.approx(live_losses, abs=1e-6)
    assert second_losses == pytest.approx(live_losses, abs=1e-6)


# ---------------------------------------------------------------- reference log-probs cached on disk


def run(tmp_path, tiny_model_dir, tokenizer, rows=ROWS, **kw):
    options = dict(
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        ref_logps_cache_dir=str(tmp_path / "cache"),
        precompute_ref_batch_size=4,  # the pass over the 4 pairs is one batch, counted below
    )
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, rows=rows, **{**options, **kw})
    trainer.train()
    return trainer, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_reference_cache_is_reused_and_equal(tmp_path, tiny_model_dir, tokenizer):
    live, live_losses = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=False)
    assert live.reference_forward_passes == 2  # one per step
    first, first_losses = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=True)
    assert first.reference_forward_passes == 1  # one pass over 4 pairs (one batch), none in training
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    second, second_losses = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs="auto")
    assert second.reference_forward_passes == 0  # read from disk: no reference forward at all
    assert second.train_dataset["ref_chosen_logps"] == first.train_dataset["ref_chosen_logps"]
    assert first_losses == pytest.approx(live_losses, abs=1e-6)
    assert second_losses == pytest.approx(live_losses, abs=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        {"max_length": 1000},  # a tokenization setting (here truncating nothing: the key itself must change)
        {
            "rows": ROWS[:3]
            + [{"prompt": "Name a colour.", "chosen": "Red.", "rejected": "I cannot answer that."}]
        },
    ],
)
def test_reference_cache_is_invalidated_by_a_change(tmp_path, tiny_model_dir, tokenizer, change):
    run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=True)
    rows = change.pop("rows", ROWS)
    again, _ = run(tmp_path, tiny_model_dir, tokenizer, rows=rows, precompute_ref_log_probs=True, **change)
    assert again.reference_forward_passes == 1  # recomputed
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_reference_cache_key_covers_base_weights_and_starting_adapter(tmp_path, tiny_model_dir, tokenizer):
    from hf_dpo.train.ref_cache import model_fingerprint

    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer)
    before = model_fingerprint(trainer.model, None)
    assert before == model_fingerprint(trainer.model, None)
    with torch.no_grad():
        trainer.model.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight.view(-1)[0] += 1.0
    assert model_fingerprint(trainer.model, None)["weight_sample"] != before["weight_sample"]
    assert before["reference"] == "base (adapters off)"


def test_auto_precompute_skips_short_runs_and_never_touches_disk_when_off(
    tmp_path, tiny_model_dir, tokenizer
):
    short, _ = run(
        tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs="auto", max_steps=1
    )  # 2 of 4 pairs
    assert short.reference_forward_passes == 1 and not (tmp_path / "cache").exists()
    off, _ = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs=False, max_steps=4)
    assert off.reference_forward_passes == 4 and not (tmp_path / "cache").exists()
    full, _ = run(tmp_path, tiny_model_dir, tokenizer, precompute_ref_log_probs="auto", max_steps=2)  # all 4
    assert full.reference_forward_passes == 1 and (tmp_path / "cache").exists()


# ---------------------------------------------------------------- length-grouped batches


def test_length_grouped_sampler_is_a_seeded_permutation_with_less_padding():
    lengths = [(i * 37) % 200 + 5 for i in range(256)]
    sampler = LengthGroupedPairSampler(lengths, batch_size=8, seed=3)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == list(range(256))  # every pair once per epoch
    assert epoch0 != epoch1  # a new order each epoch
    assert list(LengthGroupedPairSampler(lengths, batch_size=8, seed=3)) == epoch0  # seeded
    grouped = pad_share(lengths, sampler.batches(0))
    random_share = batching.expected_random_pad_share(lengths, 8, seed=3)
    assert grouped < random_share / 3, (grouped, random_share)


def test_trainer_uses_length_groups_and_per_pair_values_do_not_change(tmp_path, tiny_model_dir, tokenizer):
    rows = [
        {"prompt": f"Question {i}: " + "word " * (i % 5), "chosen": "Yes. " * (1 + i % 7), "rejected": "No."}
        for i in range(16)
    ]
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        tokenizer,
        rows=rows,
        train_sampling_strategy="group_by_length",
        per_device_train_batch_size=4,
        **PLAIN,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedPairSampler)
    order = list(sampler)
    batches = [order[i : i + 4] for i in range(0, 16, 4)]
    # The same pairs, batched by length vs in dataset order: identical per-pair log-probs.
    by_index = {}
    for group in (batches, [list(range(i, i + 4)) for i in range(0, 16, 4)]):
        for b in group:
            batch = trainer.data_collator([trainer.train_dataset[i] for i in b])
            with torch.no_grad():
                out = trainer.concatenated_forward(trainer.model, batch)
            for i, c, r in zip(b, out.chosen.tolist(), out.rejected.tolist()):
                by_index.setdefault(i, []).append((c, r))
    for values in by_index.values():
        assert values[0] == pytest.approx(values[1], abs=1e-4)


# ---------------------------------------------------------------- freed memory back to the OS, masks in autocast


@pytest.mark.parametrize("on", [False, True])
def test_return_freed_memory_is_applied_on_cpu_and_changes_no_result(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, on
):
    import hf_dpo.model.memory

    calls = []
    real = hf_dpo.model.memory.return_freed_memory_to_os
    monkeypatch.setattr(hf_dpo.model.memory, "return_freed_memory_to_os", lambda: calls.append(1) or real())
    plain = loss_and_grads(
        make_trainer(tmp_path, tiny_model_dir, tokenizer, return_freed_memory=False, **PLAIN)
    )
    assert calls == []
    fast = make_trainer(tmp_path, tiny_model_dir, tokenizer, return_freed_memory=on, **PLAIN)
    assert calls == ([1] if on else [])
    assert_same(loss_and_grads(fast), plain, loss_tol=0, grad_tol=1e-12)  # bit-identical


def test_shared_mask_takes_the_autocast_dtype(tmp_path, tiny_model_dir, tokenizer):
    """k-bit training keeps embeddings in float32; under bf16 autocast the attention scores are bf16 and the
    4D mask added to them must be too. And the prefix-sharing self-check is only as strict as the precision."""
    from hf_dpo.train.logps import computes_in_float32, model_inputs

    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batching.is_shared(batch)
    assert model_inputs(trainer.model, batch)["attention_mask"].dtype == torch.float32
    assert computes_in_float32(trainer.model, trainer.args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model_inputs(trainer.model, batch)["attention_mask"].dtype == torch.bfloat16
        assert not computes_in_float32(trainer.model, trainer.args)


def test_a_bf16_4bit_base_computes_in_bf16_also_from_its_dense_copy(tiny_model_dir):
    """A 4-bit base computing in bf16 with float32 embeddings runs its matmuls in bf16, and still does once training
    on CPU swaps in its dense copy (`decoding_weights`, in the compute dtype): the layout check's tolerance and the
    reward-accuracy ties follow the bf16 rounding either way."""
    from hf_dpo.config import ModelConfig
    from hf_dpo.model.loading import load_base_model
    from hf_dpo.model.reference import decoding_weights
    from hf_dpo.train.logps import forward_dtype

    cfg = ModelConfig(
        model_name_or_path=tiny_model_dir,
        quantization="4bit",
        torch_dtype="bfloat16",
        float32_embeddings=True,
    )
    model = load_base_model(cfg)
    no_autocast = type("Args", (), {"bf16": False, "fp16": False})  # the trainer's args: no autocast
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert forward_dtype(model, no_autocast) == torch.bfloat16
    with decoding_weights(model):
        assert not any(hasattr(m.weight, "quant_state") for m in model.modules() if hasattr(m, "weight"))
        assert forward_dtype(model, no_autocast) == torch.bfloat16


@pytest.mark.parametrize("every", [1, 2])
def test_activation_checkpointing_on_some_layers_changes_no_result(
    tmp_path, tiny_model_dir, tokenizer, every
):
    """Gradient checkpointing (every layer, or every n-th: `gradient_checkpointing_kwargs: {every_n_layers: n}`)
    recomputes the same activations on hf_dpo's fast paths (4D mask, hooked hidden states, chunked head)."""
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer))
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer)
    base = trainer.model.get_base_model()
    base.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=every)
    flags = [layer.gradient_checkpointing for layer in base.model.layers]
    assert flags == [i % every == 0 for i in range(len(flags))] and any(flags)
    assert_same(loss_and_grads(trainer), plain)


def test_every_n_layers_from_the_recipe_reaches_the_layers(tmp_path, tiny_model_dir, tokenizer):
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        tokenizer,
        max_steps=1,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False, "every_n_layers": 2},
    )
    trainer.train()
    flags = [layer.gradient_checkpointing for layer in trainer.model.get_base_model().model.layers]
    assert flags == [True, False]
