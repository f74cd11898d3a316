"""A TRL 1.x DPO script runs on hf_dpo by changing its import line (README, "Migrating a TRL 1.x DPO script"): the
same DPOConfig defaults, the same reading of the rows when no hf_dpo `data_config` is given, and the metrics TRL
logs under TRL's names. The objective itself is compared in test_trl_parity.py."""

import copy
import logging

import pytest
import torch
from datasets import Dataset

from hf_dpo.config import DPOConfig
from hf_dpo.train.trainer import DPOTrainer
from tests.train.test_trl_parity import METRICS, ROWS, common_args, difference, lora, step

# Every per-step metric TRL 1.16's DPOTrainer logs (no MoE router): the rewards and log-probs the parity tests
# compare, then TRL's logits, entropy, token accuracy and token count.
TRL_LOGGED = METRICS + ("logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy", "num_tokens")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_dpoconfig_defaults_are_trls(tmp_path):
    """A TRL script that leaves learning_rate / logging_steps unset trains at TRL's 1e-6 and logs every 10 steps
    (was transformers' 5e-5 and 500: a 50x larger step, silently)."""
    from trl import DPOConfig as TRLConfig

    ours = DPOConfig(output_dir=str(tmp_path / "ours"), use_cpu=True)
    trl = TRLConfig(output_dir=str(tmp_path / "trl"), use_cpu=True)
    for key in ("learning_rate", "logging_steps", "beta", "max_length", "loss_type", "disable_dropout"):
        assert getattr(ours, key) == getattr(trl, key), key


# The default fast paths (prefix sharing, chunked log-probs), the plain one, and padding-free packing.
PATHS = {
    "default": {},
    "plain": {"prefix_sharing": False, "logps_chunk_size": 0},
    "padding_free": {"padding_free": True},
}


@pytest.mark.parametrize("path", PATHS)
def test_a_trl_script_logs_trls_metrics_on_trls_tokens(tmp_path, tiny, path):
    """No data_config (a TRL script): plain-string prompts are tokenized as TRL tokenizes them (no chat template;
    they were templated, so logps/* differed from TRL's), and every metric TRL logs is logged under its name with
    TRL's value (logits/*, entropy, mean_token_accuracy and num_tokens were missing)."""
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer as TRLTrainer

    base, tokenizer = tiny
    data = Dataset.from_list(ROWS)
    trl = TRLTrainer(
        model=copy.deepcopy(base),
        args=TRLConfig(**common_args(tmp_path, "trl")),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora(False),
    )
    ours = DPOTrainer(
        model=copy.deepcopy(base),
        args=DPOConfig(**common_args(tmp_path, "ours"), ref_logps_cache_dir="none", **PATHS[path]),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora(True),
    )
    ours.model.load_state_dict(trl.model.state_dict())  # the very same (non-zero) adapter
    trl_loss, trl_metrics, _ = step(trl)
    our_loss, our_metrics, _ = step(ours)
    assert set(TRL_LOGGED) <= set(trl_metrics)
    missing = [key for key in TRL_LOGGED if key not in our_metrics]
    assert not missing, f"TRL logs {missing}, hf_dpo does not"
    assert difference(our_loss, trl_loss) < 1e-5
    for key in TRL_LOGGED:
        assert difference(our_metrics[key], trl_metrics[key]) < 1e-4, (key, our_metrics[key])


def test_the_logged_metrics_reach_the_log_history(tmp_path, tiny):
    """trainer.train() logs TRL's keys (what a callback or a dashboard reads), train and eval alike."""
    base, tokenizer = tiny
    args = DPOConfig(
        **common_args(tmp_path, "ours"),
        max_steps=1,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="no",
        ref_logps_cache_dir="none",
    )
    trainer = DPOTrainer(
        model=copy.deepcopy(base),
        args=args,
        train_dataset=Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(True),
    )
    trainer.train()
    train_log = next(log for log in trainer.state.log_history if "loss" in log)
    eval_log = next(log for log in trainer.state.log_history if "eval_loss" in log)
    assert set(TRL_LOGGED) <= set(train_log)
    assert {f"eval_{key}" for key in TRL_LOGGED} <= set(eval_log)
    assert abs(train_log["loss"] - torch.log(torch.tensor(2.0)).item()) < 1e-4  # LoRA starts at zero


