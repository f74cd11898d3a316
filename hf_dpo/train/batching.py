"""Batch layouts and batch order for preference pairs: which logits predict which label, the prefix-shared
attention masks (dense 4D, or a FlexAttention block mask), and a length-grouped sampler that keeps padding small.

Three layouts come out of `PreferenceCollator`:

    plain           2B rows  [prompt, chosen, pad] ... [prompt, rejected, pad]      labels predicted at t-1
    prefix-shared    B rows  [prompt, chosen, rejected, pad]                          see `label_targets`
    packed           1 row   [prompt, chosen][prompt, chosen]...[prompt, rejected]   padding-free: positions
                             restart at 0 for each sequence, which is how transformers tells them apart

`label_targets` describes all three the same way, as flat lists of (row, source position, label, sequence), so
the trainer computes log-probs of exactly the labelled tokens whatever the layout; `batch_examples` turns any
of them back into the pairs they hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

CHOSEN, REJECTED, PAD = 1, 2, -1  # segment ids of the prefix-shared layout (0 is the prompt)


def is_shared(batch: dict) -> bool:
    return "segment_ids" in batch


def is_packed(batch: dict) -> bool:
    return "sequence_ids" in batch


def shared_allowed(query_index, key_index, query_segment, key_segment):
    """The prefix-shared layout's attention rule, elementwise: causal, padding barred as keys, and the rejected
    branch barred from the chosen block (so rejected tokens see exactly prompt + rejected, as in their own row).
    Written once for the dense mask and the FlexAttention `mask_mod` alike."""
    return (
        (query_index >= key_index)
        & (key_segment != PAD)
        & ~((query_segment == REJECTED) & (key_segment == CHOSEN))
    )


def shared_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) segment ids -> (B, 1, T, T) additive float mask of `shared_allowed` (0 allowed, dtype's min barred)."""
    seq = segment_ids.shape[1]
    positions = torch.arange(seq, device=segment_ids.device)
    allowed = shared_allowed(
        positions[None, :, None],  # (1, T, 1) query index
        positions[None, None, :],  # (1, 1, T) key index
        segment_ids[:, :, None],  # (B, T, 1)
        segment_ids[:, None, :],  # (B, 1, T)
    )  # (B, T, T)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)  # (B, 1, T, T)


