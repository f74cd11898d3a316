"""Summed log-probs of the chosen and rejected completions of a batch of pairs, from a causal LM.

Two ways, for any batch layout of `hf_dpo.train.batching` (plain 2B rows, prefix-shared B rows, packed 1 row):

    full logits   model(...).logits, (rows, T, V), then the labels' log-softmax — the plain path, as TRL
    chunked       the decoder's final hidden states at the N positions that predict a label, through the LM
                  head `chunk_size` tokens at a time (`hf_dpo.train.label_logps.chunked_label_logps`): prompt and padding
                  positions never reach the head, and no (rows, T, V) tensor exists

    policy = pair_logps(model, batch, chunk_size=256)   # PairLogps: chosen, rejected (B,), lengths, ...
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass

import torch

from hf_dpo.data import TOKENIZED_COLUMNS
from hf_dpo.model.unwrap import base_model
from hf_dpo.train.attention import FLEX, MASK4D
from hf_dpo.train.batching import (
    PreferenceCollator,
    batch_examples,
    is_packed,
    is_shared,
    label_targets,
    shared_attention_mask,
    shared_block_mask,
)
from hf_dpo.train.label_logps import chunked_label_logps, logit_stats, selective_log_softmax, token_logps

logger = logging.getLogger(__name__)

# Config keys that rescale or cap logits after the LM head; the chunked path does not apply them.
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "output_multiplier",
    "lm_head_multiplier",
)


@dataclass
class PairLogps:
    chosen: torch.Tensor  # (B,) summed log-probs of the chosen completions (LD-DPO: tail down-weighted)
    rejected: torch.Tensor  # (B,)
    chosen_lengths: torch.Tensor  # (B,) completion token counts
    rejected_lengths: torch.Tensor  # (B,)
    chosen_token_logps: torch.Tensor | None = None  # (N_chosen,) every chosen completion token: the SFT term
    wpo_weights: torch.Tensor | None = None  # (B,) WPO pair weights, no grad (`wpo_weights`)
    aux_loss: torch.Tensor | None = None  # () the router's load-balancing loss of a Mixture-of-Experts model
    # TRL's logging quantities per labelled token (`logit_stats`: mean_logits, entropy, top1) and is_chosen, all (N,)
    token_stats: dict[str, torch.Tensor] | None = None


@dataclass
class LogpsOptions:
    """What a pass computes besides the summed log-probs (all off: the plain DPO quantities)."""

    chunk_size: int = 0  # > 0: the chunked LM-head path
    with_tokens: bool = False  # the chosen tokens' log-probs (sft)
    ld_alpha: float | None = None  # LD-DPO's weight of the tokens past the shorter completion
    with_wpo: bool = False  # WPO weights (needs full logits: chunk_size 0)
    router_aux: bool = False  # ask a MoE model for its load-balancing loss
    with_stats: bool = False  # TRL's logged logits, entropy, token accuracy (`PairLogps.token_stats`)
    attention: str = MASK4D  # how a prefix-shared batch's mask reaches attention (`hf_dpo.train.attention`)


def head_and_decoder(model):
    """(LM head, decoder backbone) of `model`; either may be None."""
    base = base_model(model)
    lm_head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    return lm_head, decoder if decoder is not None else getattr(base, "model", None)


def chunking_problem(model) -> str | None:
    """Why the chunked path can't run on `model`, or None if it can."""
    base = base_model(model)
    lm_head, decoder = head_and_decoder(model)
    if lm_head is None or decoder is None or not hasattr(lm_head, "weight"):
        return "no LM head / decoder backbone found"
    if "logits_to_keep" not in inspect.signature(type(base).forward).parameters:
        return f"{type(base).__name__}.forward has no logits_to_keep"
    if any(getattr(base.config, key, None) not in (None, 1, 1.0) for key in LOGIT_TRANSFORMS):
        return "the model rescales or caps its logits"
    return None


