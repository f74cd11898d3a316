"""What the fast-path exactness tests share: a few pairs, a trainer on the tiny Llama with a random non-zero LoRA
adapter (or, `full=True`, fully fine-tuned with weights moved off its frozen reference copy), one batch's loss,
per-pair log-probs and trainable gradients, and the comparison of two such results."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM

from hf_dpo.train.trainer import DPOTrainer
from tests.run_fixtures import dpo_args

ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "It is five, I think."},
    {"prompt": "Capital of France? Answer in one word.", "chosen": "Paris.", "rejected": "London, probably."},
    {"prompt": "What is 3 * 3?", "chosen": "9, because three threes are nine.", "rejected": "Nine hundred."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot answer that."},
]
PLAIN = dict(prefix_sharing=False, logps_chunk_size=0)


def args(tmp_path, **kw):
    options = dict(
        per_device_train_batch_size=4, per_device_eval_batch_size=4, precompute_ref_log_probs=False
    )
    return dpo_args(tmp_path, **{**options, **kw})


def lora():
    # A random, non-zero adapter: policy != reference, so gradients and margins are not trivial.
    return LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False
    )


def make_trainer(tmp_path, tiny_model_dir, tokenizer, rows=ROWS, attn="sdpa", full=False, **kw):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn)
    trainer = DPOTrainer(
        model=model,
        args=args(tmp_path, **kw),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=None if full else lora(),
    )
    if full:  # the policy moves off its reference (the frozen copy), so margins and gradients are not trivial
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for param in trainer.model.parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
    return trainer


def loss_and_grads(trainer, rpo=False):
    """One batch of all pairs: loss, per-pair log-probs and the LoRA gradients."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    with torch.no_grad():
        policy = trainer.concatenated_forward(trainer.model, batch)
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), policy, grads


def assert_same(a, b, loss_tol=1e-6, grad_tol=1e-5) -> dict[str, float]:
    """`a` and `b` (from `loss_and_grads`) agree; returns the largest differences measured: loss (absolute),
    per-pair log-probs (absolute) and LoRA gradients (relative to the tensor's largest entry)."""
    (loss_a, pol_a, grads_a), (loss_b, pol_b, grads_b) = a, b
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=loss_tol)
    for side in ("chosen", "rejected", "chosen_lengths", "rejected_lengths"):
        assert torch.allclose(getattr(pol_a, side).double(), getattr(pol_b, side).double(), atol=1e-4), side
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    worst_grad = 0.0
    for name in grads_a:
        scale = grads_b[name].abs().max().clamp(min=1e-3)
        relative = ((grads_a[name] - grads_b[name]).abs().max() / scale).item()
        assert relative < grad_tol, name
        worst_grad = max(worst_grad, relative)
    logps = max((getattr(pol_a, s) - getattr(pol_b, s)).abs().max().item() for s in ("chosen", "rejected"))
    return {"loss": abs(loss_a.item() - loss_b.item()), "logps": logps, "grad_rel": worst_grad}
