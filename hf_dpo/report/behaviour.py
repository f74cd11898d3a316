"""Behaviour, not likelihood: greedy answers of the policy and of the reference (adapters off, same decoding)
on held-out prompts, both scored by one judge, compared prompt by prompt.

    result = judged_generations(model, tokenizer, heldout_prompts(eval_dataset, tokenizer, 32), judge)
    result["wins"], result["ties"], result["losses"], result["win_rate"]
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import numpy as np

from hf_dpo.report.metrics import EvaluationError, mean_estimate

LOGPS_BATCH = 8  # answers per forward pass when scoring log-probs: (B, T, vocab) logits are the memory peak


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


def end_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends an answer: the tokenizer's EOS and the model's generation_config eos ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= {configured} if isinstance(configured, int) else set(configured or ())
    return ids


def prompts_from_file(path: str, tokenizer, data_config, limit: int) -> list[tuple[str, list[int]]]:
    """The first `limit` prompts of a prompt file as (text, token ids), formatted exactly as training formats
    prompts (chat template, system prompt)."""
    from hf_dpo.pairs.sampling import format_prompt, prompt_text, read_prompts

    prompts = read_prompts(path)[:limit]
    if data_config is None:
        from hf_dpo.config import DataConfig

        data_config = DataConfig()
    texts = [format_prompt(p, tokenizer, data_config) for p in prompts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(prompt_text(p), list(i)) for p, i in zip(prompts, ids)]


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
    reached `max_new_tokens` (unfinished). Greedy by default.

    Each batch decodes until its last answer ends; an answer that has ended leaves the batch (its rows are
    dropped from the KV cache), so a few long answers do not make every short one pay for their length.
    """
    import torch
    from transformers import DynamicCache

    device = next(p.device for p in model.parameters())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ends = torch.tensor(sorted(end_token_ids(model, tokenizer)), device=device)  # (E,)
    generator = torch.Generator(device=device).manual_seed(seed)
    completions: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = prompt_ids[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor(
            [[pad_id] * (width - len(ids)) + ids for ids in batch], device=device
        )  # (B, T)
        mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device
        )  # (B, T)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        cache = DynamicCache(config=model.config)
        out_tokens: list[list[int]] = [[] for _ in batch]
        active = torch.arange(len(batch), device=device)  # (A,) batch rows still decoding
        with torch.no_grad():
            # logits_to_keep=1: the LM head runs on the last prompt position only, not on all T of them
            logits = model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                logits_to_keep=1,
            ).logits
            last = logits[:, -1].float()  # (A, V)
            next_pos = positions[:, -1] + 1  # (A,)
            for step in range(max_new_tokens):
                if do_sample:
                    probs = (last / max(temperature, 1e-6)).softmax(-1)  # (A, V)
                    if top_p < 1.0:
                        sorted_p, order = probs.sort(-1, descending=True)
                        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
                        probs = probs.masked_fill(drop.scatter(-1, order, drop), 0.0)
                    token = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (A,)
                else:
                    token = last.argmax(-1)  # (A,)
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
                last = logits[:, -1].float()
                next_pos = next_pos + 1
        completions.extend(out_tokens)
    return completions


@contextlib.contextmanager
def decoding_weights(model):
    """On CPU, the 4-bit base layers dequantized once for the duration (LoRA layers untouched), then put back.

    bitsandbytes' CPU path dequantizes every weight at every forward; a decoding loop makes hundreds of
    forwards, so this is the same function (tests/test_sampling.py checks the logits are equal) at a
    fraction of the cost. On a GPU, or without bitsandbytes, nothing changes.
    """
    swapped = []
    try:
        import bitsandbytes as bnb

        from hf_dpo.pairs.sampling import float_linear_of_4bit
    except ImportError:
        bnb = None
    if bnb is not None and next(model.parameters()).device.type == "cpu":
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, bnb.nn.Linear4bit):
                    swapped.append((module, name, child))
                    setattr(module, name, float_linear_of_4bit(child))
    try:
        yield model
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)


def is_finished(completion_ids: list[int], end_ids: set[int]) -> bool:
    """Whether an answer ended with an end token (else it was cut at the decoding cap)."""
    return bool(completion_ids) and completion_ids[-1] in end_ids


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