def test_quantization_config_is_a_trainer_argument_as_in_trl(tmp_path, tiny, tiny_model_dir, monkeypatch):
    """TRL 1.16's DPOTrainer takes `quantization_config=` and loads a model given by name with it (QLoRA from a
    model id); hf_dpo handed it on to transformers.Trainer, which raised TypeError. Like TRL: both it and
    model_init_kwargs' quantization_config is an error, and so is it with a model already loaded."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    real = AutoModelForCausalLM.from_pretrained
    seen = {}

    def from_pretrained(name, **kwargs):  # 4-bit needs a GPU: record the argument, load unquantized
        seen.update(kwargs)
        kwargs.pop("quantization_config", None)
        return real(name, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    base, tokenizer = tiny
    kwargs = dict(train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer, peft_config=lora(True))
    DPOTrainer(
        model=tiny_model_dir, args=DPOConfig(**common_args(tmp_path, "q")), quantization_config=bnb, **kwargs
    )
    assert seen["quantization_config"] is bnb
    both = DPOConfig(**common_args(tmp_path, "both"), model_init_kwargs={"quantization_config": bnb})
    with pytest.raises(ValueError, match="both"):
        DPOTrainer(model=tiny_model_dir, args=both, quantization_config=bnb, **kwargs)
    with pytest.raises(ValueError, match="already loaded"):
        DPOTrainer(
            model=copy.deepcopy(base),
            args=DPOConfig(**common_args(tmp_path, "loaded")),
            quantization_config=bnb,
            **kwargs,
        )


def test_predict_takes_a_raw_dataset_like_evaluate(tmp_path, tiny):
    """trainer.predict(raw rows) failed inside the collator with a bare KeyError: 'prompt_input_ids'; it now
    tokenizes and gets its reference columns as evaluate(eval_dataset=raw) does: the same loss, and the DPO
    metrics come back in its metrics (they were left over and mixed into the next evaluation's log)."""
    base, tokenizer = tiny
    trainer = DPOTrainer(
        model=copy.deepcopy(base),
        args=DPOConfig(
            **common_args(tmp_path, "ours"), precompute_ref_log_probs=True, ref_logps_cache_dir="none"
        ),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
        peft_config=lora(True),
    )
    raw = Dataset.from_list(ROWS[:3])
    evaluated = trainer.evaluate(eval_dataset=raw)
    predicted = trainer.predict(raw)
    assert abs(predicted.metrics["test_loss"] - evaluated["eval_loss"]) < 1e-6
    assert abs(predicted.metrics["test_rewards/margins"] - evaluated["eval_rewards/margins"]) < 1e-6
    assert not any(trainer._metrics["eval"].values())


def test_dataset_num_proc_is_warned_about_not_silently_ignored(tmp_path, tiny, caplog):
    """A TRL script's dataset_num_proc=4 changed nothing, silently (hf_dpo tokenizes in one process): a warning at
    trainer start says it has no effect and why; unset or 1, nothing is said."""
    base, tokenizer = tiny
    for num_proc, warned in ((4, True), (1, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hf_dpo"):
            DPOTrainer(
                model=copy.deepcopy(base),
                args=DPOConfig(**common_args(tmp_path, f"np{num_proc}"), dataset_num_proc=num_proc),
                train_dataset=Dataset.from_list(ROWS),
                processing_class=tokenizer,
                peft_config=lora(True),
            )
        said = [r.getMessage() for r in caplog.records if "dataset_num_proc" in r.getMessage()]
        assert bool(said) == warned, said
        if warned:
            assert "no effect" in said[0] and "one process" in said[0]


def test_plain_training_arguments_are_converted_to_dpoconfig(tmp_path):
    """A script that passes transformers' TrainingArguments (or TRL's DPOConfig) gets hf_dpo's DPOConfig with its
    own values kept and every DPO key at its default, as TRL's DPOTrainer converts a TrainingArguments."""
    from transformers import TrainingArguments
    from trl import DPOConfig as TRLConfig

    from hf_dpo.train.setup import TrainerSetupError, as_dpo_config

    plain = TrainingArguments(output_dir=str(tmp_path / "a"), learning_rate=1e-4, use_cpu=True, report_to=[])
    args = as_dpo_config(plain)
    assert isinstance(args, DPOConfig) and args.learning_rate == 1e-4 and args.output_dir == plain.output_dir
    defaults = DPOConfig(output_dir=str(tmp_path / "b"), use_cpu=True)
    for key in ("beta", "logps_chunk_size", "precompute_ref_log_probs", "ref_logps_cache_dir", "max_length"):
        assert getattr(args, key) == getattr(defaults, key), key
    trl = as_dpo_config(TRLConfig(output_dir=str(tmp_path / "c"), use_cpu=True, beta=0.3, report_to=[]))
    assert isinstance(trl, DPOConfig) and trl.beta == 0.3
    assert as_dpo_config(defaults) is defaults
    with pytest.raises(TrainerSetupError, match="pass hf_dpo.config.DPOConfig"):
        as_dpo_config({"learning_rate": 1e-4})
