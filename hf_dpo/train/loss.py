"""The DPO loss family as pure functions of per-pair log-probs: TRL 1.16's fifteen loss types, each with its paper.

Notation (Rafailov et al. 2023, "Direct Preference Optimization", arXiv:2305.18290), per pair (x, y_w, y_l):

    ρ_w = log π_θ(y_w|x) − log π_ref(y_w|x)        chosen log-ratio                          (B,)
    ρ_l = log π_θ(y_l|x) − log π_ref(y_l|x)        rejected log-ratio                        (B,)
    r(x, y) = β·(log π_θ(y|x) − log π_ref(y|x))     the implicit reward (Section 5): `implicit_rewards`
    s = f'(π_θ/π_ref) applied to ρ                  f-DPO's score (Wang et al. 2023, arXiv:2309.16240): s = ρ for
                                                    reverse KL (plain DPO), see `f_divergence_scores`
    Δ = s_w − s_l                                   the reward difference most losses are a function of (B,)

Each entry of `LOSSES` maps a `PairTerms` batch and the `LossSettings` to (B,) per-pair losses; `dpo_loss` adds up
the requested ones with their weights (TRL's `loss_type` list + `loss_weights`), optionally times WPO's per-pair
weights. Where the log-probs come from (one forward pass, chunked through the LM head, LD-DPO's down-weighting of
the longer completion's tail) is `hf_dpo.train.logps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def implicit_rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """(r(x, y_w), r(x, y_l)) = β·(log π_θ − log π_ref) of the chosen and rejected completions (DPO, Section 5).

    The one definition of the reward: the loss, the logged `rewards/*` metrics and the evaluation report all use
    it. Works on tensors and numpy arrays alike, each (B,)."""
    return beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected)


# Sequence log-probs are float32 sums (train/label_logps.py), whatever dtype the forward ran in, but two passes of
# the same weights in different batch shapes (the cached reference from eval-size batches, the policy in training
# batches, other padding) differ by the rounding of the forward's matmuls. Measured on the demo model
# (SmolLM2-135M-Instruct, CPU) with an untrained LoRA (policy == reference), the policy in batches of 8 and the
# reference adapters-off in batches of 16 with other padding, 96 demo pairs whose four log-probs add up to ~180
# nats: the largest |margin| / (|log π_θ(y_w)| + |log π_θ(y_l)| + |log π_ref(y_w)| + |log π_ref(y_l)|) was
# 2.8e-7 = 2.4 float32 epsilons in float32 (1.7e-5 nats), 4.1e-3 = 0.53 bfloat16 epsilons in bfloat16 (0.25 nats)
# (float16 not measured: the same rule, in its own epsilon). The tolerance is 64 float32 epsilons in float32 (room
# for longer sequences and other kernels), one epsilon of a half-precision dtype (~2x the largest measured; longer
# sequences round relatively less: a margin under 0.8% of those four log-probs' sum, ~1.4 nats on the demo's
# pairs, is a tie in bfloat16).
def logps_rounding(compute_dtype: torch.dtype = torch.float32) -> float:
    """The relative rounding of sequence log-probs whose forward ran in `compute_dtype` (`forward_dtype`)."""
    if compute_dtype in (torch.bfloat16, torch.float16):
        return float(torch.finfo(compute_dtype).eps)
    return 64 * float(torch.finfo(torch.float32).eps)


LOGPS_ROUNDING = logps_rounding()


def ranks_chosen_first(
    policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float, rounding: float = LOGPS_ROUNDING
):
    """(B,) whether the reward margin r(x, y_w) − r(x, y_l) is positive beyond the rounding it carries: what
    reward accuracy counts. A margin within β·rounding·(|log π_θ(y_w)| + |log π_θ(y_l)| + |log π_ref(y_w)| +
    |log π_ref(y_l)|) of 0 is a tie (counted as wrong): a policy equal to its reference, computed in two passes,
    gives margins of ~1e-6 either side of 0, which are no ranking. Works on tensors and numpy arrays alike;
    `rounding`: the relative rounding of the log-probs (`logps_rounding`)."""
    chosen_rewards, rejected_rewards = implicit_rewards(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta
    )
    noise = (
        beta * rounding * (abs(policy_chosen) + abs(policy_rejected) + abs(ref_chosen) + abs(ref_rejected))
    )
    return (chosen_rewards - rejected_rewards) > noise


@dataclass
class LossSettings:
    beta: float = 0.1  # β (IPO's τ)
    label_smoothing: float = 0.0  # ε: robust, exo_pair, aot, aot_unpaired
    discopop_tau: float = 0.05
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5


@dataclass
class PairTerms:
    """What the losses read, for one batch of B pairs."""

    policy_chosen: torch.Tensor  # (B,) summed log π_θ(y_w|x)
    policy_rejected: torch.Tensor  # (B,)
    ref_chosen: torch.Tensor  # (B,) summed log π_ref(y_w|x), no grad
    ref_rejected: torch.Tensor  # (B,)
    chosen_lengths: torch.Tensor | None = None  # (B,) completion tokens: ipo, sigmoid_norm
    rejected_lengths: torch.Tensor | None = None
    chosen_token_logps: torch.Tensor | None = None  # every chosen completion token's log π_θ, any shape: sft
    chosen_scores: torch.Tensor | None = None  # (B,) f-divergence scores s_w (set by dpo_loss)
    rejected_scores: torch.Tensor | None = None

    @property
    def chosen_logratios(self) -> torch.Tensor:
        return self.policy_chosen - self.ref_chosen  # ρ_w

    @property
    def rejected_logratios(self) -> torch.Tensor:
        return self.policy_rejected - self.ref_rejected  # ρ_l

    @property
    def delta(self) -> torch.Tensor:
        return self.chosen_scores - self.rejected_scores  # Δ

    def per_token_delta(self) -> torch.Tensor:
        """Δ with each side's score divided by its completion length (IPO, sigmoid_norm)."""
        if self.chosen_lengths is None or self.rejected_lengths is None:
            raise ValueError("this loss needs chosen_lengths and rejected_lengths (completion token counts).")
        chosen = self.chosen_scores / self.chosen_lengths.clamp(min=1)
        return chosen - self.rejected_scores / self.rejected_lengths.clamp(min=1)


