"""The layouts that change no result: padding-free packing (all pairs of a batch in one row) and the prefix-shared
layout through a FlexAttention block mask, each compared with the plain padded layout on the tiny Llama in
float32 (loss, per-pair log-probs, LoRA gradients); the choice of attention by device; the fallbacks.

FlexAttention runs eagerly here (`eager_flex`): transformers compiles it, which on CPU costs a C++ build per
shape. Torch's eager kernel computes every no-grad pass (the reference, the per-pair log-probs, the first-batch
check); it has no backward on CPU, so the pass with gradients reads the same BlockMask through a dense stand-in."""

import logging

import pytest
import torch

from hf_dpo.train import attention
from hf_dpo.train.batching import (
    PASS_BATCH_TOKENS,
    PASS_LOGITS_BYTES,
    PASS_MAX_PAIRS,
    PreferenceCollator,
    batch_examples,
    label_targets,
    pass_batch_size,
    pass_batches,
    plain_batch,
    shared_attention_mask,
    shared_block_mask,
    shortest_first,
)
from tests.fast_path_fixtures import PLAIN, assert_same, loss_and_grads, make_trainer

EXAMPLES = [
    {"prompt_input_ids": [5, 6], "chosen_input_ids": [7, 8], "rejected_input_ids": [9, 10, 11]},
    {"prompt_input_ids": [], "chosen_input_ids": [7], "rejected_input_ids": [9, 10]},
]


@pytest.fixture
def eager_flex(monkeypatch):
    """FlexAttention without torch.compile. Its eager kernel has no backward on CPU, so a pass that needs gradients
    runs a dense stand-in that reads the same BlockMask (its mask_mod, evaluated for every query and key)."""
    import transformers.masking_utils
    from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

    def dense_flex(query, key, value, block_mask, scale=None, enable_gqa=False):
        if enable_gqa:  # (B, KV heads, T, D) -> (B, heads, T, D)
            key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
            value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        rows, _, seq, dim = query.shape
        allowed = create_mask(block_mask.mask_mod, rows, 1, seq, key.shape[2], device=query.device)
        scores = (query @ key.transpose(-1, -2)) * (dim**-0.5 if scale is None else scale)  # (B, H, T, T)
        return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ value

    def uncompiled(query, key, value, training=False, **kwargs):
        if torch.is_grad_enabled() and query.requires_grad:
            return dense_flex(query, key, value, kwargs["block_mask"], kwargs["scale"], kwargs["enable_gqa"])
        return flex_attention(query, key, value, **kwargs)

    def block_mask_uncompiled(*args, _compile=False, **kwargs):
        return create_block_mask(*args, _compile=False, **kwargs)

    monkeypatch.setattr(
        "transformers.integrations.flex_attention.compile_friendly_flex_attention", uncompiled
    )
    monkeypatch.setattr(transformers.masking_utils, "create_block_mask", block_mask_uncompiled)


# ---------------------------------------------------------------- padding-free packing


def test_packed_layout_positions_sequences_and_targets():
    """Two pairs -> one row [p0 c0][c1][p0 r0][r1]: positions restart per sequence, nothing predicts a sequence's
    first token (the empty prompt's first completion token included), and the pairs come back out unchanged."""
    batch = PreferenceCollator(pad_token_id=0, padding_free=True)(EXAMPLES)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 7, 5, 6, 9, 10, 11, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 0, 1]]
    assert batch["sequence_ids"].tolist() == [[0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 3]]
    assert batch["attention_mask"].sum() == 12
    targets = label_targets(batch)
    found = list(zip(*(t.tolist() for t in (targets.sources, targets.labels, targets.sequences))))
    assert found == [(1, 7, 0), (2, 8, 0), (6, 9, 2), (7, 10, 2), (8, 11, 2), (10, 10, 3)]
    assert targets.num_pairs == 2
    assert batch_examples(batch) == EXAMPLES


@pytest.mark.parametrize("layout", [{}, {"prefix_sharing": True}, {"padding_free": True}])
def test_every_layout_gives_back_its_pairs_and_their_cached_reference(layout):
    examples = [
        dict(ex, ref_chosen_logps=-1.5 - i, ref_rejected_logps=-2.5 - i) for i, ex in enumerate(EXAMPLES)
    ]
    batch = PreferenceCollator(pad_token_id=0, **layout)(examples)
    assert batch_examples(batch) == examples
    plain = plain_batch(batch, pad_token_id=0)
    expected = PreferenceCollator(pad_token_id=0)(examples)
    assert plain.keys() == expected.keys()
    assert all(torch.equal(plain[k], expected[k]) for k in expected)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk", [0, 7])