def judge_answers(
    judge, prompts: list[str], answers: list[str], finished: list[bool]
) -> tuple[tuple[str, ...], np.ndarray]:
    """(criteria, (N, C) values) of the judge on the answers."""
    from hf_dpo.pairs.judges import criteria_scores, judge_criteria

    values = np.asarray(criteria_scores(judge, prompts, answers), dtype=np.float64).reshape(len(answers), -1)
    criteria = judge_criteria(judge)
    if values.shape[1] != len(criteria):
        raise EvaluationError(f"the judge gave {values.shape[1]} values per answer for criteria {criteria}.")
    return criteria, values


def judged_generations(
    model,
    tokenizer,
    prompts: list[tuple[str, list[int]]],
    judge,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 96,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    confidence: float = 0.95,
    num_samples_shown: int = 4,
) -> dict[str, Any]:
    """Generate from policy and reference (adapters off) with identical settings, judge both, compare.

    Answers decode until their end token, up to `max_new_tokens`. One that reaches the cap is unfinished:
    it is never judged as a whole answer, but counts as failing every criterion (it takes the lowest value
    the judge gave any answer on that criterion) and loses to every finished answer.
    """
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
        with decoding_weights(model):
            policy_ids = generate(model, tokenizer, ids, batch_size=batch_size, **decoding)
            policy_on_policy = completion_logps(model, ids, policy_ids, LOGPS_BATCH)
            with reference_context(model):
                reference_ids = generate(model, tokenizer, ids, batch_size=batch_size, **decoding)
                reference_on_policy = completion_logps(model, ids, policy_ids, LOGPS_BATCH)
        gen_s = time.perf_counter() - t0
    finally:
        model.train(was_training)
    ends = end_token_ids(model, tokenizer)
    sides = {}
    for side, side_ids in (("policy", policy_ids), ("reference", reference_ids)):
        answers = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in side_ids]
        finished = [is_finished(c, ends) for c in side_ids]
        sides[side] = {"answers": answers, "finished": finished, "tokens": [len(c) for c in side_ids]}
    criteria, pv = judge_answers(judge, texts, sides["policy"]["answers"], sides["policy"]["finished"])
    _, rv = judge_answers(judge, texts, sides["reference"]["answers"], sides["reference"]["finished"])
    # A cut answer fails every criterion: the lowest value seen on that criterion, on either side.
    floor = np.minimum(pv.min(axis=0), rv.min(axis=0))  # (C,)
    pf, rf = (np.asarray(sides[s]["finished"]) for s in ("policy", "reference"))
    pv, rv = np.where(pf[:, None], pv, floor), np.where(rf[:, None], rv, floor)  # (N, C)
    result = compare_sides(
        criteria,
        pv,
        rv,
        policy_finished=sides["policy"]["finished"],
        reference_finished=sides["reference"]["finished"],
        policy_answers=sides["policy"]["answers"],
        reference_answers=sides["reference"]["answers"],
        policy_tokens=sides["policy"]["tokens"],
        reference_tokens=sides["reference"]["tokens"],
        confidence=confidence,
        seed=seed,
    )
    # log pi(y|x) - log pi_ref(y|x) on the policy's own completions: a Monte-Carlo KL(pi || pi_ref) estimate
    # when sampling; with greedy decoding, the log-ratio at the policy's mode.
    result["kl_estimate"] = mean_estimate(policy_on_policy - reference_on_policy, confidence)
    result["decoding"] = {
        k: v for k, v in decoding.items() if do_sample or k in ("max_new_tokens", "do_sample")
    }
    result["generation_seconds"] = round(gen_s, 2)
    policy_scores, reference_scores = pv.sum(axis=1).tolist(), rv.sum(axis=1).tolist()
    result["samples"] = _pick_samples(
        texts,
        [_marked(a, f) for a, f in zip(sides["policy"]["answers"], sides["policy"]["finished"])],
        [_marked(a, f) for a, f in zip(sides["reference"]["answers"], sides["reference"]["finished"])],
        policy_scores,
        reference_scores,
        num_samples_shown,
    )
    return result


def _marked(answer: str, finished: bool) -> str:
    return answer if finished else answer + " [unfinished: cut at the decoding cap]"


