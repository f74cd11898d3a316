"""Which prompts the report's answers are judged on: the recipe's held-out prompt file, or the distinct prompts of
the eval split, each as (the prompt as given: text or a conversation's message list, token ids formatted exactly
as training formats them). The judge is given the prompt as it is (hf_dpo.pairs.judges.judge_prompts).

    prompts = prompts_from_file("recipes/data/demo/prompts_test.txt", tokenizer, data_config, 96)
    prompts = heldout_prompts(eval_dataset, tokenizer, 32)          # [(prompt, ids), ...]
    seen = training_prompt_keys(train_dataset, tokenizer)           # {prompt_key, ...}, or None
    sum(prompt_key(ids, tokenizer) in seen for _, ids in prompts)   # held-out prompts that were trained on
"""

from __future__ import annotations

import json
from typing import Any

from hf_dpo.report.estimates import EvaluationError


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


def _prompt_of(row: dict[str, Any], tokenizer) -> str | list[dict]:
    """The prompt of a dataset row as given: its text, its conversation (message list), or decoded prompt ids."""
    prompt = _messages_or_text(row.get("prompt"))
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        return prompt
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


def heldout_prompts(eval_dataset, tokenizer, limit: int) -> list[tuple[str | list[dict], list[int]]]:
    """Up to `limit` distinct held-out prompts as (prompt, token ids), in dataset order."""
    # Distinct by what the model is prompted with: two conversations that end in the same user turn ("Thanks!")
    # are different prompts.
    seen: set[tuple[int, ...]] = set()
    prompts = []
    for row in eval_dataset:
        ids = _prompt_ids(row, tokenizer)
        if tuple(ids) in seen:
            continue
        seen.add(tuple(ids))
        prompts.append((_prompt_of(row, tokenizer), ids))
        if len(prompts) >= limit:
            break
    return prompts


def prompts_from_file(
    path: str, tokenizer, data_config, limit: int
) -> list[tuple[str | list[dict], list[int]]]:
    """The first `limit` prompts of a prompt file as (prompt, token ids), formatted exactly as training formats
    prompts (chat template, system prompt, special tokens)."""
    from hf_dpo.data import checked_prompt_token_ids
    from hf_dpo.pairs.formats import read_prompts

    if data_config is None:
        from hf_dpo.config import DataConfig

        data_config = DataConfig()
    prompts = read_prompts(path, data_config.prompt_column)[:limit]  # the column hf-dpo sample reads
    return list(zip(prompts, checked_prompt_token_ids(prompts, tokenizer, data_config, str(path))))


def prompt_key(ids: list[int], tokenizer) -> str:
    """A prompt by its words, to find the same prompt on both sides of the train / held-out line: the ids decoded
    without special tokens, whitespace collapsed (a BOS token or a newline merged into the answer's first token
    at the prompt's end does not make two prompts)."""
    return " ".join(tokenizer.decode(ids, skip_special_tokens=True).split())


def training_prompt_keys(train_dataset, tokenizer) -> set[str] | None:
    """The prompt_key of every distinct training prompt, or None when there is no tokenized train split."""
    if train_dataset is None or "prompt_input_ids" not in getattr(train_dataset, "column_names", ()):
        return None
    distinct = {
        tuple(ids) for ids in train_dataset["prompt_input_ids"]
    }  # pairs share prompts: decode each once
    return {prompt_key(list(ids), tokenizer) for ids in distinct}
