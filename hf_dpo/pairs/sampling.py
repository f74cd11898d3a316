"""Step 1 of DPO: sample completions from the reference policy, then label best vs worst with a judge.

    hf-dpo sample recipes/demo_pairs.yaml      # = run_sampling(load_recipe(...))

`sample` writes one jsonl line per prompt, `{"index", "prompt", "completions": [K strings], "seed",
"settings"}` ("seed" is the first sample's; sample k uses `sample_seed(sampling_seed, index, k)`),
flushed the moment the prompt's batch is generated: an interrupted run resumes at the first prompt
without a line, and gives the same file as an uninterrupted one. Each completion has its own random
stream, so it does not depend on which other prompts share its batch (`PerRowSampler`). Each prompt
is run once and its KV cache shared by its K samples; on CPU the 4-bit base is dequantized once (the
same weights and function as the 4-bit layers in training, without re-dequantizing at every step).

`label_with_judge` turns a samples file into preference pairs: the best and the worst completion of each
prompt become chosen and rejected; prompts whose completions all score the same (ties) are skipped and
counted. Rows are what `hf-dpo train` reads: `prompt`, `chosen`, `rejected`, plus `score_chosen`,
`score_rejected`, `margin`, `scores`, `index`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor

from hf_dpo.config import DataConfig, ModelConfig, Recipe, SamplingConfig
from hf_dpo.errors import HfDpoError
from hf_dpo.files import atomic_write_jsonl, read_utf8_text
from hf_dpo.files import read_jsonl as read_lines
from hf_dpo.pairs.judges import Judge, load_judge

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]  # plain text, or a conversation (list of {"role", "content"})


class SamplingError(HfDpoError, ValueError):
    """Bad prompts, samples or settings; the message names the file/line or prompt and what to do."""


# ---------------------------------------------------------------- reading prompts and samples


def _short(text: Any, limit: int = 80) -> str:
    text = prompt_text(text) if not isinstance(text, str) else text
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prompt_text(prompt: Prompt) -> str:
    """The text a judge sees: the prompt itself, or the last user turn of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content", "") if prompt else "")


