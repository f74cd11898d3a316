"""Two processes (gloo DDP on CPU, through `accelerate launch` and recipes/accelerate/ddp.yaml, exactly as
`make train GPUS=2` runs it) train the tiny model through the real `hf-dpo train` pipeline, compared with one
process on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).parents[1] / "distributed_worker.py"
ACCELERATE_CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
STEPS, PAIRS = 3, 12  # 12 pairs: 3 global batches of 4 = 2 ranks x 2 pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # two processes on a small CPU: one thread each
        HF_DPO_CACHE=str(Path.home() / ".cache" / "hf_dpo"),
        HF_HOME=str(tmp_path / "hf_home"),
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model_dir) -> Path:
    from tests.run_fixtures import CAPITALS

    root = tmp_path_factory.mktemp("dist")
    with (root / "pairs.jsonl").open("w") as f:
        for country, capital in list(CAPITALS.items())[:PAIRS]:
            row = {
                "prompt": f"What is the capital of {country}?",
                "chosen": f"The capital of {country} is {capital}.",
                "rejected": f"I am not sure, maybe it is a city somewhere in {country}, hard to say.",
            }
            f.write(json.dumps(row) + "\n")
    values = {
        "model_name_or_path": tiny_model_dir,
        "quantization": "4bit",
        "lora_r": 8,
        "lora_dropout": 0.0,  # dropout would draw different masks in one and two processes
        "dataset_name": str(root / "pairs.jsonl"),
        "dataset_test_split": None,
        "max_length": 64,
        "max_prompt_length": 32,
        "precompute_ref_log_probs": True,
        "ref_logps_cache_dir": "none",  # no on-disk cache: each run must compute the reference itself
        "train_sampling_strategy": "sequential",  # global batch k = pairs 4k..4k+3 in both layouts
        "per_device_eval_batch_size": 2,
        "precompute_ref_batch_size": 2,  # the pass's batches, counted below (unset: one batch of every pair)
        "learning_rate": 1.0e-3,
        "max_steps": STEPS,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _run(cmd: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(recipe, tmp_path_factory) -> dict[str, object]:
    """rank reports of a 2-process run (2 pairs per rank) and a 1-process run (4 pairs), same global batches."""
    tmp = tmp_path_factory.mktemp("runs")
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    two, one = tmp / "two", tmp / "one"
    _run(
        [
            accelerate,
            "launch",
            "--config_file",
            str(ROOT / "recipes/accelerate/ddp.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",
            str(_free_port()),
            str(WORKER),
            str(two / "report"),
            str(recipe),
            "--output_dir",
            str(two / "run"),
            "--per_device_train_batch_size",
            "2",
        ],
        tmp,
    )
    _run(
        [
            sys.executable,
            str(WORKER),
            str(one / "report"),
            str(recipe),
            "--output_dir",
            str(one / "run"),
            "--per_device_train_batch_size",
            "4",
            "--per_device_eval_batch_size",
            "4",
            "--precompute_ref_batch_size",
            "4",
        ],
        tmp,
    )
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    return {
        "ranks": [load(two / "report" / f"rank{r}.json") for r in (0, 1)],
        "single": load(one / "report" / "rank0.json"),
        "two_dir": two / "run",
        "one_dir": one / "run",
    }


@pytest.mark.slow
def test_two_gloo_processes_see_world_size_two(runs):
    r0, r1 = runs["ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    assert runs["single"]["world_size"] == 1
    assert r0["rc"] == r1["rc"] == 0


@pytest.mark.slow
def test_ranks_agree_on_the_loss_and_the_weights(runs):
    r0, r1 = runs["ranks"]
    assert len(r0["local_losses"]) == len(r1["local_losses"]) == STEPS
    assert r0["local_losses"][1:] != r1["local_losses"][1:], "each rank must see its own shard"
    assert r0["logged_losses"] == r1["logged_losses"] and len(r0["logged_losses"]) == STEPS
    # DDP all-reduces gradients, so both replicas hold the same adapter after every step
    assert r0["lora"] == r1["lora"]


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(runs):
    """Tolerance 1e-6 on per-step losses and on LoRA weights after 3 Adam steps (float32; only the order of the
    gradient all-reduce differs). Measured here: losses identical, weights within 1.3e-8."""
    (r0, r1), single = runs["ranks"], runs["single"]
    for step in range(STEPS):
        mean_of_ranks = (r0["local_losses"][step] + r1["local_losses"][step]) / 2
        assert mean_of_ranks == pytest.approx(single["local_losses"][step], abs=1e-6)
        assert r0["logged_losses"][step] == pytest.approx(single["logged_losses"][step], abs=1e-6)
    assert single["local_losses"][-1] < single["local_losses"][0], "training must move the loss"
    for name, values in single["lora"].items():
        assert r0["lora"][name] == pytest.approx(values, abs=1e-6), name


@pytest.mark.slow
def test_reference_logps_computed_once_per_shard(runs):
    (r0, r1), single = runs["ranks"], runs["single"]
    # one pass over the data in total: each rank runs the reference over its half only (batches of 2)
    assert single["reference_forward_passes"] == PAIRS // 4
    assert r0["reference_forward_passes"] == r1["reference_forward_passes"] == PAIRS // 2 // 2
    # ... and every rank ends up with every pair's reference log-probs, equal to the single process's
    assert r0["ref_chosen_logps"] == r1["ref_chosen_logps"]
    assert r0["ref_chosen_logps"] == pytest.approx(single["ref_chosen_logps"], abs=1e-5)


@pytest.mark.slow
def test_only_rank_zero_writes_the_run_dir(runs):
    r0, r1 = runs["ranks"]
    assert r1["writes"] == [], f"rank 1 wrote {r1['writes']}"
    assert {"recipe.yaml", "run_info.json", "adapter_config.json"} <= set(r0["writes"])
    assert (runs["two_dir"] / "adapter_model.safetensors").is_file()
    assert json.loads((runs["two_dir"] / "run_info.json").read_text())["global_steps"] == STEPS


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.stem)
def test_accelerate_configs_load_and_explain_themselves(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    text = path.read_text()
    assert text.startswith("#") and "make train" in text.split("\n\n")[0] + text[:1500]
    assert "use it" in text.lower(), "each config says when to use it"
    if config.distributed_type.value == "FSDP":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_cpu_ram_efficient_loading"] and fsdp["fsdp_sync_module_states"]
        assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert "bnb_4bit_quant_storage" in text
    if config.distributed_type.value == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] in (2, 3)
