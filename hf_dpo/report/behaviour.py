"""Behaviour, not likelihood: greedy answers of the policy and of the reference (adapters off, same decoding)
on held-out prompts, both scored by one judge, compared prompt by prompt.

    result = judged_generations(model, tokenizer, heldout_prompts(eval_dataset, tokenizer, 32), judge)
    result["wins"], result["ties"], result["losses"], result["win_rate"]
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from hf_dpo.report.metrics import EvaluationError, judged_comparison, mean_estimate


def _messages_or_text(prompt: Any) -> Any:
    """hf_dpo.data stores conversational prompts as JSON text: give back the message list."""
    if isinstance(prompt, str) and prompt.startswith("[{"):
        try:
            value = json.loads(prompt)
        except json.JSONDecodeError:
            return prompt
        if isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
            return value
    return prompt


def _prompt_text(row: dict[str, Any], tokenizer) -> str:
    """Readable prompt of a dataset row: the prompt column, the last user turn, or decoded prompt ids."""
    prompt = _messages_or_text(row.get("prompt"))
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
        return users[-1] if users else str(prompt[-1].get("content", ""))
    if "prompt_input_ids" in row:
        return tokenizer.decode(row["prompt_input_ids"], skip_special_tokens=True)
    raise EvaluationError(
        f"eval rows need a 'prompt' column or 'prompt_input_ids'; this one has {sorted(row)}. "
        "Keep the prompt column when tokenizing the eval split."
    )


def _prompt_ids(row: dict[str, Any], tokenizer) -> list[int]:
    """Token ids the model is prompted with: exactly what training saw when the row is tokenized."""
    if "prompt_input_ids" in row:
        return list(row["prompt_input_ids"])
    prompt = _messages_or_text(row["prompt"])
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(prompt if isinstance(prompt, str) else messages[-1]["content"])["input_ids"]


def heldout_prompts(eval_dataset, tokenizer, limit: int) -> list[tuple[str, list[int]]]:
    """Up to `limit` distinct held-out prompts as (text, token ids), in dataset order."""
    seen: set[str] = set()
    prompts = []
    for row in eval_dataset:
        text = _prompt_text(row, tokenizer)
        if text in seen:
            continue
        seen.add(text)
        prompts.append((text, _prompt_ids(row, tokenizer)))
        if len(prompts) >= limit:
            break
    return prompts


def generate(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """Completion token ids for each prompt (up to and including EOS); left-padded batches, greedy by default."""
    import torch

    device = next(p.device for p in model.parameters())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    sampling = (
        dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    )
    if not do_sample:
        sampling.update(temperature=None, top_p=None, top_k=None)  # silence the model's sampling defaults
    completions: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor(
            [[pad_id] * (width - len(ids)) + ids for ids in batch], device=device
        )  # (B, T)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device
        )
        torch.manual_seed(seed + start)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                use_cache=True,
                **sampling,
            )  # (B, T + new)
        for row in out[:, width:].tolist():
            if eos_id in row:
                row = row[: row.index(eos_id) + 1]  # keep EOS (it was generated), drop the padding after it
            completions.append(row)
    return completions


def completion_logps(
    model, prompt_ids: list[list[int]], completion_ids: list[list[int]], batch_size: int = 8
):
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


def _score(judge, prompts: list[str], completions: list[str]) -> list[float]:
    scores = (
        judge.score(prompts, completions)
        if hasattr(judge, "score")
        else [judge(p, c) for p, c in zip(prompts, completions)]
    )
    scores = [float(s) for s in scores]
    if len(scores) != len(completions):
        raise EvaluationError(f"the judge returned {len(scores)} scores for {len(completions)} completions.")
    return scores


def judged_generations(
    model,
    tokenizer,
    prompts: list[tuple[str, list[int]]],
    judge,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    confidence: float = 0.95,
    num_samples_shown: int = 4,
) -> dict[str, Any]:
    """Generate from policy and reference (adapters off) with identical settings, judge both, compare."""
    from hf_dpo.model.loading import reference_context

    texts = [t for t, _ in prompts]
    ids = [i for _, i in prompts]
    decoding = dict(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed
    )
    was_training = model.training
    model.eval()
    try:
        t0 = time.perf_counter()
        policy_ids = generate(model, tokenizer, ids, batch_size=batch_size, **decoding)
        policy_on_policy = completion_logps(model, ids, policy_ids, batch_size)
        with reference_context(model):
            reference_ids = generate(model, tokenizer, ids, batch_size=batch_size, **decoding)
            reference_on_policy = completion_logps(model, ids, policy_ids, batch_size)
        gen_s = time.perf_counter() - t0
    finally:
        model.train(was_training)
    policy = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in policy_ids]
    reference = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in reference_ids]
    policy_scores = _score(judge, texts, policy)
    reference_scores = _score(judge, texts, reference)
    same = [a == b for a, b in zip(policy, reference)]
    result = judged_comparison(policy_scores, reference_scores, same_text=same, confidence=confidence)
    # log pi(y|x) - log pi_ref(y|x) on the policy's own completions: a Monte-Carlo KL(pi || pi_ref) estimate
    # when sampling; with greedy decoding, the log-ratio at the policy's mode.
    result["kl_estimate"] = mean_estimate(policy_on_policy - reference_on_policy, confidence)
    result["decoding"] = {
        k: v for k, v in decoding.items() if do_sample or k in ("max_new_tokens", "do_sample")
    }
    result["identical_completions"] = int(sum(same))
    result["generation_seconds"] = round(gen_s, 2)
    result["samples"] = _pick_samples(
        texts, policy, reference, policy_scores, reference_scores, num_samples_shown
    )
    return result


def _pick_samples(prompts, policy, reference, ps, rs, k: int) -> list[dict[str, Any]]:
    """A few side-by-side rows, preferring prompts where the two answers differ (wins first, then losses)."""
    order = sorted(range(len(prompts)), key=lambda i: (policy[i] == reference[i], -(ps[i] - rs[i]), i))
    return [
        {
            "prompt": prompts[i],
            "policy": policy[i],
            "reference": reference[i],
            "policy_score": ps[i],
            "reference_score": rs[i],
        }
        for i in order[:k]
    ]
