"""Templates: a normalised row's prompt and completions rendered as the model reads them (the tokenizer's chat
template for conversations and, with apply_chat_template, plain prompts; raw text otherwise)."""

from __future__ import annotations

from typing import Any

from hf_dpo.config import DataConfig
from hf_dpo.data.errors import DataError
from hf_dpo.data.rows import BadRow
from hf_dpo.errors import HfDpoError

# How a pair reaches the model: rendered through the tokenizer's chat template, or its text as it is.
CHAT_TEMPLATE = "chat template"
RAW_TEXT = "raw text"


def _as_messages(prompt: str | list[dict], system_prompt: str | None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def uses_chat_template(prompt: Any, tokenizer, cfg: DataConfig, implicit: bool = False) -> bool:
    """Conversational rows always go through the chat template; plain strings when apply_chat_template is
    on; implicit-prompt strings (raw transcripts such as HH-RLHF) never."""
    if not getattr(tokenizer, "chat_template", None):
        if isinstance(prompt, list):
            raise DataError(
                "conversational rows (lists of messages) need a tokenizer with a chat template, and this one has "
                "none. Use a chat model, or give prompt/chosen/rejected as plain strings."
            )
        return False
    return isinstance(prompt, list) or (cfg.apply_chat_template and not implicit)


def format_prompt(
    prompt: str | list[dict],
    tokenizer,
    cfg: DataConfig,
    implicit: bool = False,
    template_kwargs: dict | None = None,
) -> str:
    """The prompt text as the model sees it at generation time (shared by sampling and evaluation).
    `template_kwargs`: the row's chat template arguments (TRL's `chat_template_kwargs` column)."""
    if uses_chat_template(prompt, tokenizer, cfg, implicit):
        return tokenizer.apply_chat_template(
            _as_messages(prompt, cfg.system_prompt),
            tokenize=False,
            add_generation_prompt=True,
            **(template_kwargs or {}),
        )
    return prompt


def prompt_token_ids(prompt: str | list[dict], tokenizer, cfg: DataConfig) -> list[int]:
    """The token ids a model is prompted with to answer `prompt` (sampling, the report's generations), exactly
    as tokenize_pair tokenizes a training prompt: a rendered chat template holds its own special tokens, raw text
    gets the tokenizer's (a BOS, as TRL adds), which the model would otherwise answer without."""
    special = not uses_chat_template(prompt, tokenizer, cfg)
    return tokenizer(format_prompt(prompt, tokenizer, cfg), add_special_tokens=special)["input_ids"]


def checked_prompt_token_ids(
    prompts: list[str | list[dict]], tokenizer, cfg: DataConfig, where: str
) -> list[list[int]]:
    """`prompt_token_ids` of each prompt of a prompt file (`where`: its path, as the error names it); a prompt the
    chat template refuses is a DataError naming the file and the prompt's number, not the template's traceback.
    Tokenizer only: the sampler and the report's judged prompts are checked with it before any weight loads."""
    for i, prompt in enumerate(prompts):
        try:
            _rendered(lambda p=prompt: format_prompt(p, tokenizer, cfg), cfg.prompt_column, cfg)
        except BadRow as bad:
            raise DataError(
                f"{where}, prompt {i}: {bad.problem}. Fix or remove that prompt (a conversation's turns as the "
                "template wants them)."
            ) from None
    return [prompt_token_ids(prompt, tokenizer, cfg) for prompt in prompts]


def _rendered(render, column: str, cfg: DataConfig) -> str:
    """`render()`, one chat-template call; a template that refuses the row is a BadRow of `column`."""
    try:
        return render()
    except HfDpoError:
        raise
    except Exception as err:  # noqa: BLE001 - templates raise anything (TemplateError, TypeError): name the row
        problem = f"the tokenizer's chat template rejects it ({type(err).__name__}: {err})"
        if cfg.system_prompt:
            problem += " (the recipe's system_prompt adds a system turn, which some templates refuse)"
        raise BadRow(column, problem, "rejected by the chat template") from None


def format_pair(pair: dict, tokenizer, cfg: DataConfig) -> tuple[str, str, str]:
    """(prompt_text, prompt+chosen text, prompt+rejected text), chat template applied where it belongs. A
    template that refuses the row raises BadRow naming the column it failed on."""
    prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
    implicit, template_kwargs = pair.get("implicit", False), pair.get("chat_template_kwargs") or {}
    prompt_text = _rendered(
        lambda: format_prompt(prompt, tokenizer, cfg, implicit, template_kwargs), cfg.prompt_column, cfg
    )
    if uses_chat_template(prompt, tokenizer, cfg, implicit):
        messages = _as_messages(prompt, cfg.system_prompt)

        def full(completion, column: str) -> str:
            turns = (
                completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            )
            return _rendered(
                lambda: tokenizer.apply_chat_template(messages + turns, tokenize=False, **template_kwargs),
                column,
                cfg,
            )

        return prompt_text, full(chosen, cfg.chosen_column), full(rejected, cfg.rejected_column)
    eos = tokenizer.eos_token or ""

    def with_eos(text: str) -> str:
        return text if text.endswith(eos) else text + eos

    return prompt_text, prompt_text + with_eos(chosen), prompt_text + with_eos(rejected)
