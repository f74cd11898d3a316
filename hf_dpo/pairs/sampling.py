"""Step 1 of DPO: sample K completions per prompt from the reference policy, then label them.

    hf-dpo sample recipes/demo_pairs.yaml      # = run_sampling(load_recipe(...))

`sample` writes one jsonl line per prompt, `{"index", "prompt", "completions": [K strings], "finished",
"seed", "settings"}` ("seed" is the first sample's; sample k uses `sample_seed(sampling_seed, index, k)`),
flushed the moment the prompt's batch is generated: an interrupted run resumes at the first prompt
without a line, and gives the same file as an uninterrupted one. Each completion has its own random
stream, so it does not depend on which other prompts share its batch (`row_sampler`). Each prompt
is run once and its KV cache shared by its K samples. The reference samples from a dense copy of its weights
(NF4 dequantized once, its starting adapter folded in) in the decoding dtype, bf16 on a CPU that has it
(`hf_dpo.model.reference.decoding_plan`), recorded in the settings; the 4-bit model samples itself when the copy does not fit.

`run_sampling` is the whole step: sample the held-out and train prompts, label each samples file with the
recipe's judge (`labelling.label_with_judge`) and write the dataset card (`dataset_card`). The file formats
are in `formats`. Why one file over 400 lines: loading the reference, generating, and resuming all serve
`sample` and share its settings and samples file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from hf_dpo.config import DataConfig, ModelConfig, Recipe, SamplingConfig
from hf_dpo.errors import quoted, shortened
from hf_dpo.files import open_locked_for_append, why_not_writable
from hf_dpo.model.errors import ModelLoadError
from hf_dpo.model.reference import decoding_plan, dense_copy, with_adapter
from hf_dpo.pairs.dataset_card import write_dataset_card
from hf_dpo.pairs.formats import (
    Prompt,
    SamplingError,
    check_output_files,
    default_pairs_file,
    default_samples_file,
    prompt_text,
    read_jsonl,
    read_prompts,
    sampling_splits,
)
from hf_dpo.pairs.judges import load_judge
from hf_dpo.pairs.labelling import label_with_judge
from hf_dpo.pairs.row_sampler import PerRowSampler, sample_seed

logger = logging.getLogger(__name__)


def _short(text: Any, limit: int = 80) -> str:
    return shortened(prompt_text(text) if not isinstance(text, str) else text, limit)


# ---------------------------------------------------------------- the reference policy and its prompts


def format_prompt(prompt: Prompt, tokenizer, data: DataConfig) -> str:
    """The prompt text exactly as training feeds it (the data module's own function): a plain string as a
    user turn (+ system_prompt) through the chat template with the generation prompt, or raw text."""
    from hf_dpo.data import format_prompt as training_format

    return training_format(prompt, tokenizer, data)


def load_reference(model_cfg: ModelConfig):
    """(model, tokenizer) of the reference policy: the base quantized as in training, plus its starting adapter,
    as a dense copy in the decoding dtype when it fits in memory (`hf_dpo.model.reference.decoding_plan`)."""
    from hf_dpo.model.loading import load_base_model, load_tokenizer

    tokenizer = load_tokenizer(model_cfg)
    tokenizer.padding_side = "left"  # generation appends on the right
    model = load_base_model(model_cfg)
    if model_cfg.adapter_name_or_path:
        try:
            model = with_adapter(model, model_cfg.adapter_name_or_path)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"Could not load adapter '{model_cfg.adapter_name_or_path}': {err}"
            ) from None
    plan = decoding_plan(model, decoding_dtype(model_cfg))
    # without room for a dense copy, the 4-bit model samples as loaded (in its compute dtype)
    model = dense_copy(model, plan.dtype) if plan.dense else model
    model.eval()
    return model, tokenizer


def decoding_dtype(model_cfg: ModelConfig) -> torch.dtype:
    """The dtype the reference samples in (`hf_dpo.model.reference.decoding_dtype` on this machine's device)."""
    from hf_dpo.model import reference
    from hf_dpo.model.loading import pick_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return reference.decoding_dtype(device, pick_dtype(model_cfg.torch_dtype))


# ---------------------------------------------------------------- generation, resumable


# Settings recorded since samples files were first written: a row without one was made with its default.
_LATER_SETTINGS = {
    "revision": None,
    "system_prompt": None,
    "apply_chat_template": True,
    "decoding_dtype": None,
}


def _settings(model_cfg: ModelConfig, cfg: SamplingConfig, data: DataConfig | None = None) -> dict[str, Any]:
    """What determines the samples; a samples file made with other settings is not resumed into. The prompt's
    formatting (`data`: system_prompt, apply_chat_template) is part of it: the model answers the text it is
    shown, and the dataset card names one system prompt for the whole file."""
    data = data or DataConfig()
    return {
        "model": model_cfg.model_name_or_path,
        "revision": model_cfg.model_revision,
        "adapter": model_cfg.adapter_name_or_path,
        "system_prompt": data.system_prompt,
        "apply_chat_template": data.apply_chat_template,
        "quantization": model_cfg.quantization,
        "decoding_dtype": str(decoding_dtype(model_cfg)).replace("torch.", ""),
        "num_samples_per_prompt": cfg.num_samples_per_prompt,
        "temperature": cfg.sampling_temperature,
        "top_p": cfg.sampling_top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.sampling_seed,
        "marks_unfinished": True,  # rows carry "finished" flags (older files did not)
    }


def _done_indices(
    path: Path, prompts: list[Prompt], settings: dict[str, Any], repair: bool = True
) -> set[int]:
    """Prompt indices already in the samples file; checks they were made from these prompts and settings.

    A last line cut off mid-write (no trailing newline) is the trace of a killed run: it is dropped and
    that prompt is sampled again. Any other broken line stops with its line number. The file is only touched
    (the cut line dropped, a missing last newline added, in place) once every other line is known to be a
    sample of these prompts and settings: a refused file, or one that is not a samples file at all, is left as
    it was.
    """
    if not path.exists():
        return set()
    raw = path.read_bytes()
    whole = len(raw)  # bytes of complete lines
    if raw and not raw.endswith(b"\n"):
        try:
            json.loads(raw[raw.rfind(b"\n") + 1 :])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # cut inside a character too
            whole = raw.rfind(b"\n") + 1
    done = set()
    for lineno, row in read_jsonl(path, size=whole):
        index = row.get("index")
        if not isinstance(index, int) or not 0 <= index < len(prompts) or row.get("prompt") != prompts[index]:
            raise SamplingError(
                f"{path}, line {lineno}: this sample does not belong to the current prompt set (index {quoted(index)}). "
                "Point samples_file to a new file, or restore the prompts it was made from."
            )
        made = row.get("settings")
        if not isinstance(made, dict) or {**_LATER_SETTINGS, **made} != settings:
            made = {**_LATER_SETTINGS, **made} if isinstance(made, dict) else {}
            changed = ", ".join(
                f"{key} {quoted(made.get(key))} then, {quoted(value)} now"
                for key, value in settings.items()
                if made.get(key) != value
            )
            raise SamplingError(
                f"{path}, line {lineno}: made with other sampling settings than now ({changed}). Point samples_file "
                "to a new file to sample with the new settings, or set them back to resume this one."
            )
        if index in done:  # labelling refuses the file then; say so before sampling more into it
            raise SamplingError(
                f"{path}, line {lineno}: prompt index {index} appears a second time (two runs wrote this file, or "
                "lines were copied). Keep one of its lines and run again."
            )
        done.add(index)
    if not repair:  # a look only: the file may be another run's, being written (see `_hold_samples`)
        return done
    if whole < len(raw):
        logger.warning("%s: dropping a last line cut off mid-write; that prompt is sampled again.", path)
        os.truncate(path, whole)
    elif raw and not raw.endswith(b"\n"):
        with open(path, "ab") as f:  # appended, not the whole file rewritten: a kill now loses nothing
            f.write(b"\n")
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
    k = cfg.num_samples_per_prompt
    completions, finished = sample_token_ids(model, tokenizer, prompt_ids, seeds, cfg)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    return (
        [[t.strip() for t in texts[i * k : (i + 1) * k]] for i in range(len(prompt_ids))],
        [finished[i * k : (i + 1) * k] for i in range(len(prompt_ids))],
    )


@torch.inference_mode()
def sample_token_ids(
    model, tokenizer, prompt_ids: list[list[int]], seeds: list[list[int]], cfg: SamplingConfig
) -> tuple[list[list[int]], list[bool]]:
    """The token ids of the K completions of each prompt (rows prompt0 x K, prompt1 x K, ...), each up to and
    including its end token, and whether it has one (False: cut at max_new_tokens)."""
    from transformers import GenerationConfig

    from hf_dpo.model.kv_cache import preallocated_cache

    k = cfg.num_samples_per_prompt
    batch = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt").to(
        model.device
    )  # (B, T)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    # The prompt is run once and its KV cache copied K times (the K samples share it): prefill costs
    # as much as decoding here, so this halves the work. Positions as generate() computes them.
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, T)
    cache = preallocated_cache(model, ids.shape[1] + cfg.max_new_tokens)
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
    # A completion without an end token stopped at max_new_tokens: it is unfinished, however it reads.
    eos_ids = torch.tensor(sorted(_as_id_set(gen_cfg.eos_token_id)), device=new_tokens.device)  # (E,)
    is_end = torch.isin(new_tokens, eos_ids)  # (B*K, new)
    finished = is_end.any(dim=-1)  # (B*K,)
    lengths = torch.where(finished, is_end.int().argmax(dim=-1) + 1, new_tokens.shape[1])  # (B*K,)
    return [row[:n] for row, n in zip(new_tokens.tolist(), lengths.tolist())], finished.tolist()


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
    settings = _settings(recipe.model, cfg, recipe.data)
    # Held from the first look to the last line: a file that does not exist yet is made (and held) only once the
    # model is loaded, so a run failing before leaves no empty file or run dir behind.
    held = _hold_samples(samples_path) if samples_path.exists() else None
    problem = None if held else why_not_writable(samples_path.parent)  # known before the model loads
    if problem:
        raise SamplingError(
            f"samples file {samples_path} cannot be made ({problem}). Point samples_file to a directory you can "
            "write."
        )
    try:
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
        prompt_ids = _encode_prompts(prompts, model, tokenizer, recipe, str(prompts_file))
        if held is None:
            samples_path.parent.mkdir(parents=True, exist_ok=True)
            held = _hold_samples(samples_path)
            done = _done_indices(samples_path, prompts, settings)  # another run may have begun it meanwhile
            todo = [i for i in range(len(prompts)) if i not in done]
            result["resumed"] = len(done)
        if done:
            logger.info(
                "Resuming %s: %d of %d prompts already sampled.", samples_path, len(done), len(prompts)
            )
        start = time.perf_counter()
        result["sampled_now"] = _append_samples(
            samples_path, model, tokenizer, prompts, prompt_ids, todo, settings, cfg, progress
        )
        return result | {"seconds": time.perf_counter() - start}
    finally:
        if held is not None:
            held.close()


