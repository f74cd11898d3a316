"""A real tiny run for the evaluation and hub tests: `hf-dpo train` on the 2-layer Llama, 3 steps, then eval.

Built once per test session and copied by tests that modify it.
"""

from __future__ import annotations

import json
from pathlib import Path


def dpo_args(tmp_path, **kw):
    """A DPOConfig for CPU tests: no reporting, no saving, logs every step; `kw` overrides."""
    from hf_dpo.config import DPOConfig

    base = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        report_to="none",
        use_cpu=True,
        beta=0.1,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
    )
    base.update(kw)
    return DPOConfig(**base)


# A secret passed to training as --hub_token: it must land in no file of the run dir.
TRAIN_TOKEN = "hf_trainSECRETtoken0123456789abcdefgh"

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Kenya": "Nairobi",
    "Cuba": "Havana",
    "Greece": "Athens",
    "Poland": "Warsaw",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Austria": "Vienna",
    "Canada": "Ottawa",
}


def write_pairs(directory: Path) -> None:
    items = list(CAPITALS.items())
    for split, part in (("train", items[:12]), ("test", items[12:])):
        with (directory / f"{split}.jsonl").open("w") as f:
            for country, capital in part:
                row = {
                    "prompt": f"What is the capital of {country}?",
                    "chosen": f"{capital}.",
                    "rejected": f"Well, there are many cities in {country}, and it is hard to say which one.",
                }
                f.write(json.dumps(row) + "\n")


def write_adapter(directory: Path, base: str) -> Path:
    """A LoRA adapter's files as peft saves them (adapter_config.json, adapter_model.safetensors), for tests that
    need a run dir that passes the checks of its files but load no model."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": base, "r": 4})
    )
    tensors = {f"base_model.model.layers.{i}.q_proj.lora_A.weight": torch.ones(4, 64) for i in range(2)}
    save_file(tensors, directory / "adapter_model.safetensors")
    return directory


_RUNS: dict[str, Path] = {}


def tiny_run(model_dir: str, tmp_path_factory) -> Path:
    """Train 3 steps (4-bit base, LoRA r=4, eval every 2 steps, checkpoints) and write the eval report.

    Built once per session (both test modules share it); do not modify it, copy it."""
    if model_dir in _RUNS:
        return _RUNS[model_dir]
    from hf_dpo.run import evaluate_run, run_training

    root = tmp_path_factory.mktemp("tiny-run")
    write_pairs(root)
    out = root / "run"
    overrides = {
        "model_name_or_path": model_dir,
        "quantization": "4bit",
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": "[q_proj, v_proj]",
        "dataset_name": str(root),
        "dataset_train_split": "train",
        "dataset_test_split": "test",
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_steps": 2,
        "learning_rate": 0.01,
        "report_to": "[]",
        "max_length": 64,
        "output_dir": str(out),
        "hub_token": TRAIN_TOKEN,
        "judge": "hf_dpo.pairs.demo_task:judge",
        "max_new_tokens": 12,
    }
    run_training(None, [tok for k, v in overrides.items() for tok in (f"--{k}", str(v))])
    evaluate_run(out, num_generations=4)
    _RUNS[model_dir] = out
    return out


def full_finetune_overrides(model_dir: str, data_dir: Path, out: Path, **over) -> list[str]:
    """`hf-dpo train` arguments of a full fine-tune (use_peft: false) of the 2-layer Llama on the capitals pairs:
    3 steps, the report judged on 4 held-out prompts with 12 new tokens at most; `over` sets more keys."""
    values = {
        "model_name_or_path": model_dir,
        "use_peft": "false",
        "dataset_name": str(data_dir),
        "dataset_train_split": "train",
        "dataset_test_split": "test",
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 0.01,
        "report_to": "[]",
        "max_length": 64,
        "save_strategy": "no",
        "output_dir": str(out),
        "judge": "hf_dpo.pairs.demo_task:judge",
        "eval_num_generations": 4,
        "eval_max_new_tokens": 12,
        **over,
    }
    return [tok for k, v in values.items() for tok in (f"--{k}", str(v))]


def tiny_full_run(model_dir: str, tmp_path_factory) -> Path:
    """A full fine-tune (use_peft: false) of the 2-layer Llama, trained and reported by `hf-dpo train`.

    Built once per session; do not modify it, copy it."""
    key = f"full:{model_dir}"
    if key in _RUNS:
        return _RUNS[key]
    from hf_dpo.run import run_training

    root = tmp_path_factory.mktemp("tiny-full-run")
    write_pairs(root)
    out = root / "run"
    run_training(None, full_finetune_overrides(model_dir, root, out))
    _RUNS[key] = out
    return out


def sampling_recipe(tmp_path: Path, **over):
    """A sampling recipe whose model is never loaded (every check it serves comes first); `over` sets keys."""
    from hf_dpo.config import load_recipe

    values = {
        "model_name_or_path": str(tmp_path / "no-model"),
        "quantization": "none",
        "num_samples_per_prompt": 2,
        "max_new_tokens": 4,
        "output_dir": str(tmp_path / "run"),
        **over,
    }
    args = [x for k, v in values.items() for x in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]
    return load_recipe(None, args)


def tiny_classifier(path, tokenizer, num_labels: int) -> str:
    """A one-layer random Llama sequence classifier with `num_labels` outputs and `tokenizer`, saved at `path`
    (a reward model for `rm:` judges)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def recipe_on_data(tmp_path: Path, *overrides: str):
    """The default recipe on the pairs in tmp_path/data, writing to tmp_path/run, no reporting integration, with
    `overrides` (--key value) on top."""
    from hf_dpo.config import load_recipe

    return load_recipe(
        None,
        [
            "--dataset_name",
            str(tmp_path / "data"),
            "--output_dir",
            str(tmp_path / "run"),
            "--report_to",
            "none",
        ]
        + list(overrides),
    )
