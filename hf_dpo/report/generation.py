"""Answers to held-out prompts for the report: greedy (or sampled) decoding up to each answer's end token or a cap,
finished answers leaving the batch, policy and reference (adapters off; for a full fine-tune, the starting model
given as `reference_model`) decoded the same way, and the log-probs of the policy's answers under both.

    both = decode_policy_and_reference(model, tokenizer, prompt_ids, batch_size=96, max_new_tokens=256)
    both.policy_ids, both.reference_ids, both.policy_logps, both.reference_logps

An answer without an end token reached the cap: `is_finished` says which.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

LOGPS_BATCH = 8  # answers per forward pass when scoring log-probs: (B, T, vocab) logits are the memory peak


def end_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends an answer: the tokenizer's EOS and the model's generation_config eos ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= {configured} if isinstance(configured, int) else set(configured or ())
    return ids


def is_finished(completion_ids: list[int], end_ids: set[int]) -> bool:
    """Whether an answer ended with an end token (else it was cut at the decoding cap)."""
    return bool(completion_ids) and completion_ids[-1] in end_ids


# ----------------------------------------------------------------------------------------------------------
# Decoding


def _left_padded(batch: list[list[int]], pad_id: int, device):
    """(input_ids, attention_mask, position_ids), each (B, T): prompts padded on the left so that every
    answer starts at the last column."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=device)  # (B, T)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)  # (B, T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return input_ids, mask, positions


def _next_tokens(last, *, do_sample: bool, temperature: float, top_p: float, generator):
    """(A,) next token of each active answer from its (A, V) float logits: argmax, or a top-p sample."""
    import torch

    if not do_sample:
        return last.argmax(-1)  # (A,)
    probs = (last / max(temperature, 1e-6)).softmax(-1)  # (A, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # (A, V) outside the nucleus, in sorted order
        probs = probs.masked_fill(drop.scatter(-1, order, drop), 0.0)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (A,)


def _decode_batch(
    model, batch: list[list[int]], *, pad_id: int, ends, max_new_tokens: int, pick
) -> list[list[int]]:
    """Completion ids of one batch of prompts. An answer that has ended leaves the batch (its rows are dropped
    from the KV cache), so a few long answers do not make every short one pay for their length."""
    import torch

    from hf_dpo.model.kv_cache import preallocated_cache

    input_ids, mask, positions = _left_padded(batch, pad_id, ends.device)
    cache = preallocated_cache(model, input_ids.shape[1] + max_new_tokens)
    out_tokens: list[list[int]] = [[] for _ in batch]
    active = torch.arange(len(batch), device=ends.device)  # (A,) batch rows still decoding
    with torch.no_grad():
        # logits_to_keep=1: the LM head runs on the last prompt position only, not on all T of them
        logits = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1
        ).logits
        last = logits[:, -1].float()  # (A, V)
        next_pos = positions[:, -1] + 1  # (A,)
        for step in range(max_new_tokens):
            token = pick(last)  # (A,)
            for row, tok in zip(active.tolist(), token.tolist()):
                out_tokens[row].append(tok)
            keep = ~torch.isin(token, ends)  # (A,) answers that go on
            if not keep.any() or step == max_new_tokens - 1:
                break
            if not keep.all():  # drop the ended answers from the batch and the cache
                cache.batch_select_indices(keep.nonzero()[:, 0])
                active, token, mask, next_pos = active[keep], token[keep], mask[keep], next_pos[keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)  # (A, T + step + 1)
            logits = model(
                input_ids=token[:, None], attention_mask=mask, position_ids=next_pos[:, None], cache=cache
            ).logits
            last = logits[:, -1].float()  # (A, V)
            next_pos = next_pos + 1
    return out_tokens


def generate(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """Completion token ids for each prompt, up to and including its end token; one without an end token
    reached `max_new_tokens` (unfinished). Greedy by default. Each batch decodes until its last answer ends."""
    import torch

    device = next(p.device for p in model.parameters())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ends = torch.tensor(sorted(end_token_ids(model, tokenizer)), device=device)  # (E,)
    generator = torch.Generator(device=device).manual_seed(seed)

    def pick(last):
        return _next_tokens(
            last, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator
        )

    completions: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start : start + batch_size]
        completions += _decode_batch(
            model, batch, pad_id=pad_id, ends=ends, max_new_tokens=max_new_tokens, pick=pick
        )
    return completions


