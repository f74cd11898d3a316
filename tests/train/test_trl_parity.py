"""Parity with TRL 1.16's DPOTrainer for every loss type, weighted combinations, LD-DPO, WPO and the f-divergences:
the same tiny model, the same non-zero LoRA adapter, the same batch, the same `DPOConfig` keyword arguments. Loss,
reward and log-prob metrics and LoRA gradients of a training step, and `evaluate()`'s loss and metrics, agree within
1e-5 (float32; relative to the value once it is larger than 1), on the default fast paths and with all of them on."""

import copy

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dpo.config import LOSS_TYPES, DataConfig, DPOConfig
from hf_dpo.train.trainer import DPOTrainer

METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
TOL = 1e-5

ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "It is five, I think."},
    {"prompt": "Capital of France?", "chosen": "Paris, on the Seine.", "rejected": "London, probably."},
    {"prompt": "What is 3 * 3?", "chosen": "9", "rejected": "Nine hundred."},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "I cannot answer that question at all."},
]

# One case per TRL loss type, then combinations and the switches that change the log-probs or the scores.
CASES = {name: {"loss_type": [name]} for name in LOSS_TYPES}
CASES["exo_pair"]["label_smoothing"] = 1e-3  # TRL and hf_dpo refuse exo_pair without ε
CASES["robust"]["label_smoothing"] = 0.1
CASES["aot"]["label_smoothing"] = 0.05
CASES |= {
    "mpo_weighted": {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
    "ipo_hinge_weighted": {"loss_type": ["ipo", "hinge"], "loss_weights": [0.3, 2.0], "beta": 0.5},
    "ld_alpha": {"loss_type": ["sigmoid"], "ld_alpha": 0.5},
    "ld_alpha_ipo_sft": {"loss_type": ["ipo", "sft"], "ld_alpha": 0.2, "loss_weights": [1.0, 0.5]},
    "wpo": {"loss_type": ["sigmoid"], "use_weighting": True},
    "wpo_apo_down": {"loss_type": ["apo_down", "sigmoid_norm"], "use_weighting": True},
    "forward_kl": {"loss_type": ["sigmoid"], "f_divergence_type": "forward_kl"},
    "js_divergence": {"loss_type": ["robust"], "f_divergence_type": "js_divergence", "label_smoothing": 0.2},
    "alpha_divergence": {
        "loss_type": ["ipo", "discopop"],
        "f_divergence_type": "alpha_divergence",
        "f_alpha_divergence_coef": 0.3,
        "discopop_tau": 0.2,
    },
    "beta_and_smoothing": {"loss_type": ["aot_unpaired", "exo_pair"], "beta": 0.7, "label_smoothing": 0.3},
}


def lora(init):
    return LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules="all-linear",
        init_lora_weights=init,
        task_type="CAUSAL_LM",
    )


def common_args(tmp_path, name, **case):
    """The keyword arguments both DPOConfigs get: TRL's own names only."""
    return dict(
        output_dir=str(tmp_path / name),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        report_to="none",
        use_cpu=True,
        bf16=False,
        beta=case.pop("beta", 0.1),
        seed=0,
        **case,
    )


def step(trainer):
    """A training step's loss, metrics and LoRA gradients (compute_loss + backward, as Trainer.training_step)."""
    trainer.model.train()
    trainer.model.zero_grad()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), {k: v[-1] for k, v in trainer._metrics["train"].items()}, grads


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def pair(tmp_path, tiny, name, case, **ours_extra):
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer as TRLTrainer

    base, tokenizer = tiny
    data = Dataset.from_list(ROWS)
    torch.manual_seed(1)
    trl = TRLTrainer(
        model=copy.deepcopy(base),
        args=TRLConfig(**common_args(tmp_path, "trl", **dict(case))),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        peft_config=lora(False),
    )
    ours = DPOTrainer(
        model=copy.deepcopy(base),
        args=DPOConfig(
            **common_args(tmp_path, "ours", **dict(case)), ref_logps_cache_dir="none", **ours_extra
        ),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
        peft_config=lora(True),
        data_config=DataConfig(apply_chat_template=False),  # TRL keeps plain strings as they are
    )
    ours.model.load_state_dict(trl.model.state_dict())  # the very same adapter weights
    return trl, ours