def _check_prompt(value: Any, where: str) -> Prompt:
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    ):
        return value
    raise SamplingError(
        f"{where}: prompt must be a non-empty string or a list of {{'role', 'content'}} messages, got {value!r}."
    )


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line; SamplingError naming file and line for a broken one
    (not UTF-8, not JSON, not an object)."""
    return read_lines(
        path,
        error=SamplingError,
        hint="Fix or delete that line; the other lines are kept (a sampling run resumes and redoes missing prompts).",
    )


def read_prompts(path: str | os.PathLike, prompt_column: str = "prompt") -> list[Prompt]:
    """Prompts from a .txt file (one per line, blank lines ignored) or any table with a prompt column."""
    path = Path(path)
    if not path.is_file():
        raise SamplingError(
            f"Prompt file {path} does not exist. Set prompts_file to a .txt/.jsonl/.json/.csv/.parquet file."
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = read_utf8_text(path, error=SamplingError)
        prompts: list[Prompt] = [line.rstrip("\n") for line in text.splitlines()]
        prompts = [p for p in prompts if p.strip()]
    elif suffix == ".jsonl":
        prompts = []
        for lineno, row in read_jsonl(path):
            if prompt_column not in row:
                raise SamplingError(
                    f"{path}, line {lineno}: no '{prompt_column}' column (set prompt_column)."
                )
            prompts.append(_check_prompt(row[prompt_column], f"{path}, line {lineno}"))
    elif suffix in (".json", ".csv", ".parquet"):
        from datasets import load_dataset

        try:
            table = load_dataset(suffix[1:], data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - any parse failure of the file becomes one named error
            raise SamplingError(
                f"{path}: could not be read as {suffix[1:]} ({type(err).__name__}: {err})."
            ) from None
        if prompt_column not in table.column_names:
            raise SamplingError(
                f"{path}: no '{prompt_column}' column (columns: {', '.join(table.column_names)}); set prompt_column."
            )
        prompts = [_check_prompt(v, f"{path}, row {i}") for i, v in enumerate(table[prompt_column])]
    else:
        raise SamplingError(
            f"{path}: unknown prompt file type '{suffix}'; use .txt, .jsonl, .json, .csv or .parquet."
        )
    if not prompts:
        raise SamplingError(
            f"Prompt file {path} has no prompts. Put one prompt per line (or rows with '{prompt_column}')."
        )
    return prompts


# ---------------------------------------------------------------- formatting and generation


def format_prompt(prompt: Prompt, tokenizer, data: DataConfig) -> str:
    """The prompt text exactly as training feeds it (the data module's own function): a plain string as a
    user turn (+ system_prompt) through the chat template with the generation prompt, or raw text."""
    from hf_dpo.data import format_prompt as training_format

    return training_format(prompt, tokenizer, data)


def sample_seed(seed: int, index: int, k: int) -> int:
    """The seed of sample k of prompt `index`: independent of batching, so resuming reproduces a full run."""
    digest = hashlib.sha256(f"{seed}:{index}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class PerRowSampler(LogitsProcessor):
    """Temperature + top-p sampling with one random stream per row; generate() then takes the argmax.

    Each step draws one uniform u per row from that row's generator and picks the token where the row's
    cumulative probability first reaches u (inverse-CDF sampling: exact, and one random number per row
    instead of a vocabulary's worth). The chosen token is returned as the only finite score.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        if not (temperature >= 0 and temperature != float("inf")):  # NaN fails both
            raise SamplingError(
                f"sampling_temperature must be a finite number >= 0 (0: greedy), got {temperature}."
            )
        if not 0 < top_p <= 1:  # top_p <= 0 would drop every token, and token 0 would be picked at every step
            raise SamplingError(f"sampling_top_p must be in (0, 1], got {top_p}.")
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()  # (B, V)
        if self.temperature <= 0:
            return scores  # greedy
        probs = (scores / self.temperature).softmax(dim=-1)  # (B, V)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
            # Drop a token when the tokens ranked above it already cover top_p (the first one always stays).
            drop_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= self.top_p
            probs = probs.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), 0.0)
        u = torch.cat([torch.rand(1, generator=g) for g in self.generators]).clamp_min(1e-12)  # (B,)
        cdf = probs.cumsum(dim=-1)  # (B, V)
        target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
        token = torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def float_linear_of_4bit(child):
    """A torch Linear with exactly the weights a bitsandbytes Linear4bit computes with (dequantized once)."""
    import bitsandbytes as bnb

    dtype = child.compute_dtype or torch.float32
    data, state = child.weight.data, child.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # repacked by an eval-mode CPU forward
        data, state = bnb.functional._convert_weight_packed_for_cpu_inverse(data, state)
    weight = bnb.functional.dequantize_4bit(data, state).to(dtype)
    linear = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, dtype=dtype)
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    if child.bias is not None:
        linear.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
    return linear


def dequantize_on_cpu(model):
    """On CPU, swap 4-bit linears for float ones holding exactly the weights the 4-bit layer computes with.

    bitsandbytes' CPU path (without the optional `kernels` package) dequantizes every weight on every
    forward and then multiplies in the compute dtype; doing the dequantization once gives the same
    function (the NF4-rounded weights, in the same dtype) ~1.7x faster. On a GPU the 4-bit kernels stay.
    """
    if model.device.type != "cpu":
        return model
    try:
        import bitsandbytes as bnb
    except ImportError:
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                setattr(module, name, float_linear_of_4bit(child))
    return model


def load_reference(model_cfg: ModelConfig):
    """(model, tokenizer) of the reference policy: the base quantized as in training, plus its starting adapter."""
    from hf_dpo.model.loading import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(model_cfg)
    tokenizer.padding_side = "left"  # generation appends on the right
    model = dequantize_on_cpu(load_base_model(model_cfg))
    if model_cfg.adapter_name_or_path:
        from peft import PeftModel

        from hf_dpo.model.loading import ModelLoadError

        try:
            model = PeftModel.from_pretrained(model, model_cfg.adapter_name_or_path, is_trainable=False)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"Could not load adapter '{model_cfg.adapter_name_or_path}': {err}"
            ) from None
    model.eval()
    return model, tokenizer


