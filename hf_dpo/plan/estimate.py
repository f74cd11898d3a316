"""The peak memory of a recipe's training run, term by term, estimated before anything is downloaded.

    terms = estimate(load_arch("HuggingFaceTB/SmolLM2-135M-Instruct"), settings_from_recipe(recipe, "cuda"))
    sum(t.bytes for t in terms)                    # the planned peak; `hf-dpo plan` is hf_dpo.plan.fit
    step_estimate(arch, settings)                  # estimate, or full_finetune_estimate for use_peft: false

The estimate is built from the model's architecture (hidden size, layers, heads, KV heads, MLP width,
vocabulary, tied embeddings) and the recipe's knobs, term by term:

- base weights: NF4 (0.5 byte/param + 1/64 byte of absmax per 64-block, itself quantized with double
  quant) or 8-bit or 16/32-bit for every decoder linear; embeddings, norms and an untied lm_head stay
  unquantized: `prepare_model_for_kbit_training` upcasts them to float32, and hf_dpo casts the embeddings and
  lm_head back to a bf16/fp16 compute dtype (`float32_embeddings: false`, the default; norms stay float32);
- LoRA: r x (in + out) per adapted linear, in float32, plus its gradient and AdamW's two moments;
- activations kept for the backward pass, per token per layer, counted from the tensors autograd saves in
  a Llama-style layer with LoRA on a 4-bit base (checked with `saved_tensors_hooks`, tests/plan/test_plan.py);
  with gradient checkpointing only each layer's input plus one layer being recomputed;
- logits: the (tokens x vocab) tensor and its backward transients, or a chunk of it with `logps_chunk_size`;
- on GPU, the CUDA context and allocator slack; on CPU, the process baseline (Python + torch + the HF stack)
  and glibc's heap growth, both measured on this project's CPU runs.

A DPO step runs chosen and rejected as 2 x per_device_train_batch_size rows, as long as the longest pair
of a local dataset or, without data, max_length (prefix sharing only ever shortens this, and the trainer may
turn it off at run time). Reference log-probs come from the same network with adapters off, under no_grad:
a transient, chunked logits tensor and no second model. Beside it, the plan prices the same step training
every weight (`full_finetune_estimate`): weights, gradients and optimizer states in the compute dtype, the
activations every weight's gradient needs, and a reference copy only without precomputed reference log-probs.

The terms share the `Settings` of one recipe and each is a few lines of arithmetic, so they stay together here.
`hf_dpo.plan.arch` reads the architecture, `hf_dpo.plan.settings` the recipe's knobs (and the data's longest
row), `hf_dpo.plan.fit` compares the sum with the memory there is and suggests what to turn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hf_dpo.model.memory import DENSE_SHARE_OF_FREE_MEMORY
from hf_dpo.plan.arch import Arch
from hf_dpo.plan.settings import Settings

GB = 1024**3
MB = 1024**2

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


def full_layer_activation_bytes_per_token(arch: Arch, s: Settings, seq_len: int) -> int:
    """Bytes autograd keeps per token for one decoder layer when every weight trains (full fine-tuning, a
    full-precision model): as with LoRA (`layer_activation_bytes_per_token`) the norms, attention and MLP
    activations, and, as each weight's gradient needs its input, the norms' normalized inputs, the normed input
    that q/k/v read and the one gate/up read (one tensor each), and down_proj's input (SiLU(gate) x up, i wide).
    o_proj reads the attention output, which attention keeps already."""
    h, i = arch.hidden_size, arch.intermediate_size
    q = arch.num_attention_heads * arch.head_dim
    kv = arch.num_key_value_heads * arch.head_dim
    mm = _matmul_out_bytes(s)
    # RMSNorm keeps its float32 input and 1/rms, and, its weight training too, the normalized input (in the
    # residual stream's dtype, the model's)
    norms = 2 * (4 * h + 4 + h * s.compute_bytes)
    linear_inputs = (2 * h + i) * mm
    attention = mm * (2 * q + 2 * kv) + 4 * arch.num_attention_heads
    if s.eager_attention:
        attention += 2 * arch.num_attention_heads * seq_len * mm
    return norms + linear_inputs + attention + 3 * i * mm


def activation_bytes(arch: Arch, s: Settings, full: bool = False) -> int:
    per_token = full_layer_activation_bytes_per_token if full else layer_activation_bytes_per_token
    per_layer = per_token(arch, s, s.row_length) * s.tokens
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
        # The 4-bit matmul dequantizes one weight at a time; its gradient w.r.t. the input needs it again. On CPU
        # training dequantizes them all once instead, where that fits (`dense_copy_fits`).
        Term(
            "dense copy of the 4-bit linears", dense_copy_bytes(arch, s), "CPU: dequantized once for training"
        )
        if s.dense_base
        else Term(
            "working set",
            biggest * s.compute_bytes * 2 if s.quantized else biggest * s.compute_bytes,
            "largest dequantized weight, forward + backward",
        ),
        Term(
            "reference model" if s.ref_model else "reference log-probs",
            linear + other if s.ref_model else 0,
            "ref_model_name_or_path, frozen, loaded as the base (planned with the policy's architecture)"
            if s.ref_model
            else "adapters off, no grad: no second model; its logits are in 'logits'",
        ),
    ]
    return terms + device_terms(arch, s, sum(t.bytes for t in terms), activation_bytes(arch, s) + logits)


def dense_copy_bytes(arch: Arch, s: Settings) -> int:
    """The decoder linears dequantized to the compute dtype."""
    return arch.num_hidden_layers * sum(i * o for i, o in arch.linear_shapes().values()) * s.compute_bytes


def dense_copy_fits(arch: Arch, s: Settings, memory: int) -> bool:
    """Whether CPU training on a 4-bit base will hold its linears dequantized (`dense_base`): as the trainer decides
    (`hf_dpo.model.reference.dequantized_fit`), when the copy takes at most DENSE_SHARE_OF_FREE_MEMORY of the memory
    free once the model is loaded, here `memory` less the weights, the checkpoint read and the process baseline.
    The trainer sizes the copy as every weight in the compute dtype, so the plan does too."""
    if s.device != "cpu" or s.quantization != "4bit" or s.full_finetune:
        return False
    # with nothing allocated yet, the CPU's device terms are the checkpoint read and the process baseline
    loaded = sum(weight_bytes(arch, s)) + sum(t.bytes for t in device_terms(arch, s, 0, 0))
    return arch.num_params * s.compute_bytes <= DENSE_SHARE_OF_FREE_MEMORY * (memory - loaded)


def full_finetune_estimate(arch: Arch, s: Settings, reference_copy: bool) -> list[Term]:
    """Peak memory of the same step training every weight instead of a LoRA adapter (no peft_config /
    `use_peft: false`): the model unquantized in the compute dtype, a gradient and AdamW's two moments per weight
    in that dtype (8-bit AdamW: 2 B), the activations every weight's gradient needs, and a frozen reference copy
    only when the reference log-probs are not precomputed (`precompute_ref_log_probs: false`)."""
    full = dataclasses.replace(s, quantization="none")
    reference_copy = reference_copy or s.ref_model  # a ref_model is held as the copy would be
    linear, other = weight_bytes(arch, full)
    weights = linear + other
    n_params = weights // full.compute_bytes
    optimizer = {8: 2 * full.compute_bytes, 2: 2, 0: 0}.get(s.optimizer_state_bytes, 2 * full.compute_bytes)
    logits, logits_note = logits_bytes(arch, full)
    activations = activation_bytes(arch, full, full=True)
    b = full.compute_bytes
    terms = [
        Term("weights (trained)", weights, f"{n_params / 1e9:.2f} B params in the compute dtype ({b} B)"),
        Term("gradients", n_params * b, f"{b} B/param"),
        Term("optimizer states", n_params * optimizer, f"{optimizer} B/param"),
        Term(
            "reference",
            weights if reference_copy else 0,
            (
                "ref_model_name_or_path, frozen"
                if s.ref_model
                else "a frozen copy (precompute_ref_log_probs: false)"
            )
            if reference_copy
            else "log-probs precomputed once: no second model",
        ),
        Term("activations", activations, f"{full.tokens} tokens/step, every weight's input kept"),
        Term("logits", logits, logits_note),
    ]
    return terms + device_terms(arch, full, sum(t.bytes for t in terms), activations + logits)


def step_estimate(arch: Arch, s: Settings) -> list[Term]:
    """The terms of the step the settings train: every weight (`s.full_finetune`, use_peft: false) or the LoRA
    adapter."""
    return full_finetune_estimate(arch, s, s.reference_copy) if s.full_finetune else estimate(arch, s)


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


def fmt(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"