def _hold_samples(path: Path):
    """The samples file, open and locked for this run (released when closed, or when the process dies).

    Two `hf-dpo sample` runs on one file would both append the same prompts, and one would cut the other's line
    in progress, taking it for the trace of a killed run."""
    try:
        held = open_locked_for_append(path)
    except OSError as err:  # a directory, no permission: the Python API has no preflight to name it
        raise SamplingError(
            f"samples file {path} cannot be written ({err.strerror or err}). Point samples_file to a file you can "
            "write."
        ) from None
    if held is None:
        raise SamplingError(
            f"{path} is in use: another `hf-dpo sample` is writing it. Let that run finish (it resumes where it "
            "stops if interrupted), or point samples_file to another file."
        )
    return held


def _encode_prompts(prompts: list[Prompt], model, tokenizer, recipe: Recipe, where: str) -> list[list[int]]:
    """Token ids of each prompt as training formats it; DataError naming `where` (the prompts file) for one the
    chat template refuses, SamplingError for one that leaves no room to answer."""
    from hf_dpo.data import checked_prompt_token_ids

    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # generation appends on the right
    prompt_ids = checked_prompt_token_ids(prompts, tokenizer, recipe.data, where)
    _check_lengths(
        prompt_ids,
        prompts,
        recipe.sampling.max_new_tokens,
        getattr(model.config, "max_position_embeddings", None),
    )
    return prompt_ids


