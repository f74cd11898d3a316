"""The DPO loss family as pure functions of per-pair log-probs.

Notation (Rafailov et al. 2023, "Direct Preference Optimization", arXiv:2305.18290), per pair (x, y_w, y_l):

    ρ_w = log π_θ(y_w|x) − log π_ref(y_w|x)        chosen log-ratio                          (B,)
    ρ_l = log π_θ(y_l|x) − log π_ref(y_l|x)        rejected log-ratio                        (B,)
    h   = ρ_w − ρ_l                                 how much more the policy moved to y_w    (B,)
    r(x, y) = β·(log π_θ(y|x) − log π_ref(y|x))     the implicit reward (Section 5): `implicit_rewards`

Each loss of `LOSSES` is a function of these; `dpo_loss` picks one by name. Where the log-probs come from
(one forward pass, chunked through the LM head) is `hf_dpo.train.logps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def implicit_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """(r(x, y_w), r(x, y_l)) = β·(log π_θ − log π_ref) of the chosen and rejected completions (DPO, Section 5).

    The one definition of the reward: the loss, the logged `rewards/*` metrics and the evaluation report all use
    it. Works on tensors and numpy arrays alike, each (B,)."""
    return beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)


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
    chosen_rewards, rejected_rewards = implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return DPOLossOutput(
        losses=loss_fn(ratios, beta, label_smoothing),
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach(),
    )


def sft_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """RPO's SFT term (Pang et al. 2024): mean negative log-likelihood over all chosen completion tokens
    of the batch. Shapes: (B, T) per-token log-probs and a (B, T) 0/1 mask."""
    mask = chosen_mask.to(chosen_token_logps.dtype)
    return -(chosen_token_logps * mask).sum() / mask.sum().clamp(min=1)