def model_inputs(model, batch: dict[str, torch.Tensor], attention: str = MASK4D) -> dict[str, torch.Tensor]:
    """Forward arguments for the batch's layout. Prefix-shared: its mask, dense in the attention scores' dtype
    (`attention` mask4d) or a FlexAttention block mask (flex). Packed: no attention mask, only position_ids, from
    which transformers builds one that keeps the sequences apart (flash, flex, SDPA and eager alike)."""
    if is_packed(batch):
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}  # (1, ΣL) each
    if not is_shared(batch):
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if attention == FLEX:
        mask = shared_block_mask(batch["segment_ids"])  # BlockMask (B, 1, T, T)
    else:
        mask = shared_attention_mask(
            batch["segment_ids"], scores_dtype(model, batch["input_ids"].device.type)
        )
    return {
        "input_ids": batch["input_ids"],  # (B, T)
        "attention_mask": mask,  # (B, 1, T, T)
        "position_ids": batch["position_ids"],  # (B, T)
    }


def scores_dtype(model, device: str) -> torch.dtype:
    """The dtype of the attention scores a 4D mask is added to (SDPA wants the query's)."""
    if torch.is_autocast_enabled(device):  # autocast runs attention in bf16/fp16 whatever the weights are
        return torch.get_autocast_dtype(device)
    base = base_model(model)
    embeddings = base.get_input_embeddings().weight
    # The residual stream meets the first floating-point weight past the embeddings first (a norm, or a linear of
    # a full-precision model), and computes on in its dtype: k-bit training keeps norms float32 even where the
    # embeddings are bf16, so the queries are float32 there. A k-bit linear layer is no such weight: it computes
    # in its bnb_4bit_compute_dtype and returns its input's dtype, whatever its bias is stored in.
    for name, module in base.named_modules():
        if "lora_" in name or is_kbit_linear(module):
            continue
        for param in module.parameters(recurse=False):
            if param.dtype.is_floating_point and param is not embeddings:
                return param.dtype
    return embeddings.dtype


def is_kbit_linear(module) -> bool:
    """A bitsandbytes 4-bit or 8-bit linear layer (its weight a Params4bit / Int8Params)."""
    return type(getattr(module, "weight", None)).__name__ in ("Params4bit", "Int8Params")


def final_hidden_states(model, inputs: dict[str, torch.Tensor]):
    """((rows, T, H) hidden states the LM head would read, the model's outputs). The forward goes through the
    outermost wrapper (DDP, peft) so gradient sync still works; a hook on the decoder catches its output, and the
    model projects no position onto the vocabulary (`logits_to_keep`: an empty tensor of positions). Even one
    position a row reads the whole LM head: on the demo model (49k x 576 float32 weights) 50-90 ms of memory
    traffic on a CPU, a tenth of a forward-only batch, for logits nobody reads."""
    captured = []

    def grab(module, args, output):
        hidden = getattr(output, "last_hidden_state", None)
        captured.append(hidden if hidden is not None else output[0])

    handle = head_and_decoder(model)[1].register_forward_hook(grab)
    try:
        no_position = torch.empty(0, dtype=torch.long, device=inputs["input_ids"].device)  # (0,)
        outputs = model(**inputs, use_cache=False, logits_to_keep=no_position)
    finally:
        handle.remove()
    return captured[-1], outputs


