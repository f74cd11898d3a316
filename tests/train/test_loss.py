"""hf_dpo.train.loss: each loss on hand-picked log-probs, arithmetic in the docstrings."""

import math

import pytest
import torch

from hf_dpo.train.loss import LOSSES, dpo_loss, sft_loss


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_sigmoid_loss_hand_computed():
    """policy chosen −1, rejected −3; reference chosen −2, rejected −2 → h = (−1+2) − (−3+2) = 2.
    β = 0.5 → loss = −log σ(1) = log(1 + e^−1) = 0.31326; rewards 0.5·1 = 0.5 and 0.5·(−1) = −0.5."""
    out = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)


def test_zero_margin_gives_log2():
    """Policy == reference → h = 0 → −log σ(0) = log 2, for every pair."""
    out = dpo_loss(t(-5.0, -1.0), t(-7.0, -2.0), t(-5.0, -1.0), t(-7.0, -2.0), beta=0.1)
    assert torch.allclose(out.losses, torch.full((2,), math.log(2), dtype=torch.float64))


def test_sigmoid_ignores_label_smoothing_as_trl():
    """TRL 1.16's sigmoid loss is −log σ(β·h) whatever ε; label_smoothing belongs to robust, exo_pair and aot."""
    plain = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    smoothed = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, label_smoothing=0.1)
    assert smoothed.losses.item() == pytest.approx(plain.losses.item(), abs=1e-12)


def test_robust_dpo():
    """rDPO, ε = 0.1, β·h = 1: (0.9·0.31326 − 0.1·1.31326) / 0.8 = 0.18827."""
    out = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, loss_type="robust", label_smoothing=0.1)
    expected = (0.9 * math.log1p(math.e**-1) - 0.1 * math.log1p(math.e)) / 0.8
    assert out.losses.item() == pytest.approx(expected, abs=1e-12)


def test_hinge_loss():
    """β·h = 1 → max(0, 1 − 1) = 0; β·h = 0.25 (h = 0.5) → 0.75."""
    out = dpo_loss(t(-1.0, -1.0), t(-3.0, -1.5), t(-2.0, -1.0), t(-2.0, -1.0), beta=0.5, loss_type="hinge")
    assert out.losses.tolist() == pytest.approx([0.0, 0.75])


def test_ipo_length_normalised():
    """Chosen log-ratio 2 over 4 tokens = 0.5/token, rejected −2 over 2 tokens = −1/token → h̄ = 1.5.
    β = 0.25 → 1/(2β) = 2 → (1.5 − 2)² = 0.25."""
    out = dpo_loss(
        t(0.0),
        t(-4.0),
        t(-2.0),
        t(-2.0),
        beta=0.25,
        loss_type="ipo",
        chosen_lengths=t(4.0),
        rejected_lengths=t(2.0),
    )
    assert out.losses.item() == pytest.approx(0.25)


def test_ipo_needs_lengths_and_unknown_type_is_named():
    with pytest.raises(ValueError, match="chosen_lengths"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="Unknown loss_type 'kto'.*sigmoid"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.1, loss_type="kto")


def test_loss_table_matches_config_choices():
    from hf_dpo.config import LOSS_TYPES

    assert set(LOSS_TYPES) == set(LOSSES)


def test_sft_term_is_mean_nll_over_chosen_tokens():
    """Token log-probs [−1, −3 | −2, pad]: mean NLL over the 3 real tokens = (1 + 3 + 2) / 3 = 2."""
    logps = t(-1.0, -3.0, -2.0, -50.0).view(2, 2)
    mask = torch.tensor([[1, 1], [1, 0]])
    assert sft_loss(logps, mask).item() == pytest.approx(2.0)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-4.0], requires_grad=True)
    rejected = torch.tensor([-4.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-4.0]), torch.tensor([-4.0]), beta=0.1).losses.sum().backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


# ---------------------------------------------------------------- chunked log-probs through the LM head


def test_loss_weights_sum_the_terms():
    """sigmoid (β·h = 1: 0.31326) + 0.5 × hinge (max(0, 1 − 1) = 0) + 2 × sppo_hard: ρ_w = 1, ρ_l = −1, β = 0.5 →
    (1 − 1)² + (−1 + 1)² = 0 → 0.31326 in all."""
    out = dpo_loss(
        t(-1.0),
        t(-3.0),
        t(-2.0),
        t(-2.0),
        beta=0.5,
        loss_type=["sigmoid", "hinge", "sppo_hard"],
        loss_weights=[1.0, 0.5, 2.0],
    )
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-12)


def test_apo_zero_and_bco_pair_hand_computed():
    """ρ_w = 1, ρ_l = −1, β = 0.5: apo_zero = 1 − σ(0.5) + σ(−0.5) = 2·σ(−0.5) = 0.75508;
    bco_pair = −log σ(0.5) − log σ(0.5) = 2·0.47408 = 0.94815."""
    args = (t(-1.0), t(-3.0), t(-2.0), t(-2.0))
    sig = 1 / (1 + math.exp(0.5))
    assert dpo_loss(*args, beta=0.5, loss_type="apo_zero").losses.item() == pytest.approx(2 * sig, abs=1e-12)
    assert dpo_loss(*args, beta=0.5, loss_type="bco_pair").losses.item() == pytest.approx(
        2 * math.log1p(math.exp(-0.5)), abs=1e-12
    )


def test_forward_kl_scores():
    """forward KL: s = 1 − e^−ρ; ρ_w = 1, ρ_l = −1 → Δ = (1 − e^−1) − (1 − e) = e − e^−1 = 2.3504; β = 0.5 →
    −log σ(1.1752) = 0.26791."""
    out = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5, f_divergence_type="forward_kl")
    delta = math.e - math.exp(-1)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-0.5 * delta)), abs=1e-12)