def _settings(model_cfg: ModelConfig, cfg: SamplingConfig) -> dict[str, Any]:
    """What determines the samples; a samples file made with other settings is not resumed into."""
    return {
        "model": model_cfg.model_name_or_path,
        "adapter": model_cfg.adapter_name_or_path,
        "quantization": model_cfg.quantization,
        "num_samples_per_prompt": cfg.num_samples_per_prompt,
        "temperature": cfg.sampling_temperature,
        "top_p": cfg.sampling_top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.sampling_seed,
        "marks_unfinished": True,  # rows carry "finished" flags (older files did not)
    }


def _done_indices(path: Path, prompts: list[Prompt], settings: dict[str, Any]) -> set[int]:
    """Prompt indices already in the samples file; checks they were made from these prompts and settings.

    A last line cut off mid-write (no trailing newline) is the trace of a killed run: it is dropped and
    that prompt is sampled again. Any other broken line stops with its line number.
    """
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        try:
            json.loads(raw[cut:])
            path.write_bytes(raw + b"\n")
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # cut inside a character too
            logger.warning("%s: dropping a last line cut off mid-write; that prompt is sampled again.", path)
            path.write_bytes(raw[:cut])
    done = set()
    for lineno, row in read_jsonl(path):
        index = row.get("index")
        if not isinstance(index, int) or not 0 <= index < len(prompts) or row.get("prompt") != prompts[index]:
            raise SamplingError(
                f"{path}, line {lineno}: this sample does not belong to the current prompt set (index {index!r}). "
                "Point samples_file to a new file, or restore the prompts it was made from."
            )
        if row.get("settings") != settings:
            raise SamplingError(
                f"{path}, line {lineno}: made with other sampling settings ({row.get('settings')}) than now "
                f"({settings}). Point samples_file to a new file to sample with the new settings."
            )
        done.add(index)
    return done


def _check_lengths(
    prompt_ids: list[list[int]], prompts: list[Prompt], max_new_tokens: int, context: int | None
):
    if not context:
        return
    for i, ids in enumerate(prompt_ids):
        if len(ids) + max_new_tokens > context:
            raise SamplingError(
                f"Prompt {i} ({_short(prompts[i])!r}) is {len(ids)} tokens; with max_new_tokens={max_new_tokens} "
                f"it exceeds the model's context of {context} tokens. Shorten or remove that prompt, or lower "
                "max_new_tokens. Nothing was sampled for the remaining prompts yet; rerun after fixing."
            )


@torch.inference_mode()
def generate_batch(
    model, tokenizer, prompt_ids: list[list[int]], seeds: list[list[int]], cfg: SamplingConfig
) -> tuple[list[list[str]], list[list[bool]]]:
    """K completions for each prompt of one batch (left-padded, one random stream per completion), and for
    each whether it ended with an end token (False: cut at max_new_tokens)."""
    from transformers import DynamicCache, GenerationConfig

    k = cfg.num_samples_per_prompt
    batch = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt").to(
        model.device
    )  # (B, T)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # The prompt is run once and its KV cache copied K times (the K samples share it): prefill costs
    # as much as decoding here, so this halves the work. Positions as generate() computes them.
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, T)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1], cache=cache)
    cache.batch_repeat_interleave(k)  # (B*K, ...) in row order prompt0 x K, prompt1 x K, ...
    batch = {"input_ids": ids.repeat_interleave(k, dim=0), "attention_mask": mask.repeat_interleave(k, dim=0)}
    eos = tokenizer.eos_token_id
    gen_cfg = GenerationConfig(
        do_sample=False,  # PerRowSampler samples; generate() only takes its argmax
        max_new_tokens=cfg.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=getattr(model.generation_config, "eos_token_id", None) or eos,
        use_cache=True,
    )
    sampler = PerRowSampler([s for row in seeds for s in row], cfg.sampling_temperature, cfg.sampling_top_p)
    out = model.generate(
        **batch, cache=cache, generation_config=gen_cfg, logits_processor=[sampler]
    )  # (B*K, T+new)
    new_tokens = out[:, batch["input_ids"].shape[1] :]  # (B*K, new)
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    # A completion without an end token stopped at max_new_tokens: it is unfinished, however it reads.
    eos_ids = torch.tensor(sorted(_as_id_set(gen_cfg.eos_token_id)), device=new_tokens.device)  # (E,)
    finished = torch.isin(new_tokens, eos_ids).any(dim=-1).tolist()  # (B*K,)
    return (
        [[t.strip() for t in texts[i * k : (i + 1) * k]] for i in range(len(prompt_ids))],
        [finished[i * k : (i + 1) * k] for i in range(len(prompt_ids))],
    )