def f_divergence_scores(logratios: torch.Tensor, kind: str, alpha: float = 0.5) -> torch.Tensor:
    """f-DPO (Wang et al. 2023, Table 1 / Eq. 10): the reward difference uses f'(u) at u = π_θ/π_ref, u = e^ρ.

    reverse_kl  f'(u) = log u + 1            -> ρ (the constant cancels in Δ): plain DPO
    forward_kl  f'(u) = 1 − 1/u              -> 1 − e^−ρ
    js          f'(u) = log(2u / (1 + u))    -> log 2 + log σ(ρ)
    alpha       f'(u) = (u^(α−1) − 1)/(α−1)  -> (e^((α−1)ρ) − 1)/(α−1), exponent clamped as TRL (α → 1: reverse KL)
    """
    if kind == "reverse_kl":
        return logratios
    if kind == "forward_kl":
        return 1 - torch.exp(-logratios)
    if kind == "js_divergence":
        return math.log(2) + F.logsigmoid(logratios)
    if kind == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return logratios
        t = (alpha - 1.0) * logratios
        clamp_max = {torch.float16: 11.0, torch.bfloat16: 80.0}.get(t.dtype, 80.0)  # exp stays representable
        return (torch.exp(torch.clamp(t.float(), max=clamp_max)) - 1.0).to(t.dtype) / (alpha - 1.0)
    raise ValueError(f"Unknown f_divergence_type '{kind}'.")