def difference(ours: float, trl: float) -> float:
    """|ours − trl|, relative once |trl| > 1: float32 keeps ~7 significant digits, so a loss of 50 (sppo_hard at
    β = 0.1) or a summed log-prob of −100 can only agree to ~1e-5 of its size."""
    return abs(ours - trl) / max(1.0, abs(trl))


def compare(trl, ours) -> dict[str, float]:
    """Largest difference of a training step's loss, reward metrics, log-prob metrics and LoRA gradients, and of
    evaluate()'s loss and metrics."""
    trl_loss, trl_metrics, trl_grads = step(trl)
    our_loss, our_metrics, our_grads = step(ours)
    assert trl_metrics["rewards/margins"] != 0.0  # a non-zero adapter: the comparison is not trivial
    assert set(our_grads) == set(trl_grads)
    trl_eval, our_eval = trl.evaluate(), ours.evaluate()
    rewards = [k for k in METRICS if k.startswith("rewards/")]
    logps = [k for k in METRICS if k.startswith("logps/")]
    return {
        "step loss": difference(our_loss, trl_loss),
        "step rewards": max(difference(our_metrics[k], trl_metrics[k]) for k in rewards),
        "step logps": max(difference(our_metrics[k], trl_metrics[k]) for k in logps),
        "step grads": max((our_grads[n] - trl_grads[n]).abs().max().item() for n in trl_grads),
        "eval loss+rewards": max(
            difference(our_eval[f"eval_{k}"], trl_eval[f"eval_{k}"]) for k in ["loss", *rewards]
        ),
        "eval logps": max(difference(our_eval[f"eval_{k}"], trl_eval[f"eval_{k}"]) for k in logps),
    }


def report(name: str, worst: dict[str, float]) -> None:
    print(f"\nparity {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) <= TOL, worst


@pytest.mark.parametrize("name", list(CASES))
def test_matches_trl(tmp_path, tiny, name):
    report(name, compare(*pair(tmp_path, tiny, name, CASES[name])))


@pytest.mark.parametrize("name", ["sigmoid", "ipo", "ld_alpha", "mpo_weighted", "aot"])
def test_matches_trl_on_the_fast_paths(tmp_path, tiny, name):
    """Prefix sharing, chunked log-probs and the precomputed reference change no result for these losses."""
    fast = {"prefix_sharing": True, "logps_chunk_size": 16, "precompute_ref_log_probs": True}
    report(f"{name} (fast paths)", compare(*pair(tmp_path, tiny, name, CASES[name], **fast)))


def test_matches_trl_on_a_mixture_of_experts(tmp_path, tiny_model_dir):
    """A tiny Mixtral: the router's load-balancing loss (router_aux_loss_coef from its config) is added as in TRL,
    and logged as aux_loss."""
    from transformers import MixtralConfig, MixtralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_aux_loss_coef=0.02,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    trl, ours = pair(tmp_path, (MixtralForCausalLM(config), tokenizer), "moe", {"loss_type": ["sigmoid"]})
    assert ours._router_aux_coef == trl.router_aux_loss_coef == 0.02 and not ours._prefix_sharing
    worst = compare(trl, ours)
    assert ours.state.log_history[-1]["eval_aux_loss"] == pytest.approx(
        trl.state.log_history[-1]["eval_aux_loss"], abs=TOL
    )
    report("mixture of experts (router aux loss)", worst)


def test_evaluate_on_a_dataset_passed_to_it_matches_trl(tmp_path, tiny):
    """evaluate(eval_dataset=<raw rows>) tokenizes them as the trainer's own data, as TRL does."""
    trl, ours = pair(tmp_path, tiny, "ipo_sft", {"loss_type": ["ipo", "sft"], "loss_weights": [1.0, 0.5]})
    held_out = Dataset.from_list(
        [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in ROWS]
    )
    trl_eval, our_eval = trl.evaluate(eval_dataset=held_out), ours.evaluate(eval_dataset=held_out)
    for key in ("eval_loss", *(f"eval_{k}" for k in METRICS)):
        assert difference(our_eval[key], trl_eval[key]) <= TOL, key
