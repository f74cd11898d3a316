"""The DPO loss family as pure functions of log-prob tensors, and per-sequence log-probs.

Notation (Rafailov et al. 2023): h = (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)),
the difference of the chosen and rejected log-ratios. Each loss below is a function of β·h (and, for IPO,
of length-normalised log-ratios); `dpo_loss` picks one by name from `LOSSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class PairLogRatios:
    """Log-ratios log π_θ − log π_ref of one batch of pairs, all of shape (B,)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor | None = None  # completion tokens, needed by IPO
    rejected_lengths: torch.Tensor | None = None


def sigmoid_loss(r: PairLogRatios, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO, Eq. 7 of the paper: −log σ(β·h). With label_smoothing ε it is conservative DPO (cDPO):
    −(1−ε)·log σ(β·h) − ε·log σ(−β·h), the expected loss when a fraction ε of labels is flipped."""
    logits = beta * (r.chosen - r.rejected)  # (B,)
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def robust_loss(r: PairLogRatios, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Robust DPO (rDPO, Chowdhury et al. 2024, Eq. 8): an unbiased estimate of the clean loss under label noise ε:
    [−(1−ε)·log σ(β·h) + ε·log σ(−β·h)] / (1 − 2ε)."""
    logits = beta * (r.chosen - r.rejected)
    return (-(1 - label_smoothing) * F.logsigmoid(logits) + label_smoothing * F.logsigmoid(-logits)) / (
        1 - 2 * label_smoothing
    )


def hinge_loss(r: PairLogRatios, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """SLiC-HF hinge (Zhao et al. 2023): max(0, 1 − β·h)."""
    return torch.relu(1 - beta * (r.chosen - r.rejected))


def ipo_loss(r: PairLogRatios, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h̄ − 1/(2β))², with h̄ the difference of per-token (length-averaged)
    log-ratios, β playing the role of the paper's τ. Length averaging follows TRL (confirmed with the authors)."""
    if r.chosen_lengths is None or r.rejected_lengths is None:
        raise ValueError("ipo_loss needs chosen_lengths and rejected_lengths (completion token counts).")
    h = r.chosen / r.chosen_lengths.clamp(min=1) - r.rejected / r.rejected_lengths.clamp(min=1)
    return (h - 1 / (2 * beta)) ** 2


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "robust": robust_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
}


@dataclass
class DPOLossOutput:
    losses: torch.Tensor  # (B,) per-pair loss
    chosen_rewards: torch.Tensor  # (B,) β·(log π_θ(y_w|x) − log π_ref(y_w|x)), detached
    rejected_rewards: torch.Tensor  # (B,) β·(log π_θ(y_l|x) − log π_ref(y_l|x)), detached


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> DPOLossOutput:
    """Per-pair preference loss and implicit rewards.

    Args:
        policy_chosen_logps: (B,) summed log π_θ(y_w|x) over the chosen completion tokens.
        policy_rejected_logps: (B,) summed log π_θ(y_l|x).
        ref_chosen_logps, ref_rejected_logps: (B,) the same under the reference policy (no grad).
        beta: the KL-penalty temperature β.
        loss_type: a key of `LOSSES`.
        label_smoothing: ε for conservative (sigmoid) or robust DPO.
        chosen_lengths, rejected_lengths: (B,) completion token counts (IPO only).
    """
    try:
        loss_fn = LOSSES[loss_type]
    except KeyError:
        raise ValueError(f"Unknown loss_type '{loss_type}'; choose one of {', '.join(LOSSES)}.") from None
    ratios = PairLogRatios(
        chosen=policy_chosen_logps - ref_chosen_logps,
        rejected=policy_rejected_logps - ref_rejected_logps,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )
    losses = loss_fn(ratios, beta, label_smoothing)
    # The implicit reward r(x, y) = β·log(π_θ(y|x) / π_ref(y|x)) (Section 5 of the paper).
    return DPOLossOutput(
        losses=losses,
        chosen_rewards=(beta * ratios.chosen).detach(),
        rejected_rewards=(beta * ratios.rejected).detach(),
    )


def sft_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """RPO's SFT term (Pang et al. 2024): mean negative log-likelihood over all chosen completion tokens
    of the batch. Shapes: (B, T) per-token log-probs and a (B, T) 0/1 mask."""
    mask = chosen_mask.to(chosen_token_logps.dtype)
    return -(chosen_token_logps * mask).sum() / mask.sum().clamp(min=1)


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


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """Summed log-prob of each sequence's labelled tokens (prompt and padding masked with `ignore_index`).

    Returns ((B,) summed log-probs, (B,) number of labelled tokens).
    """
    per_token, mask = token_logps(logits, labels, ignore_index)
    return per_token.sum(-1), mask.sum(-1)


class _LinearLabelLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[label], chunk by chunk, for a frozen output layer.

    The gradient with respect to the hidden state is known in the forward pass, because the output is one scalar
    per token: d log p(y_n) / d h_n = W[y_n] − Σ_v p_nv·W_v = W[y_n] − p_n @ W. It is computed per chunk and kept
    as an (N, H) tensor, so neither the (N, V) logits nor their gradient outlive one chunk, and the backward is a
    multiply (no recomputation of the LM head, unlike checkpointing).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size: int):
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
            if need_grad:
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
        return grad, None, None, None, None


def chunked_label_logps(hidden: torch.Tensor, lm_head, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """log p(labels | hidden) through the output layer `lm_head`, `chunk_size` tokens at a time.

    hidden: (N, H) final hidden states of the positions that predict a label; labels: (N,). Returns (N,) float32.
    A frozen `torch.nn.Linear` head takes the closed-form gradient of `_LinearLabelLogps`; any other head (trainable,
    adapter-wrapped) runs each chunk under activation checkpointing, so only one chunk's logits exist at a time in
    the forward and in the backward alike. Peak extra memory: chunk_size × V floats instead of N × V.
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
        return _LinearLabelLogps.apply(hidden, weight, bias, labels, chunk_size)

    def one_chunk(h, y):
        return selective_log_softmax(lm_head(h).float(), y)

    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(torch.utils.checkpoint.checkpoint(one_chunk, h, y, use_reentrant=False))
        else:
            pieces.append(one_chunk(h, y))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
