"""`hf-dpo plan`: the peak memory of a recipe's training run, estimated before anything is downloaded.

    hf-dpo plan recipes/zephyr-7b-qlora.yaml --gpu-memory 24GB
    plan = plan_recipe(load_recipe("recipes/demo.yaml"), device="cpu")

The estimate is built from the model's architecture (hidden size, layers, heads, KV heads, MLP width,
vocabulary, tied embeddings) and the recipe's knobs, term by term:

- base weights: NF4 (0.5 byte/param + 1/64 byte of absmax per 64-block, itself quantized with double
  quant) or 8-bit or 16/32-bit for every decoder linear; embeddings, norms and an untied lm_head stay
  unquantized: `prepare_model_for_kbit_training` upcasts them to float32, and hf_dpo casts the embeddings and
  lm_head back to a bf16/fp16 compute dtype (`float32_embeddings: false`, the default; norms stay float32);
- LoRA: r x (in + out) per adapted linear, in float32, plus its gradient and AdamW's two moments;
- activations kept for the backward pass, per token per layer, counted from the tensors autograd saves in
  a Llama-style layer with LoRA on a 4-bit base (checked with `saved_tensors_hooks`, tests/test_plan.py);
  with gradient checkpointing only each layer's input plus one layer being recomputed;
- logits: the (tokens x vocab) tensor and its backward transients, or a chunk of it with `logps_chunk_size`;
- on GPU, the CUDA context and allocator slack; on CPU, the process baseline (Python + torch + the HF stack)
  and glibc's heap growth, both measured on this project's CPU runs.

A DPO step runs chosen and rejected as 2 x per_device_train_batch_size rows, as long as the longest pair
of a local dataset or, without data, max_length (prefix sharing only ever shortens this, and the trainer may
turn it off at run time). Reference log-probs come from the same network with adapters off, under no_grad:
a transient, chunked logits tensor and no second model.

Why one file of ~550 lines: the terms above share the `Settings` of one recipe and each is a few lines of
arithmetic; split, the reader would chase one sum across modules. `hf_dpo.plan.arch` reads the architecture.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hf_dpo.config import Recipe
from hf_dpo.errors import HfDpoError
from hf_dpo.plan.arch import Arch, PlanError, load_arch

logger = logging.getLogger(__name__)

GB = 1024**3
MB = 1024**2
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# GPU: what a process holds beyond torch's allocations (CUDA context, cuBLAS workspace), and the share of
# reserved-but-unallocated memory the caching allocator typically adds at peak.
CUDA_CONTEXT_BYTES = int(0.6 * GB)
CUDA_ALLOCATOR_SLACK = 0.10
# CPU (the process RSS, which is what runs out on a laptop), measured with real `hf-dpo train` runs of
# SmolLM2-135M 4-bit on this project's 2-core machine (RSS sampled every 20 ms; numbers in the issue note):
# - 480 MB after importing torch, transformers, peft, datasets, accelerate, bitsandbytes and hf_dpo.run;
# - after loading, the RSS stays above the model's own size by 0.9-1.6x the checkpoint read (safetensors
#   pages and freed load buffers that glibc keeps; it varied between identical runs): 1.25x is planned;
# - per token, the RSS grew by 1.55x the tensors autograd saves + the logits (backward transients and
#   glibc's free lists), at 512 and 1024 tokens per step alike.
CPU_BASELINE_BYTES = int(480 * MB)
CPU_LOAD_RESIDUE = 1.25
CPU_HEAP_SLACK = 0.55


# ----------------------------------------------------------------------------- the settings that matter


@dataclass
class Settings:
    """The knobs of a recipe that change peak memory; `plan` varies these to find a setting that fits."""

    device: str  # "cuda" or "cpu"
    batch_size: int  # pairs per device per step
    max_length: int
    max_prompt_length: int
    gradient_checkpointing: bool
    lora_r: int
    lora_targets: tuple[str, ...]
    lora_dropout: float
    quantization: str  # 4bit, 8bit, none
    double_quant: bool
    compute_bytes: int  # 2 (bf16/fp16) or 4 (float32)
    autocast: bool  # matmuls run in half precision under autocast (bf16/fp16 training on GPU)
    optimizer_state_bytes: int  # per trainable param: 8 for AdamW, 2 for 8-bit AdamW, 0 for SGD
    eager_attention: bool = False
    prefix_sharing: bool = False
    logps_chunk_size: int | None = None
    gradient_accumulation_steps: int = 1
    data_row_length: int | None = None  # longest batch row measured on the recipe's data (None: worst case)
    # gradient_checkpointing_kwargs every_n_layers: checkpoint every n-th decoder layer only
    checkpoint_every: int = 1
    float32_embeddings: bool = False  # k-bit: embeddings and lm_head left in peft's float32 upcast
    sharing_attention: str = "auto"  # prefix_sharing_attention: on CUDA auto means a FlexAttention block mask
    uncut: bool = (
        False  # max_length: null: no pair is cut, and max_length is only the length planned without data
    )

    @property
    def quantized(self) -> bool:
        return self.quantization in ("4bit", "8bit")

    @property
    def row_length(self) -> int:
        """Width of a [prompt, answer] row (batches pad to their longest): the longest pair in the data when
        known (uncut by max_length: null, however long), else max_length."""
        if not self.data_row_length:
            return self.max_length
        return self.data_row_length if self.uncut else min(self.data_row_length, self.max_length)

    @property
    def tokens(self) -> int:
        """Token positions in one forward pass, planned as chosen + rejected rows (2B rows). Prefix sharing
        packs a pair into one shorter row when the attention kernel takes its 4D mask, but the trainer checks
        that at run time and falls back to these rows when it does not, so the plan does not count on it."""
        return 2 * self.batch_size * self.row_length


def _targets(targets: list[str] | str) -> tuple[str, ...]:
    names = [targets] if isinstance(targets, str) else list(targets)
    if "all-linear" in names:
        return LINEAR_NAMES
    unknown = [n for n in names if n not in LINEAR_NAMES]
    if unknown:
        logger.warning("plan: LoRA targets %s are not Llama-style linears; counted as none.", unknown)
    return tuple(n for n in LINEAR_NAMES if n in names)


def settings_from_recipe(recipe: Recipe, device: str = "cuda") -> Settings:
    m, t = recipe.model, recipe.training
    if device == "cuda":
        compute = {"float32": 4}.get(m.torch_dtype, 2)
        autocast = compute == 2
    else:  # CPU: float32 unless the recipe forces a half dtype (slow on CPUs without bf16)
        compute = {"bfloat16": 2, "float16": 2}.get(m.torch_dtype, 4)
        autocast = bool(t.bf16 or t.fp16)
    optim = str(getattr(t.optim, "value", t.optim))
    return Settings(
        device=device,
        batch_size=t.per_device_train_batch_size,
        max_length=t.max_length or 1024,
        max_prompt_length=min(t.max_prompt_length or 0, t.max_length or 1024),
        uncut=t.max_length is None,
        gradient_checkpointing=bool(t.gradient_checkpointing),
        lora_r=m.lora_r,
        lora_targets=_targets(m.lora_target_modules),
        lora_dropout=m.lora_dropout,
        quantization=m.quantization if m.quantization in ("4bit", "8bit") else "none",
        double_quant=m.bnb_4bit_use_double_quant,
        compute_bytes=compute,
        autocast=autocast,
        optimizer_state_bytes=2 if "8bit" in optim else 0 if optim.startswith("sgd") else 8,
        eager_attention=m.attn_implementation == "eager",
        prefix_sharing=bool(getattr(t, "prefix_sharing", False)),
        logps_chunk_size=getattr(t, "logps_chunk_size", None) or None,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        checkpoint_every=max(1, int((t.gradient_checkpointing_kwargs or {}).get("every_n_layers", 1))),
        float32_embeddings=m.float32_embeddings,
        sharing_attention=t.prefix_sharing_attention,
    )


# ----------------------------------------------------------------------------- the estimate, term by term


@dataclass
class Term:
    name: str
    bytes: int
    note: str = ""


def weight_bytes(arch: Arch, s: Settings) -> tuple[int, int]:
    """(quantized decoder linears, everything else) in bytes, as the model sits in memory for training."""
    n_linear = arch.num_hidden_layers * sum(i * o for i, o in arch.linear_shapes().values())
    if s.quantization == "4bit":
        # NF4 packs two weights per byte; each 64-weight block has an absmax, stored as one byte with double
        # quant (plus a float32 scale per 256 blocks) or as a float32 without it.
        absmax = n_linear / 64 * 1 + n_linear / (64 * 256) * 4 if s.double_quant else n_linear / 64 * 4
        linear = n_linear / 2 + absmax
    elif s.quantization == "8bit":
        linear = n_linear + arch.num_hidden_layers * sum(o for _, o in arch.linear_shapes().values()) * 4
    else:
        linear = n_linear * s.compute_bytes
    embeddings = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    norms = arch.num_hidden_layers * (2 * arch.hidden_size + arch.qkv_bias) + arch.hidden_size
    if not s.quantized:
        return int(linear), (embeddings + norms) * s.compute_bytes
    # prepare_model_for_kbit_training upcasts every non-quantized parameter to float32; hf_dpo casts the
    # embeddings and lm_head back to the compute dtype (hf_dpo.model.loading.embeddings_in_compute_dtype).
    return int(linear), embeddings * embedding_bytes(s) + norms * 4


def embedding_bytes(s: Settings) -> int:
    """Bytes per embedding / lm_head weight as training holds them."""
    return 4 if s.quantized and s.float32_embeddings else s.compute_bytes


def _other_weights_note(s: Settings) -> str:
    if not s.quantized:
        return ""
    if embedding_bytes(s) == 4:
        return "float32 (upcast for k-bit training)"
    return "embeddings, lm_head in the compute dtype; norms float32"


def lora_params(arch: Arch, s: Settings) -> int:
    shapes = arch.linear_shapes()
    return arch.num_hidden_layers * sum(s.lora_r * (shapes[n][0] + shapes[n][1]) for n in s.lora_targets)


def _matmul_out_bytes(s: Settings) -> int:
    """Bytes per element of tensors that come out of matmuls (attention inputs, MLP activations)."""
    if s.autocast:
        return 2
    return 4 if s.quantized else s.compute_bytes


def layer_activation_bytes_per_token(arch: Arch, s: Settings, seq_len: int) -> int:
    """Bytes autograd keeps per token for one decoder layer (no checkpointing).

    Counted from the tensors a Llama layer with LoRA saves for backward (tests check this against
    `torch.autograd.graph.saved_tensors_hooks` on a real 4-bit model):
    - 2 RMSNorms: the float32 input (RMSNorm upcasts; the residual stream is float32 anyway once
      prepare_model_for_kbit_training upcast the embeddings) and one float per token (1/rms);
    - each LoRA linear with input width d: dropout mask (bool on GPU, input dtype on CPU), lora_A's input
      (the dropout output, or the half-precision cast of it under autocast), lora_B's input (r);
      the frozen base matmul saves nothing: its weight needs no gradient;
    - attention (SDPA/flash): q, k, v, output and a float logsumexp per head; eager attention adds the
      (heads x seq) probabilities and their dropout;
    - MLP: gate output, SiLU output, up output (i each), in the dtype the 4-bit matmul returns (its input's).
    """
    h, i, r = arch.hidden_size, arch.intermediate_size, s.lora_r
    q = arch.num_attention_heads * arch.head_dim
    kv = arch.num_key_value_heads * arch.head_dim
    mm = _matmul_out_bytes(s)
    lora_in = 2 if s.autocast else 4
    mask = (1 if s.device == "cuda" else 4) if s.lora_dropout > 0 else 0
    norms = 2 * (4 * h + 4)  # float32 input (or its float32 upcast) + 1/rms; the frozen weight needs nothing
    widths = {n: arch.linear_shapes()[n][0] for n in s.lora_targets}
    if s.lora_dropout > 0 or s.autocast:
        lora = sum(d * (mask + lora_in) + r * lora_in for d in widths.values())
    else:  # no dropout, no cast: adapters that read the same input share it (q/k/v, gate/up), and o_proj reads
        # a view of the attention output, which attention already keeps
        groups = {
            (
                "qkv" if n in ("q_proj", "k_proj", "v_proj") else "gu" if n in ("gate_proj", "up_proj") else n
            ): d
            for n, d in widths.items()
            if n != "o_proj"
        }
        lora = sum(d * 4 for d in groups.values()) + len(widths) * r * 4
    attention = mm * (2 * q + 2 * kv) + 4 * arch.num_attention_heads
    if s.eager_attention:
        attention += 2 * arch.num_attention_heads * seq_len * mm
    mlp_bytes = 4 if s.quantized else mm
    mlp = 3 * i * mlp_bytes
    return norms + lora + attention + mlp


def activation_bytes(arch: Arch, s: Settings) -> int:
    per_layer = layer_activation_bytes_per_token(arch, s, s.row_length) * s.tokens
    if not s.gradient_checkpointing:
        return arch.num_hidden_layers * per_layer
    residual = 4 if (s.quantized or s.compute_bytes == 4) else s.compute_bytes
    layer_input = s.tokens * arch.hidden_size * residual
    # Checkpointed layers (every n-th from the first, transformers' every_n_layers) keep only their input; the
    # others keep all their activations. Peak: the end of the forward, or the backward of a checkpointed layer,
    # which recomputes its activations while the layers below it still hold theirs.
    held = peak = 0  # bytes kept by the layers below the current one
    for layer in range(arch.num_hidden_layers):
        if layer % s.checkpoint_every == 0:
            peak = max(peak, held + per_layer)  # its recomputed activations include (share) its input
            held += layer_input
        else:
            held += per_layer
    return max(peak, held)


def logits_bytes(arch: Arch, s: Settings) -> tuple[int, str]:
    """Vocabulary-sized tensors alive at the peak.

    Full logits (logps_chunk_size off): the logits kept for backward plus two same-sized transients (softmax
    gradient and the gather's scatter, float32; in half precision the float32 log-softmax rows that
    hf_dpo.train.loss.selective_log_softmax keeps plus the half gradient). Chunked (hf_dpo.train.loss.chunked_label_logps):
    one chunk's float32 logits and softmax, plus the gathered hidden states and their gradient (tokens x hidden).
    """
    if s.logps_chunk_size:
        chunk = min(s.tokens, s.logps_chunk_size)
        total = chunk * arch.vocab_size * 8 + s.tokens * arch.hidden_size * 8
        return total, f"chunks of {chunk} positions x {arch.vocab_size} vocab (logps_chunk_size)"
    per_element = 8 if s.autocast else 12
    return (
        s.tokens * arch.vocab_size * per_element,
        f"{s.tokens} positions x {arch.vocab_size} vocab x {per_element} B",
    )


def attention_mask_bytes(s: Settings) -> tuple[int, str]:
    """Prefix sharing's dense (B, 1, T, T) additive mask in the compute dtype (hf_dpo.train.batching); none on
    CUDA, where `prefix_sharing_attention: auto` carries the mask as a FlexAttention block mask (a few KB)."""
    if not s.prefix_sharing:
        return 0, "off"
    if s.device == "cuda" and s.sharing_attention != "mask4d":
        return 0, "prefix sharing: FlexAttention block mask (no dense mask)"
    return s.batch_size * (
        2 * s.row_length
    ) ** 2 * s.compute_bytes, "prefix sharing: (B, 1, T, T), rows up to 2 x the plain row"


def estimate(arch: Arch, s: Settings) -> list[Term]:
    """Peak memory of one training step, as named terms (bytes)."""
    linear, other = weight_bytes(arch, s)
    n_lora = lora_params(arch, s)
    logits, logits_note = logits_bytes(arch, s)
    biggest = max(i * o for i, o in arch.linear_shapes().values())
    gc = "with gradient checkpointing" if s.gradient_checkpointing else "without gradient checkpointing"
    if s.gradient_checkpointing and s.checkpoint_every > 1:
        gc = f"gradient checkpointing on 1 layer in {s.checkpoint_every}"
    terms = [
        Term(
            "base weights (decoder linears)",
            linear,
            f"{s.quantization}" + (" + double quant" if s.quantization == "4bit" and s.double_quant else ""),
        ),
        Term("base weights (embeddings, norms)", other, _other_weights_note(s)),
        Term(
            "LoRA params + grads + optimizer",
            n_lora * (4 + 4 + s.optimizer_state_bytes),
            f"{n_lora / 1e6:.2f} M params, r={s.lora_r}, {4 + 4 + s.optimizer_state_bytes} B/param",
        ),
        Term("activations", activation_bytes(arch, s), f"{s.tokens} tokens/step, {gc}"),
        Term("logits", logits, logits_note),
        Term("4D attention mask", *attention_mask_bytes(s)),
        # The 4-bit matmul dequantizes one weight at a time; its gradient w.r.t. the input needs it again.
        Term(
            "working set",
            biggest * s.compute_bytes * 2 if s.quantized else biggest * s.compute_bytes,
            "largest dequantized weight, forward + backward",
        ),
        Term("reference log-probs", 0, "adapters off, no grad: no second model; its logits are in 'logits'"),
    ]
    return terms + device_terms(arch, s, sum(t.bytes for t in terms), activation_bytes(arch, s) + logits)


def device_terms(arch: Arch, s: Settings, allocated: int, heap: int) -> list[Term]:
    """What the device adds around the tensors: the CUDA allocator and context, or on CPU glibc's heap growth
    over `heap` (activations + logits), the checkpoint read at load and the process baseline."""
    if s.device == "cuda":
        return [
            Term("CUDA allocator slack", int(allocated * CUDA_ALLOCATOR_SLACK), "reserved but unallocated"),
            Term(
                "CUDA context", CUDA_CONTEXT_BYTES, "context, cuBLAS workspace; not in max_memory_allocated"
            ),
        ]
    checkpoint = arch.checkpoint_bytes or arch.num_params * 2  # Hub checkpoints are mostly bf16
    return [
        Term(
            "backward transients + glibc",
            int(heap * CPU_HEAP_SLACK),
            f"{CPU_HEAP_SLACK:.2f} x (activations + logits), measured",
        ),
        Term(
            "checkpoint read at load",
            int(checkpoint * CPU_LOAD_RESIDUE),
            f"{CPU_LOAD_RESIDUE} x the weight files read once; the RSS keeps them",
        ),
        Term("process baseline", CPU_BASELINE_BYTES, "Python + torch + the HF stack, imported"),
    ]


# ----------------------------------------------------------------------------- fits? and what to turn if not


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
        ]
        width = max(len(t.name) for t in self.terms)
        lines += [f"  {t.name:<{width}}  {fmt(t.bytes):>9}  {t.note}" for t in self.terms]
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(
            f"  {'estimated peak':<{width}}  {fmt(self.total):>9}  -> {verdict} in {fmt(self.budget)}"
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


def fmt(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


def parse_size(text: str, what: str = "memory size") -> int:
    """'24GB', '16 GiB', '24' (GB), '8000MB', '0.5TB' -> bytes (GB and GiB both mean 2**30, as nvidia-smi shows
    cards); a bare 'B' is bytes. `what` names the value in errors (the CLI passes its option)."""
    # The sign is read so that '-5GB' gets "must be positive", not "is not like 24GB"; a unit letter (k/m/g/t)
    # may be followed by i and b, a lone b is bytes, no unit at all is GB.
    match = re.fullmatch(r"\s*([+-]?[\d.]+)\s*(?:([kmgt])i?b?|(b))?\s*", str(text).lower())
    if not match:
        raise PlanError(f"{what} '{text}' is not like 24GB, 16GiB or 8000MB.")
    try:
        value = float(match.group(1))
    except ValueError:  # "1.2.3GB", "."
        raise PlanError(f"{what} '{text}' is not like 24GB, 16GiB or 8000MB.") from None
    unit = match.group(2) or match.group(3) or "g"
    size = int(value * 1024 ** "bkmgt".index(unit))
    if size <= 0:  # nothing fits in 0 bytes: a plan that says so would only hide the typo
        raise PlanError(f"{what} '{text}' must be positive, e.g. 24GB.")
    if size < MB:  # no model trains in less
        if unit in "bkm":  # the unit is a typo, most likely a B for GB
            raise PlanError(f"{what} '{text}' is {size} bytes; did you mean {match.group(1).lstrip('+')}GB?")
        raise PlanError(f"{what} '{text}' is {size} bytes, less than 1 MB; give it like 24GB.")
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
        return sum(t.bytes for t in estimate(arch, x))

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


def data_row_length(recipe: Recipe) -> int | None:
    """The longest batch row of the recipe's training pairs, when its dataset and tokenizer are local files
    (tokenizes the data as training would); None when either would need the Hub."""
    from hf_dpo.model.loading import MODEL_ALIASES

    model, data = recipe.model.model_name_or_path, recipe.data.dataset_name
    if not data or not Path(data).exists():
        return None
    if model.lower() not in MODEL_ALIASES and not Path(model).is_dir():
        return None
    from hf_dpo.data import load_preference_dataset
    from hf_dpo.model.loading import load_tokenizer
    from hf_dpo.train.batching import pair_lengths

    try:
        tokenizer = load_tokenizer(recipe.model)
    except HfDpoError:
        raise
    except (OSError, ValueError) as err:  # a model directory without tokenizer files, or broken ones
        reason = " ".join(str(err).split())  # transformers' messages span lines; the error is one line
        raise PlanError(
            f"key 'model_name_or_path': its tokenizer cannot be loaded to measure the data's rows ({reason}). "
            "Give a model directory with its tokenizer files, or a Hub id."
        ) from None
    train = load_preference_dataset(recipe.data, tokenizer, recipe.training).train
    return max(pair_lengths(train, prefix_sharing=False))


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
    plan = Plan(arch=arch, settings=settings, terms=estimate(arch, settings), budget=memory)
    if not plan.fits:
        plan.suggestions = suggest(arch, settings, memory)
    return plan