def compare_sides(
    criteria: tuple[str, ...],
    policy_values: np.ndarray,
    reference_values: np.ndarray,
    *,
    policy_finished: list[bool],
    reference_finished: list[bool],
    policy_answers: list[str],
    reference_answers: list[str],
    policy_tokens: list[int],
    reference_tokens: list[int],
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Every behavioural number of the report from per-prompt values (N, C) of both sides (cut answers
    already at the floor): per-criterion rates and paired differences, win/tie/loss by criteria (finished
    first), lengths and the length-controlled win rate, unfinished and looping shares, and the verdict."""
    from hf_dpo.report.degeneration import is_looping, repeated_ngram_share
    from hf_dpo.report.metrics import (
        length_controlled_win_rate,
        paired_difference,
        proportion,
        rate_estimate,
    )
    from hf_dpo.report.verdict import verdict

    n = len(policy_answers)
    pf, rf = np.asarray(policy_finished, dtype=float), np.asarray(reference_finished, dtype=float)  # (N,)
    per_criterion = {
        name: {
            "policy": rate_estimate(policy_values[:, c], confidence, seed),
            "reference": rate_estimate(reference_values[:, c], confidence, seed),
            "difference": paired_difference(policy_values[:, c], reference_values[:, c], confidence, seed),
        }
        for c, name in enumerate(criteria)
    }
    # Win/tie/loss: finished first, then the criteria in order of importance (lexicographic).
    keys_p = [(pf[i], *policy_values[i]) for i in range(n)]
    keys_r = [(rf[i], *reference_values[i]) for i in range(n)]
    same = [a == b for a, b in zip(policy_answers, reference_answers)]
    outcome = np.array(
        [0.5 if s or kp == kr else float(kp > kr) for s, kp, kr in zip(same, keys_p, keys_r)]
    )  # (N,) 1 win, 0.5 tie, 0 loss
    words_p = [len(a.split()) for a in policy_answers]
    words_r = [len(a.split()) for a in reference_answers]
    loops_p = [is_looping(a) for a in policy_answers]
    loops_r = [is_looping(a) for a in reference_answers]
    wins, losses = int((outcome == 1).sum()), int((outcome == 0).sum())
    result = {
        "n": n,
        "criteria": list(criteria),
        "per_criterion": per_criterion,
        "wins": wins,
        "ties": n - wins - losses,
        "losses": losses,
        "win_rate": proportion(float(outcome.sum()), n, confidence),
        "ties_count_half": True,
        "length_controlled_win_rate": length_controlled_win_rate(
            outcome, words_p, words_r, confidence, seed=seed
        ),
        "lengths": {
            "policy_words": mean_estimate(words_p, confidence, seed),
            "reference_words": mean_estimate(words_r, confidence, seed),
            "policy_tokens": mean_estimate(policy_tokens, confidence, seed),
            "reference_tokens": mean_estimate(reference_tokens, confidence, seed),
        },
        "unfinished": {
            "policy": proportion(float(n - pf.sum()), n, confidence),
            "reference": proportion(float(n - rf.sum()), n, confidence),
        },
        "looping": {
            "policy": proportion(float(sum(loops_p)), n, confidence),
            "reference": proportion(float(sum(loops_r)), n, confidence),
        },
        "repeated_4gram_share": {
            "policy": mean_estimate([repeated_ngram_share(a) for a in policy_answers], confidence, seed),
            "reference": mean_estimate(
                [repeated_ngram_share(a) for a in reference_answers], confidence, seed
            ),
        },
        "identical_completions": int(sum(same)),
        "policy_mean_score": mean_estimate(policy_values.sum(axis=1), confidence, seed),
        "reference_mean_score": mean_estimate(reference_values.sum(axis=1), confidence, seed),
    }
    result["verdict"] = verdict(_jsonable_estimates(result))
    return result


def _jsonable_estimates(obj: Any) -> Any:
    """Estimates as the dicts the report stores (the verdict reads report dicts)."""
    from dataclasses import asdict

    from hf_dpo.report.metrics import Estimate

    if isinstance(obj, Estimate):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: _jsonable_estimates(v) for k, v in obj.items()}
    return obj


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
