"""hf_dpo.train.label_logps: next-token log-probs from logits, and the chunked LM head (values and gradients)."""

import math

import pytest
import torch

from hf_dpo.train.label_logps import token_logps


def test_token_logps_mask_prompt_and_padding():
    """Vocabulary of 3, uniform logits except one position: labels [−100, 1, 2, −100] (prompt, 2 completion
    tokens, pad). Token 1 is predicted at position 0 with logits [0, ln 3, 0] → p = 3/5; token 2 at
    position 1 with uniform logits → p = 1/3. Sum = log(3/5) + log(1/3)."""
    logits = torch.zeros(1, 4, 3, dtype=torch.float64)
    logits[0, 0, 1] = math.log(3)
    labels = torch.tensor([[-100, 1, 2, -100]])
    per_token, mask = token_logps(logits, labels)
    logps, n = per_token.sum(-1), mask.sum(-1)
    assert n.item() == 2
    assert logps.item() == pytest.approx(math.log(3 / 5) + math.log(1 / 3), abs=1e-12)
    # Garbage logits on masked positions change nothing.
    logits[0, 2:, :] = torch.randn(2, 3, dtype=torch.float64) * 100
    assert token_logps(logits, labels)[0].sum().item() == pytest.approx(logps.item(), abs=1e-12)


def test_token_logps_matches_log_softmax_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[:, :2] = -100
    per_token, mask = token_logps(logits, labels)
    ref = (
        torch.log_softmax(logits[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    )
    assert torch.allclose(per_token, ref * mask, atol=1e-6)


class LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward): the peak-memory driver here."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = torch.utils._pytree.tree_flatten
        inputs = {
            x.untyped_storage().data_ptr() for x in flat((args, kwargs))[0] if isinstance(x, torch.Tensor)
        }
        for value in flat(out)[0]:
            # Views (transposes, slices) share an input's storage: no new memory.
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, value.numel())
        return out


def _head_case(bias: bool, trainable: bool, n=37, hidden=16, vocab=101):
    from hf_dpo.train.label_logps import chunked_label_logps  # noqa: F401 - imported where used

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=bias)
    head.requires_grad_(trainable)
    h = torch.randn(n, hidden, requires_grad=True)
    labels = torch.randint(0, vocab, (n,))
    weights = torch.randn(n)  # an arbitrary upstream gradient per token
    return head, h, labels, weights


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("trainable", [False, True])
def test_chunked_label_logps_equal_full_logits_values_and_gradients(bias, trainable):
    """Frozen head: closed-form gradient W[y] − p·W; trainable head: checkpointed chunks. Both equal full logits."""
    from hf_dpo.train.label_logps import chunked_label_logps, selective_log_softmax

    head, h, labels, weights = _head_case(bias, trainable)
    full = selective_log_softmax(head(h), labels)
    (full * weights).sum().backward()
    grads_full = [h.grad.clone()] + [p.grad.clone() for p in head.parameters() if p.requires_grad]
    h.grad = None
    for p in head.parameters():
        p.grad = None
    chunked = chunked_label_logps(h, head, labels, chunk_size=8)
    (chunked * weights).sum().backward()
    grads_chunked = [h.grad] + [p.grad for p in head.parameters() if p.requires_grad]
    assert torch.allclose(chunked, full, atol=1e-6)
    assert len(grads_chunked) == len(grads_full) == 1 + trainable * (1 + bias)
    for a, b in zip(grads_chunked, grads_full):
        assert torch.allclose(a, b, atol=1e-6)


def test_chunked_label_logps_never_builds_a_tokens_by_vocab_tensor():
    """The largest tensor of forward + backward is one chunk's logits (8 × V), not all tokens' (N × V)."""
    from hf_dpo.train.label_logps import chunked_label_logps, selective_log_softmax

    head, h, labels, weights = _head_case(bias=False, trainable=False, n=64, vocab=1000)
    with LargestTensor() as full:
        (selective_log_softmax(head(h), labels) * weights).sum().backward()
    with LargestTensor() as chunked:
        (chunked_label_logps(h, head, labels, chunk_size=8) * weights).sum().backward()
    assert full.largest >= 64 * 1000
    assert chunked.largest <= 8 * 1000  # one chunk × vocab
    assert chunked.largest < full.largest / 4


def test_chunked_label_logps_without_grad_keeps_nothing():
    from hf_dpo.train.label_logps import chunked_label_logps

    head, h, labels, _ = _head_case(bias=False, trainable=False)
    with torch.no_grad():
        out = chunked_label_logps(h, head, labels, chunk_size=5)
    assert out.shape == (37,) and out.grad_fn is None and torch.all(out <= 0)


@pytest.mark.parametrize("with_grad", [False, True])
def test_the_chunked_head_logs_the_statistics_of_the_full_logits(with_grad):
    """TRL's logged quantities (mean logit, entropy, top-1 hit) of each label, from the chunked frozen head (which
    takes them from the logsumexp and softmax it computes anyway), equal those of the full logits; the log-probs
    and their gradient are the same with and without statistics."""
    from hf_dpo.train.label_logps import chunked_label_logps, logit_stats

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 13, bias=False).requires_grad_(False)
    hidden = torch.randn(9, 6, requires_grad=with_grad)
    labels = torch.randint(0, 13, (9,))
    labels[0] = head(hidden[0]).argmax()  # at least one top-1 hit
    stats = {}
    with torch.set_grad_enabled(with_grad):
        logps = chunked_label_logps(hidden, head, labels, chunk_size=4, stats=stats)
        plain = chunked_label_logps(hidden, head, labels, chunk_size=4)
    expected = logit_stats(head(hidden).detach(), labels)
    for key in ("mean_logits", "entropy", "top1"):
        assert torch.allclose(torch.cat(stats[key]).float(), expected[key].float(), atol=1e-6), key
    assert torch.cat(stats["top1"]).any()
    assert torch.equal(logps, plain)
    if with_grad:
        (grad,) = torch.autograd.grad(logps.sum(), hidden)
        (grad_plain,) = torch.autograd.grad(plain.sum(), hidden)
        assert torch.allclose(grad, grad_plain, atol=1e-6)