def test_padding_free_equals_the_plain_path(tmp_path, tiny_model_dir, tokenizer, attn, chunk):
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, attn=attn, **PLAIN))
    trainer = make_trainer(
        tmp_path, tiny_model_dir, tokenizer, attn=attn, padding_free=True, logps_chunk_size=chunk
    )
    assert trainer._packed and not trainer._prefix_sharing  # padding_free packs the plain layout
    packed = loss_and_grads(trainer)
    assert trainer._packed  # it really ran packed (the first-batch check passed)
    print(f"padding_free {attn} chunk {chunk}: largest differences", assert_same(packed, plain))


def test_padding_free_falls_back_when_the_model_ignores_positions(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog
):
    """A model that does not tell packed sequences apart (simulated: transformers finds no packing) attends across
    them; the first-batch check sees different log-probs, says so, and the trainer pads from then on."""
    monkeypatch.setattr("transformers.masking_utils.find_packed_sequence_indices", lambda position_ids: None)
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, padding_free=True, logps_chunk_size=0)
    with caplog.at_level(logging.WARNING):
        fallback = loss_and_grads(trainer)
    assert not trainer._packed and not trainer.data_collator.padding_free
    assert "padding_free off" in caplog.text and "differ from the plain layout" in caplog.text
    assert_same(fallback, plain)


# ---------------------------------------------------------------- prefix sharing through FlexAttention


def test_a_pass_goes_shortest_first_in_batches_of_a_token_budget():
    assert shortest_first([3, 9, 1, 9, 4]) == [2, 0, 4, 1, 3]  # ties keep the dataset's order
    assert pass_batch_size(longest=128, vocab_size=None) == PASS_BATCH_TOKENS // 128
    assert pass_batch_size(longest=8, vocab_size=None) == PASS_MAX_PAIRS
    assert pass_batch_size(longest=3 * PASS_BATCH_TOKENS, vocab_size=None) == 1
    assert (
        pass_batch_size(longest=3 * PASS_BATCH_TOKENS, vocab_size=None, at_least=4) == 4
    )  # a training batch fits
    # full logits of a 128k vocabulary: the logits, not the tokens, bound the batch
    assert pass_batch_size(longest=64, vocab_size=128_000) == PASS_LOGITS_BYTES // (4 * 128_000) // 64