def full_logits_pair_logps(
    model, batch: dict[str, torch.Tensor], with_tokens: bool = False, with_stats: bool = False
) -> PairLogps:
    """The plain path, as TRL computes it: (2B, T, V) logits, labels shifted by one."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    per_token, mask = token_logps(outputs.logits, batch["labels"])  # (2B, T-1) each
    logps = per_token.sum(-1)  # (2B,)
    lengths = mask.sum(-1)  # (2B,)
    half = logps.shape[0] // 2
    token_stats = None
    if with_stats:
        rows, cols = mask.nonzero(as_tuple=True)  # (N,) labelled positions, row-major
        with torch.no_grad():
            token_stats = logit_stats(outputs.logits[rows, cols], batch["labels"][rows, cols + 1])
        token_stats["is_chosen"] = rows < half
    return PairLogps(
        chosen=logps[:half],
        rejected=logps[half:],
        chosen_lengths=lengths[:half],
        rejected_lengths=lengths[half:],
        chosen_token_logps=per_token[:half][mask[:half]] if with_tokens else None,  # (N_chosen,)
        token_stats=token_stats,
    )


def pair_logps(
    model,
    batch: dict[str, torch.Tensor],
    chunk_size: int = 0,
    with_tokens: bool = False,
    options: LogpsOptions | None = None,
) -> PairLogps:
    """Log-probs of the batch's completions in its own layout; `chunk_size` > 0 takes the chunked path.
    `options` (LD-DPO, WPO, a MoE router's loss) override `chunk_size` and `with_tokens`."""
    opt = options or LogpsOptions(chunk_size=chunk_size, with_tokens=with_tokens)
    plain = opt.ld_alpha is None and not opt.with_wpo and not opt.router_aux
    if plain and not is_shared(batch) and not is_packed(batch) and not opt.chunk_size:
        return full_logits_pair_logps(model, batch, opt.with_tokens, opt.with_stats)
    targets = label_targets(batch)  # N labelled tokens: row, source position, label, sequence
    inputs = model_inputs(model, batch, opt.attention)
    if opt.router_aux:
        inputs["output_router_logits"] = True
    log_sum_sq = None
    stats = {} if opt.with_stats else None
    if opt.chunk_size:
        hidden, outputs = final_hidden_states(model, inputs)  # (rows, T, H)
        selected = hidden[targets.rows, targets.sources]  # (N, H): only positions that predict a label
        per_token = chunked_label_logps(
            selected, head_and_decoder(model)[0], targets.labels, opt.chunk_size, stats
        )  # (N,)
        if stats is not None:
            stats = {key: torch.cat(values) for key, values in stats.items()} if stats else None
    else:
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[targets.rows, targets.sources]  # (N, V)
        per_token = selective_log_softmax(logits, targets.labels)  # (N,)
        if stats is not None:
            stats = logit_stats(logits, targets.labels)
        if opt.with_wpo:
            with torch.no_grad():  # log Σ_v p_v², in float32
                log_sum_sq = torch.logsumexp(2 * logits.float(), -1) - 2 * torch.logsumexp(logits.float(), -1)
    pairs = targets.num_pairs
    lengths = torch.bincount(targets.sequences, minlength=2 * pairs)  # (2B,)
    weighted = per_token
    if opt.ld_alpha is not None:
        weighted = per_token * ld_token_weights(targets.sequences, lengths, opt.ld_alpha)
    logps = per_token.new_zeros(2 * pairs).index_add(0, targets.sequences, weighted)  # (2B,)
    is_chosen = targets.sequences < pairs
    if opt.with_stats:
        stats = stats or logit_stats(per_token.new_zeros(0, 1), targets.labels[:0])  # no labelled token
        stats["is_chosen"] = is_chosen
    return PairLogps(
        chosen=logps[:pairs],
        rejected=logps[pairs:],
        chosen_lengths=lengths[:pairs],
        rejected_lengths=lengths[pairs:],
        chosen_token_logps=per_token[is_chosen] if opt.with_tokens else None,  # (N_chosen,)
        wpo_weights=wpo_weights(per_token, log_sum_sq, targets.sequences, lengths) if opt.with_wpo else None,
        aux_loss=getattr(outputs, "aux_loss", None) if opt.router_aux else None,
        token_stats=stats,
    )


def ld_token_weights(sequences: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """LD-DPO (Liu et al. 2024, arXiv:2409.06411, Eq. 9): (N,) weight of each labelled token, 1 within the shorter
    completion's length of its pair and α beyond it. `sequences` (N,) as in `label_targets` (each sequence's
    tokens are contiguous, in order), `lengths` (2B,) tokens per sequence."""
    n_tokens, pairs = sequences.shape[0], lengths.shape[0] // 2
    index = torch.arange(n_tokens, device=sequences.device)
    first = torch.full_like(lengths, n_tokens).scatter_reduce(0, sequences, index, reduce="amin")  # (2B,)
    position = index - first[sequences]  # (N,) 0-based position inside its completion
    shared = torch.minimum(lengths[:pairs], lengths[pairs:]).repeat(2)  # (2B,)
    inside = position < shared[sequences]
    return torch.where(inside, 1.0, alpha).to(torch.float32)


def wpo_weights(per_token, log_sum_sq, sequences, lengths) -> torch.Tensor:
    """WPO (Zhou et al. 2024, arXiv:2406.11827, Eq. 2, TRL's aligned form): (B,) per-pair weight w_w·w_l with
    w = exp(mean over the completion of log p(y_t) − log Σ_v p_v²), the policy's length-normalised probability of
    its own completion relative to its sampling distribution. No gradient flows through it."""
    with torch.no_grad():
        aligned = per_token - log_sum_sq  # (N,)
        summed = aligned.new_zeros(lengths.shape[0]).index_add(0, sequences, aligned)  # (2B,)
        weights = torch.exp(summed / lengths.clamp(min=1))  # (2B,)
        pairs = lengths.shape[0] // 2
        return weights[:pairs] * weights[pairs:]


MASK_NAMES = {MASK4D: "a 4D mask", FLEX: "a FlexAttention block mask"}


@torch.no_grad()
def layout_problem(
    model,
    batch: dict[str, torch.Tensor],
    collator: PreferenceCollator,
    options,
    args,
    batch_logps: PairLogps | None = None,
) -> str | None:
    """Why `batch` (prefix-shared or packed, as `collator` builds them) can't be trusted on `model`, or None: its
    log-probs must match the plain layout's within 1e-4 per token in float32 (1e-2 under bf16/fp16 rounding). A
    model that ignores or rejects the layout's mask fails here. Checked on one pair of the batch, its shortest:
    the plain layout computes every prompt twice, so checking a whole batch of long prompts cost more than the
    rest of the reference pass. The shortest pair is the one its batch pads most, its rejected branch restarts
    its positions after the prompt and must not see its chosen one, and its plain rows pad too (the shorter
    answer's), so one pair meets every way a layout goes wrong.

    `batch_logps`: the whole batch's log-probs in its layout, computed in eval mode with `options` (the first
    batch of a forward-only pass, which needs them anyway): the pair's are read from them, so the check adds
    only the plain layout's forward of one pair (2 rows)."""
    examples = batch_examples(batch)
    shortest = min(range(len(examples)), key=lambda i: sum(len(examples[i][c]) for c in TOKENIZED_COLUMNS))
    checked = [shortest]  # (pairs checked,) positions in the batch
    examples = [examples[i] for i in checked]
    device = batch["input_ids"].device
    plain_collator = dataclasses.replace(collator, prefix_sharing=False, padding_free=False)
    plain = {k: v.to(device) for k, v in plain_collator(examples).items()}
    options = LogpsOptions(
        chunk_size=options.chunk_size, attention=options.attention, ld_alpha=options.ld_alpha
    )
    was_training = model.training
    model.eval()  # no dropout: both layouts must see the same network
    try:
        if batch_logps is None:
            fast = {k: v.to(device) for k, v in collator(examples).items()}
            fast_logps = pair_logps(model, fast, options=options)
        else:
            fast_logps = pairs_at(batch_logps, checked)
        plain_logps = pair_logps(model, plain, options=options)
    except Exception as err:  # noqa: BLE001 - any failure of the layout's forward means: don't use it
        layout = "packed rows" if collator.padding_free else MASK_NAMES[options.attention]
        return f"the forward pass with {layout} failed: {type(err).__name__}: {err}"
    finally:
        model.train(was_training)
    per_token_tol = 1e-4 if computes_in_float32(model, args) else 1e-2
    for side in ("chosen", "rejected"):
        a, b = getattr(fast_logps, side).detach().float(), getattr(plain_logps, side).float()
        lengths = getattr(plain_logps, f"{side}_lengths").clamp(min=1)
        worst = ((a - b).abs() / lengths).max().item()
        if not worst <= per_token_tol:
            return f"{side} log-probs differ from the plain layout by {worst:.2g} per token"
    return None


def pairs_at(logps: PairLogps, positions: list[int]) -> PairLogps:
    """The summed log-probs and lengths of the pairs at `positions` of a batch's `logps`."""
    pick = torch.tensor(positions, device=logps.chosen.device)
    return PairLogps(
        chosen=logps.chosen[pick],
        rejected=logps.rejected[pick],
        chosen_lengths=logps.chosen_lengths[pick],
        rejected_lengths=logps.rejected_lengths[pick],
    )


def working_layout(
    model,
    batch: dict,
    pad_token_id: int,
    asked: tuple[str | None, bool],
    options: LogpsOptions,
    args,
    batch_logps: PairLogps | None = None,
) -> tuple[str | None, bool]:
    """The layout that holds on `model`, as (sharing attention or None, packed), from the one `asked` for, checked
    on the first `batch` with `layout_problem` (`batch_logps`: the batch's log-probs in the layout asked for, as
    there): a failing FlexAttention block mask gives way to the dense 4D mask (checked the same way), any other
    failure to the plain layout (None, False). Logged either way."""
    sharing_attention, packed = asked
    what = "padding_free" if packed else "Prefix sharing"
    while True:
        collator = PreferenceCollator(
            pad_token_id=pad_token_id, prefix_sharing=sharing_attention is not None, padding_free=packed
        )
        options = dataclasses.replace(options, attention=sharing_attention or MASK4D)
        problem = layout_problem(model, batch, collator, options, args, batch_logps)
        batch_logps = None  # they were computed with the layout asked for, not the one tried next
        if not problem:
            how = "no padding" if packed else f"each prompt computed once per pair, {sharing_attention}"
            logger.info("%s on: %s (checked on the first batch).", what, how)
            return sharing_attention, packed
        if sharing_attention != FLEX:
            logger.warning("%s off (%s); computing prompt+chosen and prompt+rejected apart.", what, problem)
            return None, False
        logger.warning(
            "Prefix sharing: the FlexAttention block mask failed (%s); trying the 4D mask.", problem
        )
        sharing_attention = MASK4D


def forward_dtype(model, args) -> torch.dtype:
    """The dtype the forward's matmuls run in: half precision under autocast (bf16/fp16 args), in a half-precision
    model, or in a 4-bit layer's bnb compute dtype; float32 otherwise. Not the embeddings' dtype alone: k-bit
    training upcasts them to float32 while a 4-bit layer computes in its compute dtype (and its dense copy, made
    for training on CPU, holds that dtype)."""
    device = next(model.parameters()).device.type
    if args.bf16:
        return torch.bfloat16
    if args.fp16:
        return torch.float16
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    low = (torch.float16, torch.bfloat16)
    embeddings = base_model(model).get_input_embeddings().weight.dtype
    if embeddings in low:
        return embeddings
    for module in model.modules():
        dtype = getattr(module, "compute_dtype", None)
        if dtype is None and isinstance(module, torch.nn.Linear):
            # a 4-bit layer's dense copy (`decoding_weights`) holds its compute dtype
            dtype = module.weight.dtype
        if dtype in low:
            return dtype
    return torch.float32


def computes_in_float32(model, args) -> bool:
    """Whether the forward runs in float32; in half precision the two layouts differ by rounding (~3e-4 per token
    on an H100)."""
    return forward_dtype(model, args) == torch.float32
