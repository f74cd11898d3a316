"""hf_dpo.report.generation: the pruned decoding loop gives model.generate's tokens, an answer that ends leaves
the batch without changing the others, and an answer cut at the cap is unfinished."""

from __future__ import annotations

import pytest
import torch

from hf_dpo.report.generation import generate, is_finished


def test_generate_decodes_until_the_end_token_and_matches_generate(tiny):
    """The pruned greedy loop gives the tokens of model.generate; answers that reach the cap are unfinished."""
    model, tokenizer = tiny
    prompts = [
        tokenizer(p)["input_ids"] for p in ("What is 2 + 3?", "Hi", "Name the capital of Peru please.")
    ]
    ours = generate(model, tokenizer, prompts, max_new_tokens=7, batch_size=3)
    width = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=7,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    assert ours == [row[:7] for row in out[:, width:].tolist()]
    assert not any(is_finished(c, {tokenizer.eos_token_id}) for c in ours)  # the tiny model never ends in 7


def test_generate_drops_ended_answers_and_keeps_the_others_exact(tiny):
    """An answer that ends early leaves the batch; the other one decodes exactly as it would alone."""
    model, tokenizer = tiny
    prompts = [tokenizer(p)["input_ids"] for p in ("abc def", "Tell me a story")]
    alone = [generate(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    # Pretend a token the first answer writes after its first one (and the second never writes) ends answers.
    ends_at = next(i for i, t in enumerate(alone[0]) if i > 0 and t not in alone[0][:i] and t not in alone[1])
    eos = alone[0][ends_at]
    tokenizer_eos, tokenizer.eos_token_id = tokenizer.eos_token_id, eos
    try:
        both = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    finally:
        tokenizer.eos_token_id = tokenizer_eos
    assert both[0] == alone[0][: ends_at + 1] and is_finished(both[0], {eos})
    assert both[1] == alone[1] and not is_finished(both[1], {eos})


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.generation_config.eos_token_id = None  # only the tokenizer's end token counts here
    return model, tokenizer