def _smoothed_logistic(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the logistic loss when a share ε of the labels is flipped."""
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def sigmoid_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): −log σ(β·Δ)."""
    return -F.logsigmoid(s.beta * x.delta)


def hinge_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """SLiC-HF hinge (Zhao et al. 2023, arXiv:2305.10425, Eq. 1 with the reference as anchor): max(0, 1 − β·Δ)."""
    return torch.relu(1 - s.beta * x.delta)


def ipo_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv:2310.12036, Eq. 17): (Δ̄ − 1/(2τ))², τ = β, with Δ̄ the difference of per-token
    (length-averaged) scores. Length averaging follows TRL (confirmed there with the IPO authors)."""
    return (x.per_token_delta() - 1 / (2 * s.beta)) ** 2


def exo_pair_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """EXO-pref (Ji et al. 2024, arXiv:2402.00856, Eq. 16), K = 2: KL(p_θ ‖ p_label) with p_θ = (σ(βΔ), σ(−βΔ)) and
    the smoothed labels p_label = (1 − ε, ε)."""
    eps = torch.tensor(s.label_smoothing, device=x.delta.device)
    logits = s.beta * x.delta
    chosen_term = torch.sigmoid(logits) * (F.logsigmoid(logits) - torch.log1p(-eps))
    return chosen_term + torch.sigmoid(-logits) * (F.logsigmoid(-logits) - torch.log(eps))


def nca_pair_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """NCA (Chen et al. 2024, arXiv:2402.05369, Eq. 12, K = 2): −log σ(r_w) − ½·log σ(−r_w) − ½·log σ(−r_l)."""
    chosen, rejected = s.beta * x.chosen_logratios, s.beta * x.rejected_logratios
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def robust_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """Robust DPO (Chowdhury et al. 2024, arXiv:2403.00409, Eq. 8), an unbiased estimate of the clean loss under
    label noise ε: [−(1−ε)·log σ(β·Δ) + ε·log σ(−β·Δ)] / (1 − 2ε)."""
    eps, logits = s.label_smoothing, s.beta * x.delta
    return (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)


def bco_pair_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """BCO on pairs (Jung et al. 2024, arXiv:2404.04656, Eq. 3, without the running reward shift as in TRL):
    −log σ(r_w) − log σ(−r_l)."""
    return -F.logsigmoid(s.beta * x.chosen_logratios) - F.logsigmoid(-s.beta * x.rejected_logratios)


def sppo_hard_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """SPPO (Wu et al. 2024, arXiv:2405.00675, Eq. 4.7) with hard probabilities (1 for the winner, 0 for the loser):
    (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²."""
    return (x.chosen_logratios - 0.5 / s.beta) ** 2 + (x.rejected_logratios + 0.5 / s.beta) ** 2


def aot_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """AOT, paired (Melnyk et al. 2024, arXiv:2406.05882, Eq. 9): the batch's sorted policy margins log π_θ(y_w) −
    log π_θ(y_l) minus the sorted reference margins, through the ε-smoothed logistic loss. Batch-dependent."""
    policy_sorted, _ = torch.sort(x.policy_chosen - x.policy_rejected, dim=0)
    ref_sorted, _ = torch.sort(x.ref_chosen - x.ref_rejected, dim=0)
    return _smoothed_logistic(s.beta * (policy_sorted - ref_sorted), s.label_smoothing)


def aot_unpaired_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """AOT, unpaired (Melnyk et al. 2024, Eq. 8): sorted ρ_w minus sorted ρ_l, ε-smoothed logistic loss."""
    chosen_sorted, _ = torch.sort(x.chosen_logratios, dim=0)
    rejected_sorted, _ = torch.sort(x.rejected_logratios, dim=0)
    return _smoothed_logistic(s.beta * (chosen_sorted - rejected_sorted), s.label_smoothing)


def apo_zero_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, arXiv:2408.06266, Eq. 7), for chosen answers better than the model's:
    1 − σ(r_w) + σ(r_l) (raise chosen, lower rejected)."""
    return 1 - torch.sigmoid(s.beta * x.chosen_logratios) + torch.sigmoid(s.beta * x.rejected_logratios)


def apo_down_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8), for chosen answers worse than the model's:
    σ(r_w) + 1 − σ(r_w − r_l) (lower both, rejected more)."""
    chosen = s.beta * x.chosen_logratios
    return torch.sigmoid(chosen) + 1 - torch.sigmoid(s.beta * (x.chosen_logratios - x.rejected_logratios))


def discopop_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """DiscoPOP / LRML (Chris Lu et al. 2024, arXiv:2406.08414, Eq. 5): logistic and exponential losses of β·Δ,
    mixed by σ(β·Δ/τ)."""
    logits = s.beta * x.delta
    mix = torch.sigmoid(logits / s.discopop_tau)
    return -F.logsigmoid(logits) * (1 - mix) + torch.exp(-logits) * mix


def sft_loss_term(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """SFT (RPO, Pang et al. 2024, arXiv:2404.19733, Eq. 3's NLL term): the mean negative log-likelihood of every
    chosen completion token of the batch, the same value for each pair (only its mean is used)."""
    if x.chosen_token_logps is None:
        raise ValueError(
            "the sft loss needs chosen_token_logps (per-token log-probs of the chosen completions)."
        )
    return (-x.chosen_token_logps.mean()).expand(x.policy_chosen.shape[0])


def sigmoid_norm_loss(x: PairTerms, s: LossSettings) -> torch.Tensor:
    """Length-normalised DPO (as in SimPO's normalisation, Meng et al. 2024, arXiv:2405.14734, with the reference
    kept): −log σ(β·Δ̄), Δ̄ the difference of per-token scores."""
    return -F.logsigmoid(s.beta * x.per_token_delta())


LOSSES: dict[str, Callable[[PairTerms, LossSettings], torch.Tensor]] = {
    "sigmoid": sigmoid_loss,
    "hinge": hinge_loss,
    "ipo": ipo_loss,
    "exo_pair": exo_pair_loss,
    "nca_pair": nca_pair_loss,
    "robust": robust_loss,
    "bco_pair": bco_pair_loss,
    "sppo_hard": sppo_hard_loss,
    "aot": aot_loss,
    "aot_unpaired": aot_unpaired_loss,
    "apo_zero": apo_zero_loss,
    "apo_down": apo_down_loss,
    "discopop": discopop_loss,
    "sft": sft_loss_term,
    "sigmoid_norm": sigmoid_norm_loss,
}


@dataclass
class DPOLossOutput:
    losses: (
        torch.Tensor
    )  # (B,) per-pair loss: Σ_k weight_k · loss_k (· WPO weight); its mean is the batch loss
    chosen_rewards: torch.Tensor  # (B,) β·(log π_θ(y_w|x) − log π_ref(y_w|x)), detached
    rejected_rewards: torch.Tensor  # (B,) β·(log π_θ(y_l|x) − log π_ref(y_l|x)), detached
    chosen_ranked_first: (
        torch.Tensor
    )  # (B,) bool: the margin is positive beyond its rounding (ranks_chosen_first)


def weighted_losses(loss_type, loss_weights) -> tuple[list[str], list[float]]:
    """TRL's `loss_type` (a name or a list) and `loss_weights` (default 1.0 each), checked against `LOSSES`."""
    names = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    weights = list(loss_weights) if loss_weights is not None else [1.0] * len(names)
    unknown = [name for name in names if name not in LOSSES]
    if unknown:
        raise ValueError(f"Unknown loss_type '{unknown[0]}'; choose from {', '.join(LOSSES)}.")
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} loss_weights for {len(names)} loss types {names}.")
    return names, weights


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    chosen_token_logps: torch.Tensor | None = None,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05,
    pair_weights: torch.Tensor | None = None,
    rounding: float = LOGPS_ROUNDING,
) -> DPOLossOutput:
    """Per-pair preference loss and implicit rewards.

    Args:
        policy_chosen_logps: (B,) summed log π_θ(y_w|x) over the chosen completion tokens.
        policy_rejected_logps: (B,) summed log π_θ(y_l|x).
        ref_chosen_logps, ref_rejected_logps: (B,) the same under the reference policy (no grad).
        beta: the KL-penalty temperature β.
        loss_type: a key of `LOSSES`, or several (TRL's list form), summed with `loss_weights` (default 1 each).
        label_smoothing: ε of robust, exo_pair, aot and aot_unpaired.
        chosen_lengths, rejected_lengths: (B,) completion token counts (ipo, sigmoid_norm).
        chosen_token_logps: per-token log π_θ of every chosen completion token (sft).
        f_divergence_type, f_alpha_divergence_coef: f-DPO's divergence (`f_divergence_scores`).
        discopop_tau: τ of discopop.
        pair_weights: (B,) WPO weights multiplying every loss (`hf_dpo.train.logps.wpo_weights`), or None.
        rounding: the log-probs' relative rounding (`logps_rounding` of the forward's dtype): a margin within it
            is a tie in `ranked`.
    """
    names, weights = weighted_losses(loss_type, loss_weights)
    settings = LossSettings(beta, label_smoothing, discopop_tau, f_divergence_type, f_alpha_divergence_coef)
    terms = PairTerms(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
        chosen_token_logps,
    )
    terms.chosen_scores = f_divergence_scores(
        terms.chosen_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    terms.rejected_scores = f_divergence_scores(
        terms.rejected_logratios, f_divergence_type, f_alpha_divergence_coef
    )
    losses = 0.0
    for name, weight in zip(names, weights):
        per_pair = LOSSES[name](terms, settings)  # (B,)
        if pair_weights is not None:
            per_pair = per_pair * pair_weights
        losses = losses + weight * per_pair
    chosen_rewards, rejected_rewards = implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    ranked = ranks_chosen_first(
        *(
            x.detach()
            for x in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
        ),
        beta,
        rounding=rounding,
    )
    return DPOLossOutput(losses, chosen_rewards.detach(), rejected_rewards.detach(), ranked)


def sft_loss(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor) -> torch.Tensor:
    """The SFT term on its own: mean negative log-likelihood over the chosen completion tokens of the batch.
    Shapes: (B, T) per-token log-probs and a (B, T) 0/1 mask."""
    mask = chosen_mask.to(chosen_token_logps.dtype)
    return -(chosen_token_logps * mask).sum() / mask.sum().clamp(min=1)