def _as_id_set(token_ids: int | list[int] | None) -> set[int]:
    if token_ids is None:
        return set()
    return {token_ids} if isinstance(token_ids, int) else set(token_ids)


def sample(
    recipe: Recipe,
    prompts_file: str | os.PathLike | None = None,
    samples_file: str | os.PathLike | None = None,
    model_and_tokenizer=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample K completions per prompt from the reference policy into `samples_file` (resumable).

    Returns {"samples_file", "prompts", "sampled_now", "resumed", "seconds"}.
    """
    from tqdm.auto import tqdm

    cfg = recipe.sampling
    prompts_file = prompts_file or cfg.prompts_file
    if not prompts_file:
        raise SamplingError("No prompts: set prompts_file in the recipe (a .txt with one prompt a line).")
    samples_path = Path(samples_file or default_samples_file(recipe))
    if cfg.num_samples_per_prompt < 2:
        raise SamplingError(
            f"num_samples_per_prompt must be >= 2 to make pairs (got {cfg.num_samples_per_prompt})."
        )
    prompts = read_prompts(prompts_file, recipe.data.prompt_column)
    settings = _settings(recipe.model, cfg)
    done = _done_indices(samples_path, prompts, settings)
    todo = [i for i in range(len(prompts)) if i not in done]
    result = {
        "samples_file": str(samples_path),
        "prompts": len(prompts),
        "resumed": len(done),
        "sampled_now": 0,
    }
    if not todo:
        logger.info("%s already has samples for all %d prompts.", samples_path, len(prompts))
        return result | {"seconds": 0.0}
    model, tokenizer = model_and_tokenizer or load_reference(recipe.model)
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"
    texts = [format_prompt(p, tokenizer, recipe.data) for p in prompts]
    prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    _check_lengths(
        prompt_ids, prompts, cfg.max_new_tokens, getattr(model.config, "max_position_embeddings", None)
    )
    if done:
        logger.info("Resuming %s: %d of %d prompts already sampled.", samples_path, len(done), len(prompts))
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    k, bs = cfg.num_samples_per_prompt, max(1, cfg.sampling_batch_size)
    # Batches are aligned to prompt index (i // bs), so a resumed run batches the remaining prompts as a
    # full run would have.
    batches: dict[int, list[int]] = {}
    for i in todo:
        batches.setdefault(i // bs, []).append(i)
    start = time.perf_counter()
    with (
        open(samples_path, "a", encoding="utf-8") as out,
        tqdm(
            total=len(prompts), initial=len(done), unit="prompt", desc="sampling", disable=not progress
        ) as bar,
    ):
        for indices in batches.values():
            seeds = [[sample_seed(cfg.sampling_seed, i, j) for j in range(k)] for i in indices]
            completions, finished = generate_batch(
                model, tokenizer, [prompt_ids[i] for i in indices], seeds, cfg
            )
            for i, comps, done_flags, row_seeds in zip(indices, completions, finished, seeds):
                row = {
                    "index": i,
                    "prompt": prompts[i],
                    "completions": comps,
                    "finished": done_flags,
                    "seed": row_seeds[0],
                    "settings": settings,
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(indices))
            result["sampled_now"] += len(indices)
    return result | {"seconds": time.perf_counter() - start}


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Rows of a samples file, sorted by prompt index; SamplingError naming file and line for bad ones."""
    path = Path(path)
    if not path.is_file():
        raise SamplingError(f"Samples file {path} does not exist; run `hf-dpo sample RECIPE` first.")
    rows = {}
    for lineno, row in read_jsonl(path):
        comps = row.get("completions")
        if "prompt" not in row or not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise SamplingError(
                f"{path}, line {lineno}: needs 'prompt' and 'completions' (a list of strings)."
            )
        _check_prompt(row["prompt"], f"{path}, line {lineno}")
        index = row.get("index", len(rows))
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise SamplingError(
                f"{path}, line {lineno}: 'index' must be a whole number >= 0 (the prompt's position in the prompt "
                f"file), got {index!r}. Fix that line, or sample again with `hf-dpo sample`."
            )
        if index in rows:
            raise SamplingError(
                f"{path}, line {lineno}: prompt index {index} appears a second time. Keep one of its lines."
            )
        rows[index] = row
    if not rows:
        raise SamplingError(f"Samples file {path} is empty; run `hf-dpo sample RECIPE` first.")
    return [rows[i] for i in sorted(rows)]


# ---------------------------------------------------------------- labelling


def pair_row(prompt: Prompt, chosen: str, rejected: str, **extra) -> dict[str, Any]:
    """A preference row as `hf-dpo train` reads it; a conversational prompt gets assistant-turn responses."""
    if isinstance(prompt, list):
        chosen = [{"role": "assistant", "content": chosen}]
        rejected = [{"role": "assistant", "content": rejected}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def label_with_judge(
    samples_file: str | os.PathLike,
    judge: Judge | str,
    pairs_file: str | os.PathLike,
    pairs_per_prompt: str = "best_worst",
    *,
    allow_unfinished_chosen: bool = False,
    min_chosen_score: float | None = None,
    min_chosen_criterion: str | None = None,
) -> dict[str, Any]:
    """Completions of each prompt scored by `judge` -> preference pairs in `pairs_file`.

    Answers are ranked by the judge's criteria, most important first (lexicographically). An unfinished
    answer (it stopped at max_new_tokens without an end token) ranks below every finished one and is never
    chosen, unless `allow_unfinished_chosen`. `min_chosen_score`: the chosen answer must reach it on
    `min_chosen_criterion` (default: the judge's first criterion); pairs below it are dropped and counted.

    pairs_per_prompt: "best_worst" (one pair: the best vs the worst completion) or "all" (every two
    completions that rank differently, the higher one chosen: up to K(K-1)/2 pairs per prompt).
    Prompts whose completions all rank the same are ties, prompts without a finished completion have no
    answer to choose: both are skipped and counted.

    Returns {"prompts", "pairs", "ties", "no_finished_answer", "below_min_chosen", "judge", "criteria", "pairs_file", "composition"}.
    The pairs file is only replaced once every prompt is scored, so a failing judge leaves the previous pairs
    and the samples untouched.
    """
    from hf_dpo.pairs.judges import judge_criteria

    judge = load_judge(judge) if not hasattr(judge, "score") else judge
    if pairs_per_prompt not in ("best_worst", "all"):
        raise SamplingError(f"pairs_per_prompt must be 'best_worst' or 'all', not '{pairs_per_prompt}'.")
    samples = read_samples(samples_file)
    flat_prompts, flat_completions, owners = [], [], []
    for n, row in enumerate(samples):
        for c in row["completions"]:
            flat_prompts.append(prompt_text(row["prompt"]))
            flat_completions.append(c)
            owners.append(n)
    scores = _score_all(judge, flat_prompts, flat_completions, samples, owners)
    criteria = judge_criteria(judge)
    gate = None
    if min_chosen_score is not None:
        name = min_chosen_criterion or criteria[0]
        if name not in criteria:
            raise SamplingError(
                f"min_chosen_criterion '{name}' is not one of the judge's criteria {list(criteria)}."
            )
        gate = (criteria.index(name), float(min_chosen_score))
    pairs, ties, below_min, none_finished, pos = [], 0, 0, 0, 0
    for row in samples:
        k = len(row["completions"])
        row_scores, pos = scores[pos : pos + k], pos + k
        finished = _finished_flags(row)
        if not (any(finished) or allow_unfinished_chosen):
            none_finished += 1  # nothing here may be chosen
            continue
        # Rank key: an unfinished answer is not a whole answer, so it ranks below every finished one.
        keys = [
            ((1.0,) if allow_unfinished_chosen else (float(finished[j]),)) + row_scores[j] for j in range(k)
        ]
        best = max(range(k), key=lambda j: keys[j])
        worst = min(range(k), key=lambda j: keys[j])
        if keys[best] == keys[worst]:
            ties += 1
            continue
        if pairs_per_prompt == "best_worst":
            chosen_rejected = [(best, worst)]
        else:  # every two answers that rank differently, each completion text once per side
            chosen_rejected = [
                (i, j) if keys[i] > keys[j] else (j, i)
                for i in range(k)
                for j in range(i + 1, k)
                if keys[i] != keys[j] and row["completions"][i] != row["completions"][j]
            ]
        for c, r in chosen_rejected:
            if not (finished[c] or allow_unfinished_chosen):
                continue
            if gate is not None and row_scores[c][gate[0]] < gate[1]:
                below_min += 1
                continue
            pairs.append(
                pair_row(
                    row["prompt"],
                    row["completions"][c],
                    row["completions"][r],
                    score_chosen=_one_number(row_scores[c]),
                    score_rejected=_one_number(row_scores[r]),
                    margin=_one_number(row_scores[c]) - _one_number(row_scores[r]),
                    scores=[_one_number(v) for v in row_scores],
                    criteria_chosen=dict(zip(criteria, row_scores[c])),
                    criteria_rejected=dict(zip(criteria, row_scores[r])),
                    finished_chosen=finished[c],
                    finished_rejected=finished[r],
                    index=row.get("index"),
                )
            )
    atomic_write_jsonl(pairs_file, pairs)
    return {
        "prompts": len(samples),
        "pairs": len(pairs),
        "ties": ties,
        "no_finished_answer": none_finished,
        "below_min_chosen": below_min,
        "judge": judge.name,
        "criteria": list(criteria),
        "pairs_file": str(pairs_file),
        "composition": pair_composition(pairs, samples),
    }


def _finished_flags(row: dict) -> list[bool]:
    """Per completion, whether it ended with an end token; files written before the flag count as finished."""
    flags = row.get("finished")
    return [bool(f) for f in flags] if isinstance(flags, list) else [True] * len(row["completions"])


def _one_number(values: tuple[float, ...]) -> float:
    """A criteria tuple as one number (the plain sum), for the score columns; ranking uses the tuple."""
    return float(sum(values))


def pair_composition(pairs: list[dict], samples: list[dict]) -> dict[str, Any]:
    """What the pairs are made of: counts by (chosen criteria, rejected criteria), and unfinished shares."""
    counts: dict[str, int] = {}
    for p in pairs:
        key = f"{_criteria_label(p['criteria_chosen'], p['finished_chosen'])} > " + _criteria_label(
            p["criteria_rejected"], p["finished_rejected"]
        )
        counts[key] = counts.get(key, 0) + 1
    flags = [f for row in samples for f in _finished_flags(row)]
    return {
        "by_criteria": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "unfinished_samples": sum(not f for f in flags),
        "samples": len(flags),
        "unfinished_chosen": sum(not p["finished_chosen"] for p in pairs),
        "unfinished_rejected": sum(not p["finished_rejected"] for p in pairs),
    }


def _criteria_label(values: dict[str, float], finished: bool) -> str:
    text = ", ".join(f"{name}={value:g}" for name, value in values.items())
    return text + ("" if finished else ", unfinished")


def _score_all(
    judge: Judge, prompts: list[str], completions: list[str], samples: list[dict], owners: list[int]
) -> list[tuple[float, ...]]:
    """Score everything; errors are re-pointed from the flat position to the sample row's prompt index."""
    from hf_dpo.pairs.judges import JudgeError, check_score, criteria_scores

    try:
        scores = criteria_scores(judge, prompts, completions)
    except JudgeError as err:
        raise JudgeError(_renumber(str(err), samples, owners)) from err.__cause__
    if len(scores) != len(prompts):
        raise JudgeError(
            f"Judge '{judge.name}' returned {len(scores)} scores for {len(prompts)} completions."
        )
    return [
        tuple(check_score(v, samples[owners[i]].get("index", owners[i]), prompts[i], judge.name) for v in s)
        for i, s in enumerate(scores)
    ]


def _renumber(message: str, samples: list[dict], owners: list[int]) -> str:
    import re

    m = re.search(r"prompt (\d+) ", message)
    if not m or int(m.group(1)) >= len(owners):
        return message
    index = samples[owners[int(m.group(1))]].get("index", owners[int(m.group(1))])
    return message[: m.start(1)] + str(index) + message[m.end(1) :]


# ---------------------------------------------------------------- the whole step, card, push


def default_samples_file(recipe: Recipe, split: str = "train") -> Path:
    if recipe.sampling.samples_file:
        base = Path(recipe.sampling.samples_file)
        return base if split == "train" else base.with_name(f"{base.stem}_{split}{base.suffix}")
    return Path(recipe.training.output_dir) / f"samples_{split}.jsonl"


def default_pairs_file(recipe: Recipe, split: str = "train") -> Path:
    base = Path(recipe.sampling.pairs_file or Path(recipe.training.output_dir) / "pairs" / "train.jsonl")
    return base if split == "train" else base.with_name(f"{split}.jsonl")


def run_sampling(recipe: Recipe, progress: bool = True) -> dict[str, Any]:
    """`hf-dpo sample`: sample train (and held-out) prompts; label with the recipe's judge; write the card."""
    cfg = recipe.sampling
    # Held-out first: it is small and the evaluation needs it whole; the long train run can then be
    # stopped and resumed at will.
    splits = {"test": cfg.test_prompts_file} if cfg.test_prompts_file else {}
    splits["train"] = cfg.prompts_file
    judge = load_judge(cfg.judge) if cfg.judge else None  # fail on a bad judge before sampling for minutes
    model_and_tokenizer = None
    report: dict[str, Any] = {"splits": {}}
    for split, prompts_file in splits.items():
        samples_path = default_samples_file(recipe, split)
        prompts = read_prompts(prompts_file, recipe.data.prompt_column) if prompts_file else None
        needs_model = prompts is not None and len(
            _done_indices(samples_path, prompts, _settings(recipe.model, cfg))
        ) < len(prompts)
        if needs_model and model_and_tokenizer is None:
            model_and_tokenizer = load_reference(recipe.model)
        stats = sample(recipe, prompts_file, samples_path, model_and_tokenizer, progress)
        if judge is not None:
            stats |= label_with_judge(
                samples_path,
                judge,
                default_pairs_file(recipe, split),
                cfg.pairs_per_prompt,
                allow_unfinished_chosen=cfg.allow_unfinished_chosen,
                min_chosen_score=cfg.min_chosen_score,
                min_chosen_criterion=cfg.min_chosen_criterion,
            )
        report["splits"][split] = stats
        if judge is not None:  # after each split, so the card always matches the pairs on disk
            report["notes"] = [
                "Sampling time of the last `hf-dpo sample` run: "
                + ", ".join(
                    f"{name} {st['sampled_now']} prompts in {st['seconds']:.0f} s"
                    for name, st in report["splits"].items()
                )
                + "."
            ]
            report["card"] = str(write_dataset_card(default_pairs_file(recipe).parent, recipe, report))
    return report


CARD_TEMPLATE = """
# {title}

On-policy preference pairs for DPO, made with hf_dpo's `hf-dpo sample`.

## How the pairs were made

1. For every prompt, {k} completions were sampled from the reference policy **{model}**{adapter}
   (quantization: {quantization}) with temperature {temperature}, top-p {top_p}, at most {max_new_tokens}
   new tokens, seed {seed}. Prompts were formatted as in training (the tokenizer's chat template){system}.
   A completion that stopped at {max_new_tokens} tokens without an end token is marked unfinished.
2. The judge **`{judge}`** scored every completion on its criteria ({criteria}, most important first);
   completions were ranked criterion by criterion, an unfinished one below every finished one{unfinished_rule}.
   Pairs: {pairs_rule}{gate_rule}. Prompts whose completions all ranked the same (ties) or that had no
   finished completion were skipped.

| split | prompts | pairs | ties (skipped) | no finished answer (skipped) | pairs dropped: chosen below the minimum | unfinished samples |
|---|---|---|---|---|---|---|
{rows}

What the pairs are made of (chosen > rejected, by criteria):

{composition}
{notes}
Columns: `prompt`, `chosen`, `rejected` (the format `hf-dpo train` reads), `score_chosen`,
`score_rejected`, `margin` (= score_chosen - score_rejected; a score is the sum of the criteria), `scores`
(all {k} scores), `criteria_chosen`, `criteria_rejected` (per criterion), `finished_chosen`,
`finished_rejected`, `index` (the prompt's line in the prompt file).

Regenerate with `hf-dpo sample {recipe}`.
"""


def _share(composition: dict[str, Any] | None) -> str:
    if not composition or not composition.get("samples"):
        return "-"
    n, total = composition["unfinished_samples"], composition["samples"]
    return f"{n} / {total} ({n / total:.0%})"


def write_dataset_card(directory: str | os.PathLike, recipe: Recipe, report: dict[str, Any]) -> Path:
    """README.md (a huggingface_hub DatasetCard) beside the pairs, describing how they were made."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from hf_dpo.model.loading import hub_id_for

    cfg, splits = recipe.sampling, report["splits"]
    data = DatasetCardData(
        tags=["dpo", "preference", "synthetic", "hf-dpo"],
        task_categories=["text-generation"],
        configs=[
            {"config_name": "default", "data_files": [{"split": s, "path": f"{s}.jsonl"} for s in splits]}
        ],
    )
    rows = "\n".join(
        f"| {s} | {st['prompts']} | {st.get('pairs', '-')} | {st.get('ties', '-')} | "
        f"{st.get('no_finished_answer', '-')} | {st.get('below_min_chosen', '-')} | {_share(st.get('composition'))} |"
        for s, st in splits.items()
    )
    composition = "\n\n".join(
        f"{s}:\n\n| chosen > rejected | pairs |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in st["composition"]["by_criteria"].items())
        for s, st in splits.items()
        if st.get("composition")
    )
    body = CARD_TEMPLATE.format(
        title=f"Preference pairs: {Path(recipe.path).stem if recipe.path else 'hf-dpo sample'}",
        k=cfg.num_samples_per_prompt,
        model=hub_id_for(recipe.model.model_name_or_path),
        adapter=f" with adapter `{recipe.model.adapter_name_or_path}`"
        if recipe.model.adapter_name_or_path
        else "",
        quantization=recipe.model.quantization,
        temperature=cfg.sampling_temperature,
        top_p=cfg.sampling_top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.sampling_seed,
        system=f' and system prompt "{recipe.data.system_prompt}"' if recipe.data.system_prompt else "",
        judge=cfg.judge,
        criteria=", ".join(
            f"`{c}`" for c in next((st["criteria"] for st in splits.values() if "criteria" in st), ["score"])
        ),
        unfinished_rule=" (unfinished answers were never chosen)"
        if not cfg.allow_unfinished_chosen
        else " (allow_unfinished_chosen: an unfinished answer could still be chosen over a worse one)",
        pairs_rule="the best vs the worst completion of each prompt"
        if cfg.pairs_per_prompt == "best_worst"
        else "every two completions that ranked differently, the higher one chosen",
        gate_rule=f"; only pairs whose chosen answer has {cfg.min_chosen_criterion or 'the first criterion'} "
        f">= {cfg.min_chosen_score:g}"
        if cfg.min_chosen_score is not None
        else "",
        composition=composition or "*(not recorded)*",
        rows=rows,
        recipe=recipe.path or "RECIPE",
        notes="".join(f"\n{note}\n" for note in report.get("notes", [])),
    )
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = Path(directory) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


def push_pairs(
    directory: str | os.PathLike, repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Push a pairs directory (train.jsonl, test.jsonl, README.md) as a Hub dataset repo; returns the commit URL."""
    from huggingface_hub import HfApi

    directory = Path(directory)
    if not any(directory.glob("*.jsonl")):
        raise SamplingError(f"{directory} holds no .jsonl pairs to push; run `hf-dpo sample RECIPE` first.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(directory),
        repo_id=repo_id,
        repo_type="dataset",
        allow_patterns=["*.jsonl", "README.md"],
        commit_message="Upload preference pairs made by hf-dpo sample",
    )
    return commit.commit_url