# ----------------------------------------------------------------------------------------------------------
# Scoring


def completion_logps(
    model, prompt_ids: list[list[int]], completion_ids: list[list[int]], batch_size: int = 8
) -> np.ndarray:
    """(N,) summed log-probs of each completion given its prompt, one right-padded forward pass per batch."""
    import torch

    device = next(p.device for p in model.parameters())
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        pairs = list(zip(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size]))
        width = max(len(p) + len(c) for p, c in pairs)
        input_ids = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
        labels = torch.full((len(pairs), width), -100, dtype=torch.long)  # (B, T), -100 on prompt and padding
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)  # (B, T)
        for i, (p, c) in enumerate(pairs):
            input_ids[i, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c, dtype=torch.long)
            attention_mask[i, : len(p) + len(c)] = 1
        with torch.no_grad():
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
            ).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V): position t predicts token t+1
        target = labels[:, 1:].to(device)  # (B, T-1)
        mask = target != -100
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        out.extend((picked * mask).sum(-1).cpu().tolist())
    return np.asarray(out, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# Both sides


@dataclass
class BothSides:
    """Answers of policy and reference to the same prompts, and the policy's answers scored by both."""

    policy_ids: list[list[int]]
    reference_ids: list[list[int]]
    policy_logps: np.ndarray  # (N,) log pi(y|x) of the policy's answers
    reference_logps: np.ndarray  # (N,) log pi_ref(y|x) of the same (policy's) answers
    seconds: float
    dtype: str  # the dtype both sides decoded in


def _decode_side(model, plan, tokenizer, prompt_ids, batch_size, decoding) -> list[list[int]]:
    """The answers of what `model` computes now (the policy, or inside `reference_context` the reference):
    from a dense copy made for this side and freed after it, or from the model, dequantized once."""
    from hf_dpo.model.reference import decoding_weights, dense_copy

    if plan.dense:
        dense = dense_copy(model, plan.dtype)
        return generate(dense, tokenizer, prompt_ids, batch_size=batch_size, **decoding)
    with decoding_weights(model):
        return generate(model, tokenizer, prompt_ids, batch_size=batch_size, **decoding)


@contextlib.contextmanager
def reference_side(model, reference_model=None):
    """The model that computes the reference: `reference_model` when given (a full fine-tune's starting model),
    else `model` itself inside `reference_context` (its adapters off, or its frozen 'reference' adapter)."""
    from hf_dpo.model.reference import reference_context

    if reference_model is not None:
        yield reference_model
        return
    with reference_context(model):
        yield model


def decode_policy_and_reference(
    model, tokenizer, prompt_ids: list[list[int]], *, batch_size: int, reference_model=None, **decoding: Any
) -> BothSides:
    """The policy's and the reference's answers with identical `decoding` settings (the keywords of `generate`) in
    one dtype, from the weights `decoding_plan` picks (a dense copy in the decoding dtype when it fits); the
    log-probs of the policy's answers from the model itself, in its compute dtype (the 4-bit weights dequantized
    once for both). The reference is `model` with its adapters off, or `reference_model` when given (a full
    fine-tune's starting model, in eval mode). The model's train/eval mode is put back afterwards."""
    from hf_dpo.model.reference import decoding_plan, decoding_weights

    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        plan = decoding_plan(model)
        policy_ids = _decode_side(model, plan, tokenizer, prompt_ids, batch_size, decoding)
        with reference_side(model, reference_model) as reference:
            reference_ids = _decode_side(reference, plan, tokenizer, prompt_ids, batch_size, decoding)
        with decoding_weights(model):
            policy_logps = completion_logps(model, prompt_ids, policy_ids, LOGPS_BATCH)
            with reference_side(model, reference_model) as reference:
                reference_logps = completion_logps(reference, prompt_ids, policy_ids, LOGPS_BATCH)
        seconds = time.perf_counter() - t0
    finally:
        model.train(was_training)
    dtype = str(plan.dtype).replace("torch.", "")
    return BothSides(policy_ids, reference_ids, policy_logps, reference_logps, seconds, dtype)
