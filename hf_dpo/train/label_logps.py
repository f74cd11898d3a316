"""Log-probs of label tokens from logits or from hidden states: the arithmetic under `hf_dpo.train.logps`.

selective_log_softmax(logits, labels)          (…, V), (…) -> (…): log softmax at the labels only
token_logps(logits, labels)                    shifted next-token log-probs of a (B, T, V) batch, and the mask
chunked_label_logps(hidden, lm_head, labels)   (N, H) hidden states -> (N,) log-probs, the LM head applied
                                               `chunk_size` tokens at a time (no (N, V) tensor at once)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[..., index] without keeping a full log-softmax tensor: (…, V), (…) -> (…)."""
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    # Half precision: logsumexp in low precision loses too much, go row by row in float32.
    out = []
    for row_logits, row_index in zip(logits, index):
        row = F.log_softmax(row_logits.float(), dim=-1)
        out.append(torch.gather(row, -1, row_index.unsqueeze(-1)).squeeze(-1))
    return torch.stack(out)


def token_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """Per-token log-probs of the next-token labels and their mask.

    logits: (B, T, V) for positions 0..T-1; labels: (B, T) with `ignore_index` on prompt and padding.
    Returns ((B, T-1) log-probs, zero where masked; (B, T-1) bool mask).
    """
    assert logits.shape[:-1] == labels.shape, f"logits {tuple(logits.shape)} vs labels {tuple(labels.shape)}"
    labels = labels[:, 1:]  # (B, T-1): token t is predicted at position t-1
    logits = logits[:, :-1, :]  # (B, T-1, V)
    mask = labels != ignore_index
    safe_labels = labels.masked_fill(~mask, 0)
    per_token = selective_log_softmax(logits, safe_labels)  # (B, T-1)
    return per_token * mask, mask


@torch.no_grad()
def logit_stats(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> dict[str, torch.Tensor]:
    """TRL's per-token logging quantities of (N, V) logits and their (N,) labels, float32, no grad: the mean logit
    over the vocabulary, the entropy of the next-token distribution, and whether the label is the top-1 token.
    A `chunk_size` tokens at a time, so only one chunk's softmax exists."""
    out = {"mean_logits": [], "entropy": [], "top1": []}
    for start in range(0, logits.shape[0], chunk_size):
        chunk = logits[start : start + chunk_size].float()  # (n, V)
        lse = torch.logsumexp(chunk, dim=-1)  # (n,)
        stats = softmax_stats(chunk, lse, torch.softmax(chunk, dim=-1), labels[start : start + chunk_size])
        for key, value in stats.items():
            out[key].append(value)
    if not out["top1"]:
        empty = logits.new_zeros(0, dtype=torch.float32)
        return {"mean_logits": empty, "entropy": empty, "top1": empty.bool()}
    return {key: torch.cat(values) for key, values in out.items()}


@torch.no_grad()
def softmax_stats(
    logits: torch.Tensor, lse: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """`logit_stats` of (n, V) float32 logits whose (n,) logsumexp and (n, V) softmax are at hand."""
    return {
        "mean_logits": logits.mean(-1),
        "entropy": lse - (probs * logits).sum(-1),  # -Σ p log p = lse - Σ p·logit
        "top1": logits.argmax(-1) == labels,
    }


def _append_stats(stats: dict | None, logits: torch.Tensor, labels: torch.Tensor) -> None:
    if stats is not None:
        for key, value in logit_stats(logits, labels).items():
            stats.setdefault(key, []).append(value)


class _LinearLabelLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[label], chunk by chunk, for a frozen output layer.

    The gradient with respect to the hidden state is known in the forward pass, because the output is one scalar
    per token: d log p(y_n) / d h_n = W[y_n] − Σ_v p_nv·W_v = W[y_n] − p_n @ W. It is computed per chunk and kept
    as an (N, H) tensor, so neither the (N, V) logits nor their gradient outlive one chunk, and the backward is a
    multiply (no recomputation of the LM head, unlike checkpointing).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size: int, stats: dict | None = None):
        n_tokens = hidden.shape[0]
        logps = torch.empty(n_tokens, device=hidden.device, dtype=torch.float32)  # (N,)
        need_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if need_grad else None  # (N, H)
        for start in range(0, n_tokens, chunk_size):
            end = min(start + chunk_size, n_tokens)
            h = hidden[start:end].to(weight.dtype)  # (n, H)
            logits = F.linear(h, weight, bias).float()  # (n, V): the only vocabulary-sized tensor
            y = labels[start:end]
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            logps[start:end] = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - lse
            probs = None
            if stats is not None:  # from this chunk's lse and softmax, which logit_stats would compute again
                probs = (logits - lse.unsqueeze(-1)).exp_()  # (n, V): softmax, logits kept for the stats
                for key, value in softmax_stats(logits, lse, probs, y).items():
                    stats.setdefault(key, []).append(value)
            if need_grad:
                if probs is None:
                    probs = logits.sub_(lse.unsqueeze(-1)).exp_()  # (n, V), in place: softmax
                expected = probs.to(weight.dtype) @ weight  # (n, H): E_p[W_v]
                grad_hidden[start:end] = (weight[y].float() - expected.float()).to(hidden.dtype)
            del logits
        ctx.save_for_backward(grad_hidden if need_grad else None)
        return logps

    @staticmethod
    def backward(ctx, grad_logps):
        (grad_hidden,) = ctx.saved_tensors
        grad = grad_logps.to(grad_hidden.dtype).unsqueeze(-1) * grad_hidden  # (N, H)
        return grad, None, None, None, None, None


def chunked_label_logps(
    hidden: torch.Tensor, lm_head, labels: torch.Tensor, chunk_size: int, stats: dict | None = None
) -> torch.Tensor:
    """log p(labels | hidden) through the output layer `lm_head`, `chunk_size` tokens at a time.

    hidden: (N, H) final hidden states of the positions that predict a label; labels: (N,). Returns (N,) float32.
    A frozen `torch.nn.Linear` head takes the closed-form gradient of `_LinearLabelLogps`; any other head (trainable,
    adapter-wrapped) runs each chunk under activation checkpointing, so only one chunk's logits exist at a time in
    the forward and in the backward alike. Peak extra memory: chunk_size × V floats instead of N × V.
    `stats`: a dict that receives, per chunk, lists of `logit_stats` tensors (TRL's logging quantities).
    """
    assert hidden.dim() == 2 and labels.shape == hidden.shape[:1], (
        f"{tuple(hidden.shape)} vs {tuple(labels.shape)}"
    )
    chunk_size = max(1, int(chunk_size))
    weight = getattr(lm_head, "weight", None)
    bias = getattr(lm_head, "bias", None)
    frozen = (
        type(lm_head) is torch.nn.Linear
        and not weight.requires_grad
        and (bias is None or not bias.requires_grad)
    )
    if frozen:
        return _LinearLabelLogps.apply(hidden, weight, bias, labels, chunk_size, stats)

    def one_chunk(h, y):
        return selective_log_softmax(lm_head(h).float(), y)

    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if stats is not None:
            with torch.no_grad():
                _append_stats(stats, lm_head(h), y)
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(torch.utils.checkpoint.checkpoint(one_chunk, h, y, use_reentrant=False))
        else:
            pieces.append(one_chunk(h, y))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