def shared_block_mask(segment_ids: torch.Tensor):
    """(B, T) segment ids -> a FlexAttention `BlockMask` of `shared_allowed` (B, 1 head, T, T): no dense mask
    exists, and a block of keys that no query of a block may see (chosen keys for rejected queries, padding) is
    skipped by the fused kernel. Compiled on CUDA; on CPU it is built eagerly (exact, for the tests)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(batch, head, query, key):
        return shared_allowed(query, key, segment_ids[batch, query], segment_ids[batch, key])

    rows, seq = segment_ids.shape
    return create_block_mask(
        mask_mod, rows, None, seq, seq, device=segment_ids.device, _compile=segment_ids.is_cuda
    )


@dataclass
class LabelTargets:
    """The labelled tokens of a batch, flattened to N entries (row-major order)."""

    rows: torch.Tensor  # (N,) batch row of the token
    sources: torch.Tensor  # (N,) position in that row whose output predicts the token
    labels: torch.Tensor  # (N,) the token id
    sequences: torch.Tensor  # (N,) 0..B-1: chosen of pair b, B..2B-1: rejected of pair b
    num_pairs: int


def label_targets(batch: dict) -> LabelTargets:
    """Which position predicts which label, for either layout.

    Plain: label at t is predicted at t-1. Prefix-shared: the same inside each branch, except the first rejected
    token, which is predicted at the last prompt position (P-1) — the shifted-label trick would wrongly use the
    last chosen position there. Packed: t-1 inside each sequence; a sequence's first token (position 0) is
    predicted by nothing (t-1 is the previous sequence's last token). A token with nothing before it (an empty
    prompt) has no prediction and is left out, as the shifted labels of the full-logits path leave it out.
    """
    labels = batch["labels"]
    mask = labels != -100  # (rows, T)
    mask[:, 0] = False
    if is_packed(batch):
        mask &= batch["position_ids"] != 0  # (1, T): each sequence's first token
        rows, cols = mask.nonzero(as_tuple=True)  # (N,), (N,)
        sequence_ids = batch["sequence_ids"]  # (1, T): 0..B-1 chosen, B..2B-1 rejected
        num_pairs = (int(sequence_ids.max()) + 1) // 2
        return LabelTargets(rows, cols - 1, labels[rows, cols], sequence_ids[rows, cols], num_pairs)
    rows, cols = mask.nonzero(as_tuple=True)  # (N,), (N,)
    sources = cols - 1
    if not is_shared(batch):
        num_pairs = labels.shape[0] // 2
        return LabelTargets(rows, sources, labels[rows, cols], rows, num_pairs)
    segments = batch["segment_ids"]
    num_pairs = labels.shape[0]
    prompt_lengths = (segments == 0).sum(-1)  # (B,)
    seg = segments[rows, cols]  # (N,)
    first_rejected = (seg == REJECTED) & (segments[rows, cols - 1] != REJECTED)
    sources = torch.where(first_rejected, prompt_lengths[rows] - 1, sources)
    keep = sources >= 0  # (N,): a rejected branch right after an empty prompt has no predicting position
    rows, cols, sources, seg = rows[keep], cols[keep], sources[keep], seg[keep]
    sequences = rows + num_pairs * (seg == REJECTED).long()
    return LabelTargets(rows, sources, labels[rows, cols], sequences, num_pairs)


REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")


def batch_examples(batch: dict) -> list[dict]:
    """The pairs a batch of any layout holds, as tokenized examples (prompt / chosen / rejected input ids, and the
    cached reference log-probs when the batch carries them)."""
    ids, labels = batch["input_ids"].tolist(), batch["labels"].tolist()
    if is_shared(batch):
        examples = [
            {
                "prompt_input_ids": [t for t, s in zip(row, seg) if s == 0],
                "chosen_input_ids": [t for t, s in zip(row, seg) if s == CHOSEN],
                "rejected_input_ids": [t for t, s in zip(row, seg) if s == REJECTED],
            }
            for row, seg in zip(ids, batch["segment_ids"].tolist())
        ]
    else:
        if is_packed(batch):  # one row -> the plain layout's 2B sequences, by sequence id
            sequence_ids = batch["sequence_ids"][0].tolist()
            count = max(sequence_ids) + 1
            ids = [[t for t, s in zip(ids[0], sequence_ids) if s == i] for i in range(count)]
            labels = [[t for t, s in zip(labels[0], sequence_ids) if s == i] for i in range(count)]
        pairs = len(ids) // 2

        def completion(b):  # the labelled tokens of sequence b: its completion (prompt and padding are -100)
            return [t for t, lab in zip(ids[b], labels[b]) if lab != -100]

        examples = []
        for b in range(pairs):
            prompt_length = next((i for i, lab in enumerate(labels[b]) if lab != -100), len(labels[b]))
            examples.append(
                {
                    "prompt_input_ids": ids[b][:prompt_length],
                    "chosen_input_ids": completion(b),
                    "rejected_input_ids": completion(pairs + b),
                }
            )
    for key in REF_KEYS:
        if key in batch:
            for example, value in zip(examples, batch[key].tolist()):
                example[key] = value
    return examples


def plain_batch(batch: dict, pad_token_id: int) -> dict:
    """A prefix-shared or packed batch in the plain layout (the fallback when a model can't take its mask)."""
    plain = PreferenceCollator(pad_token_id=pad_token_id)(batch_examples(batch))
    return {k: v.to(batch["input_ids"].device) for k, v in plain.items()}


# ---------------------------------------------------------------- collating


@dataclass
class PreferenceCollator:
    """Pairs -> one padded batch, in one of two layouts.

    Plain (default): 2B rows, chosen rows 0..B-1, rejected rows B..2B-1; input_ids, attention_mask, labels
    (prompt and padding = -100), all (2B, T).
    Prefix-shared (`prefix_sharing=True`): B rows `[prompt, chosen, rejected, pad]`, so each prompt is computed
    once; input_ids, attention_mask (1 on tokens, 0 on padding), labels (the token itself on completion tokens,
    -100 elsewhere), position_ids (`[0..P+C-1, P..P+R-1]`: the rejected branch restarts after the prompt) and
    segment_ids (0 prompt, 1 chosen, 2 rejected, -1 padding), all (B, T). The trainer turns segment_ids into the
    attention mask (`shared_attention_mask`, or `shared_block_mask` for FlexAttention).
    Packed (`padding_free=True`, the plain layout without padding): one row holding the 2B sequences of the plain
    layout back to back; input_ids, labels, position_ids (restarting at 0 for each sequence), sequence_ids (0..B-1
    chosen, B..2B-1 rejected) and attention_mask (all 1: it counts tokens, the model gets position_ids instead),
    all (1, ΣL). No padding, so pad_to_multiple_of does not apply.
    All carry ref_chosen_logps / ref_rejected_logps (B,) when the examples hold cached reference log-probs.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    prefix_sharing: bool = False
    padding_free: bool = False

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.padding_free:
            batch = self._packed(examples)
        else:
            batch = self._shared(examples) if self.prefix_sharing else self._plain(examples)
        for key in REF_KEYS:
            if key in examples[0]:
                batch[key] = torch.tensor([float(ex[key]) for ex in examples])
        return batch

    def _padded_length(self, longest: int) -> int:
        if self.pad_to_multiple_of:
            return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return longest

    def _plain(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        sequences, label_rows = [], []
        for side in ("chosen_input_ids", "rejected_input_ids"):
            for ex in examples:
                prompt, completion = list(ex["prompt_input_ids"]), list(ex[side])
                sequences.append(prompt + completion)
                label_rows.append([-100] * len(prompt) + completion)
        length = self._padded_length(max(len(s) for s in sequences))
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)  # (2B, T)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        labels = torch.full((len(sequences), length), -100, dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(sequences, label_rows)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            attention_mask[i, : len(seq)] = 1
            labels[i, : len(lab)] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _packed(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        input_ids, labels, position_ids, sequence_ids = [], [], [], []
        # the plain layout's sequence order: chosen of pairs 0..B-1, then rejected of pairs 0..B-1
        sides = [(ex, side) for side in ("chosen_input_ids", "rejected_input_ids") for ex in examples]
        for sequence, (ex, side) in enumerate(sides):
            prompt, completion = list(ex["prompt_input_ids"]), list(ex[side])
            length = len(prompt) + len(completion)
            input_ids += prompt + completion
            labels += [-100] * len(prompt) + completion
            position_ids += range(length)
            sequence_ids += [sequence] * length
        row = {
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": labels,
            "position_ids": position_ids,
            "sequence_ids": sequence_ids,
        }
        return {key: torch.tensor([values], dtype=torch.long) for key, values in row.items()}  # each (1, ΣL)

    def _shared(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        parts = [
            (list(ex["prompt_input_ids"]), list(ex["chosen_input_ids"]), list(ex["rejected_input_ids"]))
            for ex in examples
        ]
        length = self._padded_length(max(len(p) + len(c) + len(r) for p, c, r in parts))
        shape = (len(parts), length)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, -100, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segment_ids = torch.full(shape, -1, dtype=torch.long)
        for i, (p, c, r) in enumerate(parts):
            n = len(p) + len(c) + len(r)
            input_ids[i, :n] = torch.tensor(p + c + r)
            attention_mask[i, :n] = 1
            labels[i, len(p) : n] = torch.tensor(c + r)
            position_ids[i, :n] = torch.cat(
                [torch.arange(len(p) + len(c)), torch.arange(len(p), len(p) + len(r))]
            )  # the rejected branch continues from the prompt, as if chosen were not there
            segment_ids[i, :n] = torch.tensor([0] * len(p) + [1] * len(c) + [2] * len(r))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "position_ids": position_ids,
            "segment_ids": segment_ids,
        }


# ---------------------------------------------------------------- batch order


def pair_lengths(dataset, prefix_sharing: bool) -> list[int]:
    """Tokens each pair occupies in a batch row: P+C+R shared, P+max(C, R) plain (its two rows pad to that)."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    p, c, r = (pc.list_value_length(table[f"{k}_input_ids"]) for k in ("prompt", "chosen", "rejected"))
    total = pc.add(p, pc.add(c, r)) if prefix_sharing else pc.add(p, pc.max_element_wise(c, r))
    return total.to_pylist()


def pair_tokens(dataset, prefix_sharing: bool) -> list[int]:
    """Tokens each pair occupies in a batch: its row P+C+R shared, its two rows 2·(P+max(C, R)) plain."""
    lengths = pair_lengths(dataset, prefix_sharing)
    return lengths if prefix_sharing else [2 * n for n in lengths]


def shortest_first(lengths: list[int]) -> list[int]:
    """Indices of `lengths`, shortest first (ties in index order): the order of a pass over a whole dataset. Its
    batches then hold pairs of about one length (little padding), and the first batch, on which the trainer checks
    its batch layout against the plain one (`hf_dpo.train.logps.layout_problem`), is the cheapest to check."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


# A forward-only pass over a whole dataset (the reference pass) takes batches of up to this many tokens (rows x
# their longest), whatever the training batch is: bigger matmuls, fewer per-batch costs, no saved activations.
PASS_BATCH_TOKENS = 8192
PASS_MAX_PAIRS = 64
# ... and, batched by `pass_batches`, its shortest pair at most this share shorter than its longest: padding is
# computed like any token, and one batch of a few hundred tokens already keeps a CPU's matmuls busy.
PASS_PAD_SHARE = 0.125
# Without the chunked LM head a batch's full (tokens, vocabulary) float32 logits exist at once: kept under this.
PASS_LOGITS_BYTES = 512 * 2**20


def pass_batch_size(longest: int, vocab_size: int | None, at_least: int = 1) -> int:
    """Pairs per batch of a forward-only pass whose longest pair takes `longest` tokens in a row: PASS_BATCH_TOKENS
    tokens a batch (and, with full logits of a `vocab_size` vocabulary, PASS_LOGITS_BYTES of logits), at most
    PASS_MAX_PAIRS, never fewer than `at_least` (a training batch, which holds its activations for the backward
    too, fits)."""
    tokens = PASS_BATCH_TOKENS
    if vocab_size:
        tokens = min(tokens, PASS_LOGITS_BYTES // (4 * vocab_size))
    return max(at_least, min(PASS_MAX_PAIRS, tokens // max(longest, 1)))


def pass_batches(lengths: list[int], vocab_size: int | None) -> list[list[int]]:
    """Batches of a pass over pairs of `lengths` tokens, shortest first (as `shortest_first` orders them): runs of
    consecutive pairs, each within `pass_batch_size`'s budget for its longest (last) pair, its first pair at most
    PASS_PAD_SHARE shorter than that. Each batch a list of positions, in order."""
    batches: list[list[int]] = []
    for position, length in enumerate(lengths):
        if batches:
            batch = batches[-1]
            shortest = lengths[batch[0]]
            if len(batch) < pass_batch_size(length, vocab_size) and shortest >= (1 - PASS_PAD_SHARE) * length:
                batch.append(position)
                continue
        batches.append([position])
    return batches


class LengthGroupedPairSampler(Sampler):
    """Random batches of similar length: shuffle (seeded), cut into mega-batches of `mega_batch` batches, sort each
    by length, cut into batches, shuffle the batch order. Every pair is visited once per epoch; only which pairs
    share a batch changes, so no per-pair value does. Unlike transformers' LengthGroupedSampler it does not put the
    longest batch first (that would skew any timing that skips warm-up steps)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, mega_batch: int = 16):
        self.lengths, self.batch_size, self.seed, self.mega_batch = (
            list(lengths),
            batch_size,
            seed,
            mega_batch,
        )
        self.epoch = None  # set by set_epoch (Trainer/accelerate); otherwise each iteration moves on by one
        self._iterations = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        span = self.batch_size * self.mega_batch
        batches = []
        for start in range(0, len(order), span):
            mega = sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self):
        epoch = self.epoch if self.epoch is not None else self._iterations
        self._iterations += 1
        for batch in self.batches(epoch):
            yield from batch


def pad_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padding tokens when `batches` of pairs with `lengths` are padded to their longest member."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 0.0 if total == 0 else 1 - real / total


def expected_random_pad_share(lengths: list[int], batch_size: int, seed: int = 0) -> float:
    """Pad share of random batches (one seeded shuffle), the baseline length grouping is compared with."""
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return pad_share(lengths, batches)


def length_grouped_sampler(
    dataset, batch_size: int, seed: int, prefix_sharing: bool
) -> LengthGroupedPairSampler:
    """The `group_by_length` sampler of a tokenized dataset, logging the padding it saves over random batches."""
    lengths = pair_lengths(dataset, prefix_sharing)
    sampler = LengthGroupedPairSampler(lengths, batch_size, seed=seed)
    logger.info(
        "Length-grouped batches: %.1f%% padding (random batches: %.1f%%)",
        100 * pad_share(lengths, sampler.batches(0)),
        100 * expected_random_pad_share(lengths, batch_size, seed),
    )
    return sampler