def _append_samples(
    samples_path: Path,
    model,
    tokenizer,
    prompts: list[Prompt],
    prompt_ids: list[list[int]],
    todo: list[int],
    settings: dict[str, Any],
    cfg: SamplingConfig,
    progress: bool,
) -> int:
    """Sample the prompts `todo` batch by batch, appending each batch's rows to the samples file and syncing
    it to disk before the next (a kill loses at most the batch in flight). Returns how many were sampled."""
    from tqdm.auto import tqdm

    samples_path.parent.mkdir(parents=True, exist_ok=True)
    done_before, sampled = len(prompts) - len(todo), 0
    try:
        with (
            open(samples_path, "a", encoding="utf-8") as out,
            tqdm(
                total=len(prompts), initial=done_before, unit="prompt", desc="sampling", disable=not progress
            ) as bar,
        ):
            for indices in _batches(todo, max(1, cfg.sampling_batch_size)):
                for row in _sample_rows(model, tokenizer, indices, prompts, prompt_ids, settings, cfg):
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                bar.update(len(indices))
                sampled += len(indices)
    except OSError as err:  # a full disk, a lost mount: what is on disk stays (a cut-off last line is redone)
        raise SamplingError(
            f"{samples_path}: could not write the samples ({err.strerror or err}). The {done_before + sampled} "
            "prompts sampled before are kept: fix the disk problem and run `hf-dpo sample` again to resume."
        ) from None
    return sampled