def test_pass_batches_keep_padding_small_and_tokens_within_the_budget():
    lengths = [10, 10, 10, 58, 60, 90, 95, 100]  # shortest first
    assert pass_batches(lengths, vocab_size=None) == [[0, 1, 2], [3, 4], [5, 6, 7]]  # <= 12.5% shorter
    equal = [64] * 300  # no padding at all: batches as large as the budget allows
    batches = pass_batches(equal, vocab_size=None)
    assert [len(b) for b in batches] == [PASS_MAX_PAIRS] * 4 + [300 - 4 * PASS_MAX_PAIRS]
    assert sum(batches, []) == list(range(300))  # every pair once, in order
    long = pass_batches([PASS_BATCH_TOKENS // 2] * 5, vocab_size=None)
    assert [len(b) for b in long] == [2, 2, 1]


def test_block_mask_allows_exactly_what_the_dense_mask_allows():
    from torch.nn.attention.flex_attention import create_mask

    batch = PreferenceCollator(pad_token_id=0, prefix_sharing=True)(EXAMPLES)
    segments = batch["segment_ids"]
    rows, seq = segments.shape
    block = shared_block_mask(segments)
    allowed = create_mask(block.mask_mod, rows, 1, seq, seq, device="cpu")  # (B, 1, T, T) bool
    assert torch.equal(allowed, shared_attention_mask(segments, torch.float32) == 0)


@pytest.mark.parametrize(
    ("impl", "requested", "device", "expected"),
    [
        ("sdpa", "auto", "cpu", "mask4d"),  # the default CPU path, unchanged
        ("sdpa", "auto", "cuda", "flex"),
        ("eager", "auto", "cuda", "mask4d"),
        ("flex_attention", "auto", "cpu", "flex"),
        ("sdpa", "mask4d", "cuda", "mask4d"),
        ("sdpa", "flex", "cpu", "flex"),
        ("flash_attention_2", "auto", "cuda", None),
        ("flash_attention_2", "flex", "cuda", None),
        ("flash_attention_2", "mask4d", "cuda", None),
    ],
)
def test_sharing_attention_is_chosen_by_device_and_kernel(impl, requested, device, expected):
    model = torch.nn.Module()
    model.config = type("Config", (), {"_attn_implementation": impl})()
    choice, why = attention.choose_sharing_attention(model, requested, device)
    assert choice == expected and why


@pytest.mark.parametrize("chunk", [0, 7])
def test_flex_prefix_sharing_equals_the_plain_path(
    tmp_path, tiny_model_dir, tokenizer, eager_flex, chunk, caplog, monkeypatch
):
    """An SDPA model asked for flex: batches with a block mask go through FlexAttention, the rest through SDPA."""
    import hf_dpo.train.logps

    block_masks = []
    real = hf_dpo.train.logps.shared_block_mask
    monkeypatch.setattr(
        hf_dpo.train.logps, "shared_block_mask", lambda seg: block_masks.append(1) or real(seg)
    )
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    with caplog.at_level(logging.INFO):
        trainer = make_trainer(
            tmp_path, tiny_model_dir, tokenizer, prefix_sharing_attention="flex", logps_chunk_size=chunk
        )
        shared = loss_and_grads(trainer)
    assert "Prefix sharing attention: flex" in caplog.text
    assert trainer._sharing_attention == "flex"  # the first-batch check passed: it really ran flex
    assert len(block_masks) == 4  # the first-batch check, the policy and reference passes, the log-probs
    assert trainer.model.get_base_model().config._attn_implementation == attention.SDPA_OR_FLEX
    print(f"flex prefix sharing chunk {chunk}: largest differences", assert_same(shared, plain))
    # a plain batch on the same model still goes through SDPA and gives the plain path's values
    trainer._sharing_attention = None
    trainer.data_collator.prefix_sharing = False
    assert_same(loss_and_grads(trainer), plain)


def test_a_flex_attention_model_shares_prefixes_with_a_block_mask(
    tmp_path, tiny_model_dir, tokenizer, eager_flex
):
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer, attn="flex_attention", logps_chunk_size=0)
    assert trainer._sharing_attention == "flex"
    print("flex_attention model: largest differences", assert_same(loss_and_grads(trainer), plain))
    assert trainer._sharing_attention == "flex"


def test_a_failing_block_mask_falls_back_to_the_4d_mask(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, caplog
):
    def broken(segment_ids):
        raise RuntimeError("no FlexAttention kernel here")

    monkeypatch.setattr("hf_dpo.train.logps.shared_block_mask", broken)
    plain = loss_and_grads(make_trainer(tmp_path, tiny_model_dir, tokenizer, **PLAIN))
    trainer = make_trainer(
        tmp_path, tiny_model_dir, tokenizer, prefix_sharing_attention="flex", logps_chunk_size=0
    )
    with caplog.at_level(logging.INFO):
        shared = loss_and_grads(trainer)
    assert "FlexAttention block mask failed" in caplog.text and "no FlexAttention kernel here" in caplog.text
    assert trainer._sharing_attention == "mask4d" and trainer.data_collator.prefix_sharing
    assert_same(shared, plain)


def test_default_cpu_run_keeps_the_dense_mask_and_sdpa(tmp_path, tiny_model_dir, tokenizer):
    trainer = make_trainer(tmp_path, tiny_model_dir, tokenizer)
    assert trainer._sharing_attention == "mask4d" and not trainer._packed
    assert trainer.model.get_base_model().config._attn_implementation == "sdpa"


def test_flex_attention_runs_in_the_autocast_dtype(
    tmp_path, tiny_model_dir, tokenizer, eager_flex, monkeypatch
):
    """Under bf16 autocast SDPA runs in bf16; FlexAttention is no autocast op, so the dispatch casts for it."""
    import transformers.integrations.flex_attention as flex_module

    seen = []
    patched = flex_module.compile_friendly_flex_attention  # the eager one, from eager_flex
    monkeypatch.setattr(
        flex_module,
        "compile_friendly_flex_attention",
        lambda q, k, v, **kw: seen.append(q.dtype) or patched(q, k, v, **kw),
    )
    trainer = make_trainer(
        tmp_path, tiny_model_dir, tokenizer, prefix_sharing_attention="flex", logps_chunk_size=0
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainer.concatenated_forward(trainer.model, batch)
    assert seen and set(seen) == {torch.bfloat16}
    assert torch.isfinite(out.chosen).all() and torch.isfinite(out.rejected).all()
