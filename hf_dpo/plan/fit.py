"""`hf-dpo plan`: a recipe's estimated peak memory against the memory there is, and if it does not fit, the
settings to turn (one knob at a time, cheapest in quality and speed first, else combined).

    hf-dpo plan recipes/zephyr-7b-qlora.yaml --gpu-memory 24GB
    plan = plan_recipe(load_recipe("recipes/demo.yaml"), device="cpu")
    print(plan.report("recipes/demo.yaml"))

The terms of the estimate: `hf_dpo.plan.estimate`; the recipe's knobs: `hf_dpo.plan.settings`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

from hf_dpo.config import Recipe
from hf_dpo.errors import quoted
from hf_dpo.plan.arch import Arch, PlanError, load_arch
from hf_dpo.plan.estimate import (
    GB,
    MB,
    Term,
    dense_copy_fits,
    fmt,
    full_finetune_estimate,
    step_estimate,
)
from hf_dpo.plan.settings import Settings, data_row_length, settings_from_recipe

# How far measured peaks have run above the estimate (README, "On a GPU"): the demo recipe on an H100 peaked 21%
# above its plan (max_memory_allocated), on CPU 11% (RSS). The plan prints the estimate with it.
MEASURED_UNDERESTIMATE = {"cuda": 0.21, "cpu": 0.11}


@dataclass
class Suggestion:
    changes: dict[str, object]  # recipe key -> new value
    total: int
    why: str

    def overrides(self) -> str:
        return " ".join(
            f"--{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in self.changes.items()
        )


@dataclass
class Plan:
    arch: Arch
    settings: Settings
    terms: list[Term]
    budget: int
    suggestions: list[Suggestion] = field(default_factory=list)
    full_finetune: list[Term] = field(default_factory=list)  # the same step training every weight

    @property
    def total(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def fits(self) -> bool:
        return self.total <= self.budget

    @property
    def peak_allocated(self) -> int:
        """The part comparable to `torch.cuda.max_memory_allocated` (GPU) or to the RSS (CPU: everything)."""
        skip = ("CUDA allocator slack", "CUDA context")
        return sum(t.bytes for t in self.terms if t.name not in skip)

    def report(self, recipe_path: str | None = None) -> str:
        s = self.settings
        where = "GPU" if s.device == "cuda" else "CPU (process RSS)"
        lines = [
            f"Memory plan for {recipe_path or 'recipe'} on {where}, {fmt(self.budget)} available",
            f"  model: {self.arch.source}: {self.arch.num_hidden_layers} layers, hidden {self.arch.hidden_size}, "
            f"{self.arch.num_attention_heads}/{self.arch.num_key_value_heads} heads (q/kv), MLP {self.arch.intermediate_size}, "
            f"vocab {self.arch.vocab_size}{', tied embeddings' if self.arch.tie_word_embeddings else ''}",
            f"  step: {s.batch_size} pairs, rows of {s.row_length} tokens"
            + (
                " (longest pair in the data)"
                if s.data_row_length
                else f" (worst case for max_length {s.max_length})"
                if not s.uncut
                else f" (max_length: null cuts no pair, so rows are as long as the data's: planned at {s.max_length}; "
                "set max_length to bound them)"
            )
            + f" x 2 (chosen, rejected) = {s.tokens} tokens per forward"
            + (" (prefix sharing, if on at run time, only lowers this)" if s.prefix_sharing else "")
            + f", compute {'bf16/fp16' if s.compute_bytes == 2 else 'float32'}"
            + (" with autocast" if s.autocast else ""),
            "  trains: every weight, a full fine-tune (use_peft: false)"
            + (
                "; the reference is the frozen ref_model_name_or_path"
                if s.ref_model
                else "; the reference is a frozen copy of the model"
                if s.reference_copy
                else "; the reference log-probs are computed once before the first step: no second model"
            )
            if s.full_finetune
            else f"  trains: a LoRA adapter (r={s.lora_r}) on the {s.quantization} base (use_peft: true)",
        ]
        width = max(len(t.name) for t in self.terms)
        lines += [f"  {t.name:<{width}}  {fmt(t.bytes):>9}  {t.note}" for t in self.terms]
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(
            f"  {'estimated peak':<{width}}  {fmt(self.total):>9}  -> {verdict} in {fmt(self.budget)}"
        )
        low = MEASURED_UNDERESTIMATE[s.device]
        with_margin = self.total * (1 + low)
        lines.append(
            f"  {'with margin':<{width}}  {fmt(with_margin):>9}  measured peaks ran up to {low:.0%} above this "
            f"estimate on {'a GPU' if s.device == 'cuda' else 'CPU'}: "
            + ("keep that margin free" if with_margin <= self.budget else f"more than {fmt(self.budget)}")
        )
        if self.full_finetune:
            full = sum(t.bytes for t in self.full_finetune)
            parts = ", ".join(f"{t.name} {fmt(t.bytes)}" for t in self.full_finetune[:5] if t.bytes)
            lines.append(
                f"  Full fine-tune of this model instead (every weight trained, no LoRA): {fmt(full)} "
                f"({'fits' if full <= self.budget else 'does NOT fit'}; {parts})"
            )
        if not self.fits:
            if self.suggestions:
                lines.append("To fit, turn one of these (estimate after the change):")
                lines += [
                    f"  {sug.overrides():<60} {fmt(sug.total):>9}  {sug.why}" for sug in self.suggestions
                ]
            else:
                lines.append(
                    "No setting of batch, length, checkpointing, rank or quantization fits; use more GPUs "
                    "(recipes/accelerate/fsdp_qlora.yaml) or a smaller model."
                )
        return "\n".join(lines)


def parse_size(text: str, what: str = "memory size") -> int:
    """'24GB', '16 GiB', '24' (GB), '8000MB', '0.5TB' -> bytes (GB and GiB both mean 2**30, as nvidia-smi shows
    cards); a bare 'B' is bytes. `what` names the value in errors (the CLI passes its option)."""
    # The sign is read so that '-5GB' gets "must be positive", not "is not like 24GB"; a unit letter (k/m/g/t)
    # may be followed by i and b, a lone b is bytes, no unit at all is GB.
    match = re.fullmatch(r"\s*([+-]?[\d.]+)\s*(?:([kmgt])i?b?|(b))?\s*", str(text).lower())
    if not match:
        raise PlanError(f"{what} {quoted(text)} is not like 24GB, 16GiB or 8000MB.")
    try:
        value = float(match.group(1))
    except ValueError:  # "1.2.3GB", "."
        raise PlanError(f"{what} {quoted(text)} is not like 24GB, 16GiB or 8000MB.") from None
    unit = match.group(2) or match.group(3) or "g"
    size = int(value * 1024 ** "bkmgt".index(unit))
    if size <= 0:  # nothing fits in 0 bytes: a plan that says so would only hide the typo
        raise PlanError(f"{what} {quoted(text)} must be positive, e.g. 24GB.")
    if size < MB:  # no model trains in less
        if unit in "bkm":  # the unit is a typo, most likely a B for GB
            raise PlanError(
                f"{what} {quoted(text)} is {size} bytes; did you mean {match.group(1).lstrip('+')}GB?"
            )
        raise PlanError(f"{what} {quoted(text)} is {size} bytes, less than 1 MB; give it like 24GB.")
    return size


def _candidates(s: Settings) -> list[tuple[dict, Settings, str]]:
    """Single-knob changes, cheapest in quality/speed first."""
    out = []
    if not s.gradient_checkpointing:
        out.append(
            (
                {"gradient_checkpointing": True},
                dataclasses.replace(s, gradient_checkpointing=True),
                "~30% slower steps, same result",
            )
        )
    b = s.batch_size
    while b > 1:
        b //= 2
        accum = s.gradient_accumulation_steps * s.batch_size // b
        out.append(
            (
                {"per_device_train_batch_size": b, "gradient_accumulation_steps": accum},
                dataclasses.replace(s, batch_size=b, gradient_accumulation_steps=accum),
                "same effective batch, more steps",
            )
        )
    for frac in (0.75, 0.5, 0.25):
        length = (
            int(s.row_length * frac) // 64 * 64
        )  # of the rows planned (uncut data may be over max_length)
        if 64 <= length < s.row_length:
            changes: dict[str, object] = {"max_length": length}
            prompt = s.max_prompt_length  # 0: not set, and left unset (prompts kept whole)
            if prompt:  # set: it stays below max_length (hf_dpo.validate.BELOW), at most half of it
                prompt = changes["max_prompt_length"] = min(prompt, length // 2)
            out.append(
                (
                    changes,
                    dataclasses.replace(
                        s, max_length=length, max_prompt_length=prompt, data_row_length=None, uncut=False
                    ),
                    "truncates longer pairs",
                )
            )
    if s.full_finetune:
        out.append(
            (
                {"use_peft": True, "quantization": "4bit"},
                dataclasses.replace(s, full_finetune=False, quantization="4bit"),
                "a LoRA adapter on an NF4 base (QLoRA) instead of every weight",
            )
        )
        return out
    if s.lora_r > 8:
        out.append(
            ({"lora_r": s.lora_r // 2}, dataclasses.replace(s, lora_r=s.lora_r // 2), "less adapter capacity")
        )
    if s.quantization != "4bit":
        out.append(
            ({"quantization": "4bit"}, dataclasses.replace(s, quantization="4bit"), "NF4 base (QLoRA)")
        )
    return out


def suggest(arch: Arch, s: Settings, budget: int) -> list[Suggestion]:
    """Single changes that fit; if none does, changes combined in order (checkpointing, batch, length, rank,
    quantization) until it fits."""

    def total(x: Settings) -> int:
        return sum(t.bytes for t in step_estimate(arch, x))

    fitting = []
    for changes, changed, why in _candidates(s):
        if total(changed) <= budget and not any(set(changes) == set(f.changes) for f in fitting):
            fitting.append(Suggestion(changes, total(changed), why))
    if fitting:
        return fitting[:4]
    combined, current = {}, s
    for _ in range(12):
        options = _candidates(current)
        if not options:
            break
        # the first knob in order of cost to quality and speed that still lowers the estimate
        now = total(current)
        changes, current, _ = next((o for o in options if total(o[1]) < now), options[0])
        combined.update(changes)
        if total(current) <= budget:
            return [Suggestion(combined, total(current), "combined")]
    return []


def plan_recipe(
    recipe: Recipe,
    device: str = "cuda",
    memory: int | None = None,
    arch: Arch | None = None,
    use_data: bool = True,
) -> Plan:
    """Plan a recipe's peak memory against `memory` bytes (default: 24 GB GPU, or this machine's RAM on CPU).

    With `use_data` and a local dataset + tokenizer, batch rows are as long as the longest tokenized pair;
    otherwise as long as max_length allows (the worst case).
    """
    if device not in ("cuda", "cpu"):
        raise PlanError(f"device '{device}' is not cuda or cpu.")
    arch = arch or load_arch(
        recipe.model.model_name_or_path, recipe.model.model_revision, recipe.model.trust_remote_code
    )
    settings = settings_from_recipe(recipe, device)
    if use_data:
        settings.data_row_length = data_row_length(recipe)
    if memory is None:
        memory = 24 * GB if device == "cuda" else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    settings.dense_base = dense_copy_fits(arch, settings, memory)
    plan = Plan(arch=arch, settings=settings, terms=step_estimate(arch, settings), budget=memory)
    if not settings.full_finetune:  # the same step training every weight, priced beside the adapter's
        plan.full_finetune = full_finetune_estimate(arch, settings, settings.reference_copy)
    if not plan.fits:
        plan.suggestions = suggest(arch, settings, memory)
    return plan