def _batches(todo: list[int], batch_size: int) -> list[list[int]]:
    """The prompt indices to sample, grouped by index // batch_size: aligned to prompt index, so a resumed run
    batches the remaining prompts as a full run would have."""
    batches: dict[int, list[int]] = {}
    for i in todo:
        batches.setdefault(i // batch_size, []).append(i)
    return list(batches.values())


def _sample_rows(
    model,
    tokenizer,
    indices: list[int],
    prompts: list[Prompt],
    prompt_ids: list[list[int]],
    settings: dict[str, Any],
    cfg: SamplingConfig,
) -> list[dict[str, Any]]:
    """The samples-file rows of one batch of prompts: K completions each, with their seeds and end flags."""
    k = cfg.num_samples_per_prompt
    seeds = [[sample_seed(cfg.sampling_seed, i, j) for j in range(k)] for i in indices]
    completions, finished = generate_batch(model, tokenizer, [prompt_ids[i] for i in indices], seeds, cfg)
    return [
        {
            "index": i,
            "prompt": prompts[i],
            "completions": comps,
            "finished": done_flags,
            "seed": row_seeds[0],
            "settings": settings,
        }
        for i, comps, done_flags, row_seeds in zip(indices, completions, finished, seeds)
    ]


# ---------------------------------------------------------------- the whole step


def run_sampling(recipe: Recipe, progress: bool = True, *, outputs_checked: bool = False) -> dict[str, Any]:
    """`hf-dpo sample`: sample train (and held-out) prompts; label with the recipe's judge; write the card.
    (`hf-dpo sample` runs `hf_dpo.preflight.preflight_sampling` before this.)

    outputs_checked: the caller ran `check_output_files` on this recipe already (the CLI's preflight does);
    otherwise it runs here, before any model loads."""
    cfg = recipe.sampling
    splits = sampling_splits(recipe)  # held-out first: the splits whose output files the preflight checked
    if not outputs_checked:  # Python-API callers without the preflight: nothing is sampled over other data
        check_output_files(recipe, list(splits))
    judge = (
        load_judge(recipe.report.judge) if recipe.report.judge is not None else None
    )  # fail on a bad (or empty) judge before sampling for minutes
    model_and_tokenizer = None
    report: dict[str, Any] = {"splits": {}}
    # Every split's samples file is checked before any is sampled: a train file made with other settings would
    # otherwise be named only after the held-out split had been sampled (minutes).
    settings = _settings(recipe.model, cfg, recipe.data)
    needs_model = {}
    for split, prompts_file in splits.items():
        if default_samples_file(
            recipe, split
        ).exists():  # another run writing it: said before the model loads
            _hold_samples(default_samples_file(recipe, split)).close()
        prompts = read_prompts(prompts_file, recipe.data.prompt_column) if prompts_file else None
        done = (
            _done_indices(default_samples_file(recipe, split), prompts, settings, repair=False)
            if prompts
            else ()
        )
        needs_model[split] = prompts is not None and len(done) < len(prompts)
    for split, prompts_file in splits.items():
        samples_path = default_samples_file(recipe, split)
        if needs_model[split] and model_and_tokenizer is None:
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
            report["notes"] = [_timing_note(report["splits"])]
            report["card"] = str(write_dataset_card(default_pairs_file(recipe).parent, recipe, report))
    return report


def _timing_note(splits: dict[str, Any]) -> str:
    return (
        "Sampling time of the last `hf-dpo sample` run: "
        + ", ".join(
            f"{name} {st['sampled_now']} prompts in {st['seconds']:.0f} s" for name, st in splits.items()
        )
        + "."
    )
